"""Publishing a repository: indexing an <arch> directory, its SHA256SUMS and signature."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from typing import Any

from layershell.atomic import write_atomic
from layershell.errors import ConfigError, LayershellError, Problem
from layershell.packages.repo.index import (
    LATEST,
    MAX_INDEX,
    STREAMS,
    Index,
    IndexEntry,
    _canonical_streams,
    _sorted_entries,
    expiry_text,
    latest_version,
    parse_index,
    read_latest,
    render_index,
)
from layershell.packages.repo.layout import (
    ARCH_RE,
    INDEX_NAME,
    NAME_RE,
    SIGNATURE_NAME,
    SUMS_NAME,
    VERSION_RE,
    split_artifact_name,
)
from layershell.packages.repo.versions import version_key
from layershell.packages.verify.integrity import sha256_file

STREAMS_FILES = ("streams.yaml", "streams.json")
# What `uname -m` prints on the machines a repository is likely to serve; build_index
# uses it to tell an arch directory from any other directory name.
KNOWN_ARCHES = frozenset(
    {
        "aarch64",
        "armv6l",
        "armv7l",
        "i386",
        "i686",
        "loongarch64",
        "mips64",
        "ppc64",
        "ppc64le",
        "riscv64",
        "s390x",
        "x86_64",
    }
)


class RepositoryError(LayershellError):
    """A repository directory cannot be indexed as it is."""

    exit_code = 2


# --- building an index ----------------------------------------------------------------------


StreamsMap = dict[str, dict[str, tuple[str, ...]]]


def load_streams(path: str) -> StreamsMap:
    """Read a streams file: {package: {version: [streams...]}}, YAML or JSON.

    Every problem at once, as a ConfigError with positions.
    """
    from layershell.load import load_file

    doc = load_file(path)
    hint = "write {package: {version: [stable, next, testing]}}; see docs/repository.md"
    problems: list[Problem] = []
    out: StreamsMap = {}
    if doc.data is None:
        return out
    if not isinstance(doc.data, dict):
        raise ConfigError([doc.problem((), "must map package names to versions", hint)])
    for name, versions in doc.data.items():
        if not NAME_RE.match(name):
            problems.append(doc.problem((name,), "is not a package name", hint, key=True))
            continue
        if not isinstance(versions, dict):
            problems.append(doc.problem((name,), "must map versions to lists of streams", hint))
            continue
        out[name] = {}
        for version, streams in versions.items():
            where = (name, version)
            if not VERSION_RE.match(version) or version == LATEST:
                problems.append(doc.problem(where, "is not a version", hint, key=True))
            elif not isinstance(streams, list) or not all(isinstance(s, str) for s in streams):
                problems.append(doc.problem(where, "must be a list of streams", hint))
            else:
                unknown = [s for s in streams if s not in STREAMS]
                if unknown:
                    problems.append(
                        doc.problem(
                            where,
                            f"unknown stream {unknown[0]!r}",
                            f"use {', '.join(STREAMS)}",
                        )
                    )
                else:
                    out[name][version] = _canonical_streams(streams)
    if problems:
        raise ConfigError(problems)
    return out


def _default_arch(directory: str) -> str:
    base = os.path.basename(os.path.normpath(os.path.abspath(directory)))
    if base not in KNOWN_ARCHES:
        raise RepositoryError(
            f"{directory}: cannot tell the architecture from the directory name {base!r}",
            "keep the tarballs in <repository>/<arch>/, arch as `uname -m` prints it"
            " (e.g. x86_64), or name the arch explicitly",
        )
    return base


def _latest_warnings(directory: str, file_name: str, versions: Mapping[str, Any]) -> list[str]:
    """Warn about a <name>_latest file that names no artifact of this directory."""
    name = file_name[: -len("_" + LATEST)]
    try:
        content = read_latest(os.path.join(directory, file_name))
        if content is None:
            return []
        version = latest_version(name, content)
    except OSError as exc:
        return [f"{file_name}: cannot read: {exc.strerror}"]
    except LayershellError as exc:
        return [f"{file_name}: {exc.message}"]
    if version not in versions.get(name, {}):
        return [f"{file_name}: names {name} {version}, which is not in this directory"]
    return []


Artifacts = dict[str, dict[str, tuple[str, int, str]]]  # name -> version -> (file, size, sha)


def _scan_directory(
    directory: str, streams_file: str | None, warnings: list[str]
) -> tuple[Artifacts, list[str]]:
    """The tarballs of an arch directory, hashed, and its `<name>_latest` files; other
    files are skipped and named in `warnings`."""
    found: Artifacts = {}
    latest_files: list[str] = []
    skip = {INDEX_NAME, SUMS_NAME, SIGNATURE_NAME, *STREAMS_FILES}
    if streams_file:
        skip.add(os.path.basename(streams_file))
    for item in sorted(os.scandir(directory), key=lambda d: d.name):
        if item.name in skip:
            continue
        if item.name.endswith("_" + LATEST) and NAME_RE.match(item.name[: -len(LATEST) - 1]):
            latest_files.append(item.name)
            continue
        parts = split_artifact_name(item.name)
        if parts is None or parts[1] == LATEST:
            warnings.append(f"{item.name}: skipped, not <name>_<version>.tar[.gz|.xz|.zst]")
            continue
        if not item.is_file():  # follows symlinks: a link into a pool of tarballs is fine
            warnings.append(f"{item.name}: skipped, not a regular file")
            continue
        name, version, _ = parts
        if version in found.setdefault(name, {}):
            other = found[name][version][0]
            raise RepositoryError(
                f"{directory}: {other} and {item.name} are both {name} {version}",
                "keep one file per version",
            )
        sha, size = sha256_file(item.path)
        found[name][version] = (item.name, size, sha)
    return found, latest_files


def _package_entries(
    found: Artifacts, narrowed: StreamsMap, warnings: list[str]
) -> dict[str, tuple[IndexEntry, ...]]:
    """The index entries of the tarballs found, on the streams the streams file gives
    (all three otherwise); a version that skips a stream is named in `warnings`."""
    packages: dict[str, tuple[IndexEntry, ...]] = {}
    for name, artifacts in found.items():
        entries = []
        for version, (file, size, sha) in artifacts.items():
            streams = narrowed.get(name, {}).get(version, STREAMS)
            reached = STREAMS.index(streams[0]) if streams else len(STREAMS)
            missing = [s for s in STREAMS[reached:] if s not in streams]
            if missing:
                warnings.append(
                    f"{name} {version} is on {streams[0]} but not on {', '.join(missing)}:"
                    " a version normally reaches testing, then next, then stable"
                )
            entries.append(IndexEntry(version, file, sha, size, streams))
        packages[name] = _sorted_entries(entries)
    return packages


def build_index(
    directory: str, arch: str | None = None, streams_file: str | None = None
) -> tuple[Index, list[str]]:
    """Index the tarballs of one arch directory; returns the index and warnings.

    Every `<name>_<version>.tar[.gz|.xz|.zst]` is hashed. Each version is on all three
    streams unless the streams file (`streams_file`, else streams.yaml or streams.json in
    the directory) lists it. Other files are skipped and named in the warnings.
    """
    if not os.path.isdir(directory):
        raise RepositoryError(
            f"{directory}: not a directory", "name the <repository>/<arch> directory to index"
        )
    warnings: list[str] = []
    base = os.path.basename(os.path.normpath(os.path.abspath(directory)))
    if arch is None:
        arch = _default_arch(directory)
    elif not ARCH_RE.match(arch):
        raise RepositoryError(
            f"{arch!r} is not an architecture", "use the name `uname -m` prints, e.g. x86_64"
        )
    elif base != arch:
        warnings.append(
            f"the directory is named {base!r}, not {arch!r}: clients look for"
            f" <repository>/{arch}/{INDEX_NAME}"
        )
    if streams_file is None:
        present = [f for f in STREAMS_FILES if os.path.exists(os.path.join(directory, f))]
        if len(present) > 1:
            raise RepositoryError(
                f"{directory}: has both {present[0]} and {present[1]}", "keep one of them"
            )
        streams_file = os.path.join(directory, present[0]) if present else None
    narrowed = load_streams(streams_file) if streams_file else {}

    found, latest_files = _scan_directory(directory, streams_file, warnings)

    latest: dict[str, str] = {}
    for name_ in latest_files:
        problems_ = _latest_warnings(directory, name_, found)
        warnings.extend(problems_)
        content = read_latest(os.path.join(directory, name_))
        if not problems_ and content is not None:
            latest[name_[: -len(LATEST) - 1]] = latest_version(name_[: -len(LATEST) - 1], content)
    for name, listed in sorted(narrowed.items()):
        for version in sorted(listed, key=version_key):
            if version not in found.get(name, {}):
                warnings.append(f"{streams_file}: {name} {version} has streams but no tarball here")

    packages = _package_entries(found, narrowed, warnings)
    return Index(arch=arch, packages=dict(sorted(packages.items())), latest=latest), warnings


DEFAULT_EXPIRY = 30 * 86400.0  # seconds: `core repo index --expires 30d`


def _previous_generation(directory: str) -> int:
    try:
        with open(os.path.join(directory, INDEX_NAME), "rb") as f:
            old = parse_index(f.read(MAX_INDEX + 1), INDEX_NAME)
    except (OSError, LayershellError):
        return 0
    return old.generation or 0


def publish_sums(directory: str, index: Index, index_bytes: bytes) -> dict[str, str]:
    """file name -> sha256 of what SHA256SUMS lists: index.json, every tarball of the
    index, and each `<name>_latest` that is a regular file (a symlink's target is listed
    as its tarball)."""
    sums = {INDEX_NAME: hashlib.sha256(index_bytes).hexdigest()}
    for entries in index.packages.values():
        for e in entries:
            sums[e.file] = e.sha256
    for name in index.latest:
        path = os.path.join(directory, f"{name}_{LATEST}")
        if os.path.isfile(path) and not os.path.islink(path):
            sums[os.path.basename(path)] = sha256_file(path)[0]
    return sums


def sign_file(path: str, key: str, output: str, gnupg_home: str | None = None) -> None:
    """A detached OpenPGP signature of `path` by `key`, made by the real gpg (its
    GNUPGHOME, or `gnupg_home`; its agent), written to `output` once gpg has succeeded."""
    import shutil
    import subprocess

    gpg = shutil.which("gpg") or shutil.which("gpg2")
    if gpg is None:
        raise RepositoryError(
            "--sign needs gpg, which is not installed",
            "install gnupg (Debian: apt-get install gnupg; Fedora: gnupg2)",
        )
    part = output + ".part"
    try:
        done = subprocess.run(
            [gpg, "--batch", "--yes", "--local-user", key, "--detach-sign", "--output", part, path],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **({"GNUPGHOME": gnupg_home} if gnupg_home else {})},
        )
    except subprocess.TimeoutExpired:
        raise RepositoryError(
            "gpg did not sign within 120 s", "is it waiting for a passphrase?"
        ) from None
    if done.returncode != 0:
        if os.path.exists(part):
            os.unlink(part)
        said = done.stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
        raise RepositoryError(
            f"gpg could not sign {path} with {key!r}: {said[0]}",
            "list the secret keys with gpg --list-secret-keys; --sign takes a fingerprint or"
            " an e-mail address",
        )
    os.chmod(part, 0o644)
    os.replace(part, output)


def write_index(
    directory: str,
    arch: str | None = None,
    streams_file: str | None = None,
    *,
    sign: str | None = None,
    expires_in: float = DEFAULT_EXPIRY,
    generation: int | None = None,
    now: float | None = None,
    gnupg_home: str | None = None,
) -> tuple[Index, list[str]]:
    """build_index, then write, atomically and readable by all, `<directory>/index.json`
    (with the next generation and an expiry), SHA256SUMS over it and the tarballs, and,
    with `sign`, SHA256SUMS.gpg (a stale one is removed when not signing)."""
    import dataclasses
    import time

    index, warnings = build_index(directory, arch, streams_file)
    previous = _previous_generation(directory)
    if generation is None:
        generation = previous + 1
    elif generation < previous:
        warnings.append(
            f"generation {generation} is older than the {previous} published before: hosts"
            f" that accepted {previous} refuse it"
        )
    when = (time.time() if now is None else now) + expires_in
    index = dataclasses.replace(index, generation=generation, expires=expiry_text(when))
    data = render_index(index)
    write_atomic(os.path.join(directory, INDEX_NAME), data, mode=0o644)
    sums = os.path.join(directory, SUMS_NAME)
    lines = "".join(
        f"{sha}  {name}\n" for name, sha in sorted(publish_sums(directory, index, data).items())
    )
    write_atomic(sums, lines, mode=0o644)
    signature = os.path.join(directory, SIGNATURE_NAME)
    if sign is not None:
        sign_file(sums, sign, signature, gnupg_home)
    elif os.path.exists(signature):
        os.unlink(signature)
        warnings.append(f"removed the old {SIGNATURE_NAME}: it signed the previous {SUMS_NAME}")
    return index, warnings
