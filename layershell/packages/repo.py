"""Repositories: references, version ordering, the host's arch and OS version, the index.

A repository is a directory tree, local or remote:

    <repository>/<arch>/<name>_<version>.tar.gz    (or .tar, .tar.xz, .tar.zst)
    <repository>/<arch>/<name>_latest              optional: a version, or a symlink
    <repository>/<arch>/index.json                 every artifact, its sha256 and streams

A reference names one package version in it: `<protocol>:<repository>/<arch>/<name>_<version>`.
This module parses and checks those names and reads and writes the index; choosing a
version is plan.py's job, fetching fetch's. docs/repository.md describes the formats.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from layershell import names
from layershell.atomic import write_atomic
from layershell.errors import ConfigError, LayershellError, Problem

INDEX_NAME = "index.json"
SUMS_NAME = "SHA256SUMS"  # what a signature covers: index.json and the tarballs
SIGNATURE_NAME = "SHA256SUMS.gpg"  # its detached OpenPGP signature
MAX_INDEX = 16 << 20
INDEX_FORMAT = 1
STREAMS_FILES = ("streams.yaml", "streams.json")
# Stable first: the order in which a version reaches streams is testing -> next -> stable.
STREAMS = names.STREAMS
LATEST = "latest"
# Longest first, so "goss_1.tar.gz" is not read as version "1.tar" with extension ".gz".
TARBALL_EXTENSIONS = (".tar.gz", ".tar.xz", ".tar.zst", ".tar")
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

# Names may contain "_" (node_exporter), versions may not: the last "_" of
# `<name>_<version>` is the separator.
# The rules are names.py's, under the names this module has always used.
NAME_RE, VERSION_RE, ARCH_RE, SHA256_RE = names.PACKAGE, names.VERSION, names.ARCH, names.SHA256
_HOST_RE = re.compile(r"\A(?:[^@/\s]+@)?(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~%-]+)(?::[0-9]+)?\Z")
_RUNS_RE = re.compile(r"[0-9]+|[^0-9]+")

REFERENCE_FORM = (
    "write it as <protocol>:<repository>/<arch>/<name>_<version>,"
    " for example file:///media/usb1/fcos/x86_64/goss_v0.0.1"
    " or https://repo.example/fcos/x86_64/goss_latest"
)
REPOSITORY_FORM = (
    "write it as <protocol>://<host or path>, for example file:///media/usb1/fcos,"
    " https://repo.example/fcos or ftp://localhost:2121 (protocols: file, http, https, ftp)"
)
INDEX_HINT = "rebuild it with `core repo index DIR` on the repository's <arch> directory"
CREDENTIALS_FILE = "~/.config/layershell/credentials"
CREDENTIALS_HINT = (
    f"write the URL without it, and put the login in {CREDENTIALS_FILE} (netrc format:"
    " machine HOST login USER password PASS; a file of the fetching account, mode 0600)"
)


class Protocol(str, Enum):
    FILE = "file"
    HTTP = "http"
    HTTPS = "https"
    FTP = "ftp"


class BadReference(LayershellError):
    """A reference or repository URL is malformed."""

    exit_code = 2


class RepositoryError(LayershellError):
    """A repository directory cannot be indexed as it is."""

    exit_code = 2


# --- references -------------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """`<protocol>:<repository>/<arch>/<name>_<version>`; version may be "latest"."""

    protocol: Protocol
    repository: str  # base URL with its protocol, no trailing slash: file:///media/usb1/fcos
    arch: str
    name: str
    version: str

    @property
    def url(self) -> str:
        """The artifact's URL without a tarball extension."""
        return f"{self.repository}/{self.arch}/{self.name}_{self.version}"

    def __str__(self) -> str:
        return self.url


def _password_split(text: str) -> tuple[str, str] | None:
    """(what to show before the host, the rest) when `text` carries a password, else None.

    A password is `user:pass@` in the authority. A password with an unencoded "/" ends
    the authority early (`https://admin:pa/ss@host`): an authority whose "port" is not a
    number, with an "@" later on, counts as one too, so it never leaks through a message.
    A user name alone (`ftp://user@host`) is no secret and is kept.
    """
    scheme, sep, rest = text.partition("://")
    if not sep:
        if text.startswith("/") or text.lower().startswith("file:"):
            return None
        userinfo, at, host = text.rpartition("@")  # "user:pass@host": no protocol at all
        return ("", host) if at and ":" in userinfo else None
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if "@" in authority:
        userinfo, _, after = authority.rpartition("@")
        if ":" not in userinfo:
            return None
        return f"{scheme}://", after + rest[len(authority) :]
    if scheme.lower() == "file" or "@" not in rest or ":" not in authority:
        return None
    if authority.startswith("[") or authority.rpartition(":")[2].isdigit():
        return None  # a host and its port; an "@" in the path is no password
    return f"{scheme}://", rest.rpartition("@")[2]


def redact_url(text: str) -> str:
    """`text` with a user name and password in it shown as `***`."""
    split = _password_split(text)
    return text if split is None else f"{split[0]}***@{split[1]}"


def has_credentials(text: str) -> bool:
    """True when a URL carries a password (`user:pass@host`)."""
    return _password_split(text) is not None


def credentials_refusal(text: str) -> str:
    """The message that refuses a URL with credentials; it shows them as ***."""
    return (
        f"{redact_url(text)} has a user name or password; layershell never takes one"
        " from a URL (it would be printed and recorded)"
    )


def _split_url(text: str, what: str, form: str) -> tuple[Protocol, str, list[str]]:
    """protocol, authority ("" for file:) and path segments of a URL-like string.

    `what` names the text in messages ("reference", "repository"); `form` is the hint.
    """

    def bad(problem: str) -> BadReference:
        return BadReference(f"{what} {text!r}: {problem}", form)

    if not text:
        raise bad("is empty")
    if has_credentials(text):  # before anything that would show the text
        raise BadReference(f"{what} {credentials_refusal(text)}", CREDENTIALS_HINT)
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in text):
        raise bad("contains whitespace or control characters (percent-encode a space as %20)")
    scheme, sep, rest = text.partition(":")
    if not sep or not scheme or "/" in scheme:
        raise bad("has no protocol")
    try:
        protocol = Protocol(scheme.lower())
    except ValueError:
        raise bad(
            f"unknown protocol {scheme!r} (layershell fetches from file, http, https and ftp)"
        ) from None
    if "?" in rest or "#" in rest:
        raise bad("has a query or fragment (? or #); a repository is a plain directory")
    if rest.startswith("//"):
        authority, slash, path = rest[2:].partition("/")
        path = slash + path
    elif protocol is Protocol.FILE and rest.startswith("/"):
        authority, path = "", rest  # file:/media/usb1 is the short form of file:///media/usb1
    else:
        raise bad(f"expected '//' after '{scheme}:'")
    if protocol is Protocol.FILE:
        if authority not in ("", "localhost"):
            raise bad(
                f"a file: URL names a local path, but this one names the host {authority!r}"
                " (write file:///path, with three slashes)"
            )
        authority = ""
        if not path:
            raise bad("has no path after 'file://'")
    elif not authority:
        raise bad(f"names no host after '{protocol.value}://'")
    elif not _HOST_RE.match(authority):
        raise bad(f"{authority!r} is not a host name, with an optional :port")
    segments = path.split("/")[1:]
    if segments and segments[-1] == "":
        segments.pop()  # one trailing slash is harmless
    for segment in segments:
        if segment == "":
            raise bad("has an empty path segment ('//')")
        if segment in (".", ".."):
            raise bad(f"has a {segment!r} path segment; write the path without it")
    return protocol, authority, segments


def _base(protocol: Protocol, authority: str, segments: list[str]) -> str:
    path = "".join("/" + s for s in segments)
    return f"{protocol.value}://{authority}{path}"


def check_repository(text: str) -> str:
    """A repository base URL, normalised: protocol lower-case, no trailing slash.

    A bare absolute path is taken as a file: URL (/media/usb1/fcos -> file:///media/usb1/fcos).
    """
    if text.startswith("/"):
        text = "file://" + text
    protocol, authority, segments = _split_url(text, "repository", REPOSITORY_FORM)
    if protocol is Protocol.FILE and not segments:
        raise BadReference(
            f"repository {text!r}: names the root directory; a repository is a directory"
            " such as file:///media/usb1/fcos",
            REPOSITORY_FORM,
        )
    return _base(protocol, authority, segments)


def parse_reference(text: str) -> Reference:
    """Parse `<protocol>:<repository>/<arch>/<name>_<version>`; BadReference if malformed."""
    protocol, authority, segments = _split_url(text, "reference", REFERENCE_FORM)

    def bad(problem: str) -> BadReference:
        return BadReference(f"reference {text!r}: {problem}", REFERENCE_FORM)

    if len(segments) < 2:
        raise bad("needs /<arch>/<name>_<version> at the end")
    if protocol is Protocol.FILE and len(segments) < 3:
        raise bad("needs a repository directory before /<arch>/<name>_<version>")
    arch, last = segments[-2], segments[-1]
    if not ARCH_RE.match(arch):
        raise bad(f"{arch!r} is not an architecture as `uname -m` prints it (e.g. x86_64)")
    for ext in TARBALL_EXTENSIONS:
        if last.endswith(ext):
            raise bad(f"names the file {last!r}; a reference ends at <name>_<version>, drop {ext}")
    name, sep, version = last.rpartition("_")
    if not sep or not name or not version:
        raise bad(f"{last!r} is not <name>_<version>")
    if not NAME_RE.match(name):
        raise bad(f"{name!r} is not a package name (letters, digits, '.', '_', '+', '-')")
    if not VERSION_RE.match(version):
        raise bad(f"{version!r} is not a version (letters, digits, '.', '+', '~', '-')")
    return Reference(protocol, _base(protocol, authority, segments[:-2]), arch, name, version)


def arch_url(repository: str, arch: str) -> str:
    """The URL of a repository's directory for one arch."""
    return f"{repository.rstrip('/')}/{arch}"


def index_url(repository: str, arch: str) -> str:
    return f"{arch_url(repository, arch)}/{INDEX_NAME}"


def split_artifact_name(file_name: str) -> tuple[str, str, str] | None:
    """(name, version, extension) of `<name>_<version>.tar[.gz|.xz|.zst]`, else None."""
    for ext in TARBALL_EXTENSIONS:
        if file_name.endswith(ext):
            stem = file_name[: -len(ext)]
            name, sep, version = stem.rpartition("_")
            if sep and NAME_RE.match(name) and VERSION_RE.match(version):
                return name, version, ext
            return None
    return None


# --- host ---------------------------------------------------------------------------------


def host_arch() -> str:
    """The machine name as `uname -m` prints it: the <arch> of repository paths."""
    return os.uname().machine


def _unquote(value: str) -> str:
    """An os-release value: shell-style quotes removed, backslash escapes resolved."""
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        inner = value[1:-1]
        if value[0] == "'":
            return inner
        return re.sub(r"\\([\\\"$`])", r"\1", inner)
    return value


def parse_os_release(text: str) -> dict[str, str]:
    """KEY=VALUE lines of os-release(5); comments and malformed lines are skipped."""
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if sep and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            values[key] = _unquote(value.strip())
    return values


def host_os_version(
    os_release_paths: Iterable[str] = ("/etc/os-release", "/usr/lib/os-release"),
    root: str = "/",
) -> str | None:
    """The host's OS version: OSTREE_VERSION (image-based hosts), else VERSION_ID.

    The first os-release file that exists counts, as os-release(5) says; paths are taken
    under `root`. None when there is no file or neither key has a value.
    """
    for path in os_release_paths:
        full = os.path.join(root, path.lstrip("/"))
        try:
            with open(full, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except FileNotFoundError:
            continue
        values = parse_os_release(text)
        return values.get("OSTREE_VERSION") or values.get("VERSION_ID") or None
    return None


# --- versions -------------------------------------------------------------------------------

VersionKey = tuple[tuple[tuple[tuple[int, ...], int], ...], str]
_END = ((0,), 0)  # what a shorter version is padded with, as Debian pads


def _weight(c: str) -> int:
    # Debian's order for non-digits: '~' before the end of a run, letters before others.
    if c == "~":
        return -1
    if c.isascii() and c.isalpha():
        return ord(c)
    return ord(c) + 256


def version_key(version: str) -> VersionKey:
    """A sort key ordering versions naturally, as Debian does.

    Alternating non-digit and digit runs; digit runs compare as numbers ("1.10" > "1.9");
    '~' sorts before anything, even the end ("1.0~rc1" < "1.0"); a leading "v" before a
    digit is ignored ("v1.2" is 1.2). Versions equal by these rules ("1.01" and "1.1")
    are ordered by their text, so the order is total and sorting is deterministic.
    """
    v = version[1:] if len(version) > 1 and version[0] in "vV" and version[1].isdigit() else version
    pairs: list[tuple[tuple[int, ...], int]] = []
    text: tuple[int, ...] = (0,)
    for run in _RUNS_RE.findall(v):
        if run.isascii() and run.isdigit():
            pairs.append((text, int(run)))
            text = (0,)
        else:
            text = (*(_weight(c) for c in run), 0)
    if text != (0,):
        pairs.append((text, 0))
    pairs.append(_END)
    return tuple(pairs), version


def newest_first(versions: Iterable[str]) -> list[str]:
    return sorted(versions, key=version_key, reverse=True)


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


# --- building an index ----------------------------------------------------------------------


def sha256_file(path: str, chunk: int = 1 << 20) -> tuple[str, int]:
    """(sha256 hex, size) of a file, read in chunks so a large tarball costs little memory."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
            size += len(block)
    return h.hexdigest(), size


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

    found: dict[str, dict[str, tuple[str, int, str]]] = {}  # name -> version -> (file, size, sha)
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
