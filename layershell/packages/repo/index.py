"""What a client reads of an <arch> directory: index.json (parsed, checked, rendered)
and `<name>_latest`."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from layershell import names
from layershell.errors import ConfigError, LayershellError, Problem
from layershell.packages.repo.layout import (
    ARCH_RE,
    NAME_RE,
    SHA256_RE,
    VERSION_RE,
    split_artifact_name,
)
from layershell.packages.repo.versions import version_key

MAX_INDEX = 16 << 20
INDEX_FORMAT = 1
# Stable first: the order in which a version reaches streams is testing -> next -> stable.
STREAMS = names.STREAMS
LATEST = "latest"
INDEX_HINT = "rebuild it with `core repo index DIR` on the repository's <arch> directory"


# --- the index ------------------------------------------------------------------------------


@dataclass(frozen=True)
class IndexEntry:
    version: str
    file: str  # a plain file name in the arch directory: <name>_<version>.tar.gz
    sha256: str  # lower-case hex
    size: int
    streams: tuple[str, ...]  # in STREAMS order; empty: only reachable by pinning

    def on(self, stream: str) -> bool:
        return stream in self.streams


@dataclass(frozen=True)
class Index:
    arch: str
    packages: Mapping[str, tuple[IndexEntry, ...]]  # entries newest first
    format: int = INDEX_FORMAT
    # name -> the version its <name>_latest file names, recorded when the index was
    # built, so a client with the index never fetches the file (one request per check).
    latest: Mapping[str, str] = field(default_factory=dict)
    # Which publication this is and until when it may be used (docs/repository.md,
    # "Signatures"): covered by the signature through SHA256SUMS. None in an index from
    # before them, which only a repository with `verify: checksum` may serve.
    generation: int | None = None
    expires: str | None = None  # RFC 3339, UTC: 2026-12-31T00:00:00Z

    def entries(self, name: str) -> tuple[IndexEntry, ...]:
        return self.packages.get(name, ())

    def entry(self, name: str, version: str) -> IndexEntry | None:
        for e in self.entries(name):
            if e.version == version:
                return e
        return None


def _canonical_streams(streams: Iterable[str]) -> tuple[str, ...]:
    wanted = set(streams)
    return tuple(s for s in STREAMS if s in wanted)


def _sorted_entries(entries: Iterable[IndexEntry]) -> tuple[IndexEntry, ...]:
    return tuple(sorted(entries, key=lambda e: version_key(e.version), reverse=True))


def parse_index(data: bytes, source: str) -> Index:
    """Parse and check an index; every problem at once, as a ConfigError naming `source`.

    Keys this format does not know are ignored, so later versions can add some.
    """
    problems: list[Problem] = []

    def problem(key: str, message: str, hint: str = INDEX_HINT) -> None:
        problems.append(Problem(source, 0, 0, key, message, hint))

    def fail() -> ConfigError:
        return ConfigError(problems)

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        problem("", f"not UTF-8 text ({exc.reason} at byte {exc.start})")
        raise fail() from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        problems.append(
            Problem(source, exc.lineno, exc.colno, "", f"not valid JSON: {exc.msg}", INDEX_HINT)
        )
        raise fail() from None
    except RecursionError:  # "[[[[..." deeper than the parser's stack: no index is
        problem("", "nested too deeply to be an index")
        raise fail() from None
    if not isinstance(doc, dict):
        problem("", 'must be a JSON object with "format", "arch" and "packages"')
        raise fail()
    fmt = doc.get("format")
    if type(fmt) is not int:
        problem("format", f"must be the number {INDEX_FORMAT}, not {fmt!r}")
        raise fail()
    if fmt != INDEX_FORMAT:
        hint = "update layershell" if fmt > INDEX_FORMAT else INDEX_HINT
        problem("format", f"this layershell reads index format {INDEX_FORMAT}, not {fmt}", hint)
        raise fail()
    arch = doc.get("arch")
    if not isinstance(arch, str) or not ARCH_RE.match(arch):
        problem("arch", f"must be an architecture as `uname -m` prints it, not {arch!r}")
    packages = doc.get("packages")
    if not isinstance(packages, dict):
        problem("packages", "must be an object mapping package names to lists of versions")
        raise fail()
    parsed = _parse_packages(packages, problem)
    latest = doc.get("latest", {})
    if not isinstance(latest, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and VERSION_RE.match(v) for k, v in latest.items()
    ):
        problem("latest", "must map package names to versions")
        latest = {}
    generation = doc.get("generation")
    if generation is not None and (type(generation) is not int or not 0 < generation < 1 << 63):
        problem("generation", f"must be a whole number from 1, not {generation!r}")
        generation = None
    expires = doc.get("expires")
    if expires is not None and (not isinstance(expires, str) or expiry_time(expires) is None):
        problem("expires", f"must be a UTC time like 2026-12-31T00:00:00Z, not {expires!r}")
        expires = None
    if problems:
        raise fail()
    assert isinstance(arch, str)
    return Index(
        arch=arch, packages=parsed, latest=dict(latest), generation=generation, expires=expires
    )


EXPIRES_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def expiry_time(text: str) -> float | None:
    """Seconds since the epoch of an index's `expires` (UTC, whole seconds), or None."""
    import calendar
    import time

    try:
        return float(calendar.timegm(time.strptime(text, EXPIRES_FORMAT)))
    except (ValueError, OverflowError):
        return None


def expiry_text(when: float) -> str:
    import time

    return time.strftime(EXPIRES_FORMAT, time.gmtime(when))


def _parse_packages(
    packages: dict[Any, Any], problem: Callable[[str, str], None]
) -> dict[str, tuple[IndexEntry, ...]]:
    """An index's "packages": the entries of each name, newest first, without those that
    have problems (reported through `problem`)."""
    parsed: dict[str, tuple[IndexEntry, ...]] = {}
    for name, entries in packages.items():
        if not NAME_RE.match(name):
            problem(f"packages.{name}", "is not a package name (letters, digits, . _ + -)")
            continue
        if not isinstance(entries, list):
            problem(f"packages.{name}", "must be a list of versions")
            continue
        seen: set[str] = set()
        good: list[IndexEntry] = []
        for i, raw in enumerate(entries):
            entry = _parse_entry(name, raw, f"packages.{name}.{i}", problem)
            if entry is None:
                continue
            if entry.version in seen:
                problem(f"packages.{name}.{i}.version", f"{entry.version} is listed twice")
                continue
            seen.add(entry.version)
            good.append(entry)
        parsed[name] = _sorted_entries(good)
    return parsed


def _parse_entry(
    name: str, raw: Any, key: str, problem: Callable[[str, str], None]
) -> IndexEntry | None:
    if not isinstance(raw, dict):
        problem(key, 'must be an object with "version", "file", "sha256", "size", "streams"')
        return None
    count = 0

    def report(field: str, message: str) -> None:
        nonlocal count
        count += 1
        problem(f"{key}.{field}", message)

    version, file, sha, size, streams = (
        raw.get(k) for k in ("version", "file", "sha256", "size", "streams")
    )
    if not isinstance(version, str) or not VERSION_RE.match(version) or version == LATEST:
        report("version", f"must be a version (letters, digits, . + ~ -), not {version!r}")
    parts = split_artifact_name(file) if isinstance(file, str) else None
    if parts is None:
        report("file", f"must be a file name <name>_<version>.tar[.gz|.xz|.zst], not {file!r}")
    elif parts[:2] != (name, version):
        report("file", f"{file!r} is not the file of {name} {version}")
    if not isinstance(sha, str) or not SHA256_RE.match(sha.lower()):
        report("sha256", f"must be 64 hexadecimal digits, not {sha!r}")
    if type(size) is not int or size < 0:
        report("size", f"must be a size in bytes, not {size!r}")
    if not isinstance(streams, list) or not all(isinstance(s, str) for s in streams):
        report("streams", f"must be a list of streams ({', '.join(STREAMS)}), not {streams!r}")
    else:
        unknown = [s for s in streams if s not in STREAMS]
        if unknown:
            report("streams", f"unknown stream {unknown[0]!r} (use {', '.join(STREAMS)})")
        elif len(set(streams)) != len(streams):
            report("streams", "lists a stream twice")
    if count:
        return None
    assert isinstance(version, str) and isinstance(file, str) and isinstance(sha, str)
    assert isinstance(size, int) and isinstance(streams, list)
    return IndexEntry(version, file, sha.lower(), size, _canonical_streams(streams))


def render_index(index: Index) -> bytes:
    """The index as stable, pretty JSON: packages by name, versions newest first, and the
    same bytes for the same index."""
    doc = {
        "format": index.format,
        "arch": index.arch,
        "packages": {
            name: [
                {
                    "version": e.version,
                    "file": e.file,
                    "sha256": e.sha256,
                    "size": e.size,
                    "streams": list(_canonical_streams(e.streams)),
                }
                for e in _sorted_entries(index.packages[name])
            ]
            for name in sorted(index.packages)
        },
    }
    if index.latest:
        doc["latest"] = dict(sorted(index.latest.items()))
    if index.generation is not None:
        doc["generation"] = index.generation
    if index.expires is not None:
        doc["expires"] = index.expires
    # Keys in a fixed order rather than sorted: "version" first reads best, and the
    # output is as stable either way.
    return (json.dumps(doc, indent=2) + "\n").encode()


# --- <name>_latest ----------------------------------------------------------------------------

LATEST_MAX = 4096  # a version is short; anything longer is not a version file


def read_latest(path: str) -> bytes | None:
    """A local `<name>_latest`: a symlink's target, else the file's content; None if absent.

    The symlink case returns the link's text (`goss_v0.0.2.tar.gz`), never the tarball.
    This is the contract of plan.resolve's get_text for file: repositories.
    """
    try:
        return os.readlink(path).encode()
    except FileNotFoundError:
        return None
    except OSError:
        pass  # not a symlink
    try:
        with open(path, "rb") as f:
            return f.read(LATEST_MAX + 1)
    except FileNotFoundError:
        return None


def latest_version(name: str, content: bytes) -> str:
    """The version a `<name>_latest` file names.

    It holds a version (`v0.0.2`), or names the artifact (`goss_v0.0.2` or
    `goss_v0.0.2.tar.gz`, as a symlink's target does, possibly with a directory).
    """
    what = f"{name}_{LATEST}"
    hint = f"write the version alone into {what}, or make it a symlink to {name}_<version>.tar.gz"
    if len(content) > LATEST_MAX:
        raise LayershellError(f"{what} is {len(content)} bytes, too long to be a version", hint)
    try:
        text = content.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise LayershellError(f"{what} is not text", hint) from None
    base = text.rsplit("/", 1)[-1]
    parts = split_artifact_name(base)
    if parts is None:
        stem_name, sep, stem_version = base.rpartition("_")
        if sep and NAME_RE.match(stem_name) and VERSION_RE.match(stem_version):
            parts = (stem_name, stem_version, "")
    if parts is not None:
        if parts[0] != name:
            raise LayershellError(f"{what} names another package: {base!r}", hint)
        version = parts[1]
    else:
        version = base
    if not version or not VERSION_RE.match(version) or version == LATEST:
        raise LayershellError(f"{what} does not hold a version: {text[:80]!r}", hint)
    return version
