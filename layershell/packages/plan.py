"""Plan: which artifact a package resolves to, from its repository's index and files.

No network here: the caller passes `get_index` and `get_text`, which fetch a URL and
return its bytes, or None when the file does not exist (404, ENOENT). That keeps the
rules below testable with dictionaries, and the same for every protocol.

Rules (docs/repository.md, "Resolving a version"):

- pinned: that version; its file and sha256 from the index if there is one, else
  `<name>_<version>.tar.gz` with the manifest's sha256 pin (which must then exist).
  A pin and an index that disagree is an error, never a choice.
- latest: on the stable stream, a `<name>_latest` file names the version; otherwise the
  newest version of the index on the stream.
- os: the host's OS version if the index has it on the stream, else the newest older one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum

from layershell.errors import LayershellError
from layershell.packages import repo
from layershell.packages.manifest import VersionKind
from layershell.packages.repo.index import Index, IndexEntry

Fetch = Callable[[str], bytes | None]

PINNED, LATEST, OS = (k.value for k in VersionKind)  # one name each: manifest.VersionKind
KINDS = (PINNED, LATEST, OS)
DEFAULT_FILE_EXTENSION = ".tar.gz"
PUBLISH_HINT = "publish an index with `core repo index DIR` on the repository's <arch> directory"


class ResolveError(LayershellError):
    """A package's version cannot be resolved in its repository."""

    exit_code = 1


@dataclass(frozen=True)
class Artifact:
    """One tarball to fetch, and what to expect of it."""

    name: str
    version: str
    url: str  # full URL of the tarball
    file_name: str
    sha256: str | None  # lower-case hex; None only if nothing pinned it (never from resolve)
    size: int | None  # from the index, when there is one
    repository: str
    arch: str


@dataclass(frozen=True)
class Candidate:
    """A version the resolution looked at, and whether it could be chosen."""

    version: str
    streams: tuple[str, ...]
    eligible: bool
    reason: str  # why not, or "" when eligible


def _word(value: object) -> str:
    """A str-valued enum (VersionKind, TrackStream) or a str, as the word users type."""
    return str(value.value) if isinstance(value, Enum) else str(value)


def candidates(
    name: str,
    index: Index,
    *,
    version_kind: str,
    stream: str,
    os_version: str | None = None,
    version: str | None = None,
) -> list[Candidate]:
    """Every version of `name` in the index, newest first, and whether the rule for
    `version_kind` may pick it (for `core update --dry-run` and error messages)."""
    kind, stream = _word(version_kind), _word(stream)
    out: list[Candidate] = []
    for e in index.entries(name):
        reason = ""
        if kind == PINNED:
            if e.version != version:
                reason = f"not the pinned {version}"
        elif not e.on(stream):
            reason = f"not on {stream}"
        elif kind == OS:
            if os_version is None:
                reason = "the host's OS version is unknown"
            elif e.version != os_version and repo.version_key(e.version) > repo.version_key(
                os_version
            ):
                reason = f"newer than the host's OS version {os_version}"
        out.append(Candidate(e.version, e.streams, not reason, reason))
    return out


class _Resolver:
    """One package's resolution: its names, its repository, and the index fetched once."""

    def __init__(
        self,
        name: str,
        repository: str,
        arch: str,
        get_index: Fetch,
        get_text: Fetch,
        sha256_pin: str | None,
    ) -> None:
        self.name = name
        self.repository = repository
        self.arch = arch
        self.get_index = get_index
        self.get_text = get_text
        self.index_url = repo.index_url(repository, arch)
        self.pin = self._check_pin(sha256_pin)
        self._index: Index | None = None
        self._fetched = False

    def error(self, message: str, hint: str) -> ResolveError:
        return ResolveError(f"{self.name} from {self.repository}: {message}", hint)

    def _check_pin(self, pin: str | None) -> str | None:
        if pin is None:
            return None
        value = pin.strip().lower()
        if not repo.SHA256_RE.match(value):
            raise self.error(
                f"sha256 {pin!r} is not 64 hexadecimal digits",
                "copy the checksum from `sha256sum FILE` or from the repository's index.json",
            )
        return value

    @property
    def index(self) -> Index | None:
        if not self._fetched:
            data = self.get_index(self.index_url)
            self._fetched = True
            if data is not None:
                index = repo.parse_index(data, self.index_url)
                if index.arch != self.arch:
                    raise self.error(
                        f"the index at {self.index_url} is for {index.arch}, not {self.arch}",
                        f"rebuild it with `core repo index DIR --arch {self.arch}`"
                        " in the right directory",
                    )
                self._index = index
        return self._index

    def versions_text(self, index: Index) -> str:
        entries = index.entries(self.name)
        if not entries:
            return f"it has no {self.name}"
        return "it has " + ", ".join(e.version for e in entries)

    def per_stream_text(self, index: Index) -> str:
        entries = index.entries(self.name)
        if not entries:
            return f"it has no {self.name}"
        parts = []
        for s in repo.STREAMS:
            on = [e.version for e in entries if e.on(s)]
            parts.append(f"{s}: {', '.join(on) if on else 'none'}")
        return "; ".join(parts)

    def artifact(self, version: str, entry: IndexEntry | None, sha: str | None) -> Artifact:
        file_name = entry.file if entry else f"{self.name}_{version}{DEFAULT_FILE_EXTENSION}"
        return Artifact(
            name=self.name,
            version=version,
            url=f"{repo.arch_url(self.repository, self.arch)}/{file_name}",
            file_name=file_name,
            sha256=sha,
            size=entry.size if entry else None,
            repository=self.repository,
            arch=self.arch,
        )

    def pinned(self, version: str, why: str = "") -> Artifact:
        if not repo.VERSION_RE.match(version) or version == repo.LATEST:
            raise self.error(
                f"{version!r} is not a version{why}",
                "use letters, digits, '.', '+', '~' and '-' (for example v0.0.1)",
            )
        index = self.index
        if index is None:
            if self.pin is None:
                raise ResolveError(
                    f"no sha256 for {self.name} {version}{why}: there is no index at"
                    f" {self.index_url} and the manifest pins no checksum",
                    "add `sha256:` to the manifest or publish an index (core repo index DIR)",
                )
            return self.artifact(version, None, self.pin)
        entry = index.entry(self.name, version)
        if entry is None:
            raise self.error(
                f"version {version}{why} is not in the index at {self.index_url}"
                f" ({self.versions_text(index)})",
                "pin one of the versions it has, or publish this one and rebuild the index"
                " (core repo index DIR)",
            )
        if self.pin is not None and self.pin != entry.sha256:
            raise self.error(
                f"{version}: the manifest pins sha256 {self.pin} but the index at"
                f" {self.index_url} says {entry.sha256}",
                "if the package was rebuilt on purpose, put the index's checksum in the"
                " manifest; otherwise do not trust this repository until you know why",
            )
        return self.artifact(version, entry, entry.sha256)

    def latest(self, stream: str) -> Artifact:
        if stream == "stable" and self.index is not None and self.name in self.index.latest:
            # The index records <name>_latest: no second request (fleet-friendly checks).
            return self.pinned(
                self.index.latest[self.name], f" (named by {self.name}_{repo.LATEST})"
            )
        if stream == "stable" and self.index is None:
            latest_url = f"{repo.arch_url(self.repository, self.arch)}/{self.name}_{repo.LATEST}"
            content = self.get_text(latest_url)
            if content is not None:
                try:
                    version = repo.latest_version(self.name, content)
                except LayershellError as exc:
                    raise self.error(f"{latest_url}: {exc.message}", exc.hint) from None
                return self.pinned(version, f" (named by {self.name}_{repo.LATEST})")
        index = self.index
        if index is None:
            also = f" and no {self.name}_{repo.LATEST}" if stream == "stable" else ""
            raise self.error(
                f"version: latest needs an index; there is no {self.index_url}{also}",
                f"{PUBLISH_HINT}, or pin a version and its sha256",
            )
        for c in candidates(self.name, index, version_kind=LATEST, stream=stream):
            if c.eligible:
                return self.pinned(c.version)
        raise self.error(
            f"no version on the {stream} stream in the index at {self.index_url}"
            f" ({self.per_stream_text(index)})",
            "follow another track_stream, pin a version, or publish one on this stream",
        )

    def os(self, stream: str, os_version: str | None) -> Artifact:
        if os_version is None:
            raise self.error(
                "version: os, but the host's OS version is unknown"
                " (os-release has neither OSTREE_VERSION nor VERSION_ID)",
                "pin a version instead, or fix /etc/os-release",
            )
        index = self.index
        if index is None:
            raise self.error(
                f"version: os needs an index listing the versions; there is no {self.index_url}",
                f"{PUBLISH_HINT}, or pin a version and its sha256",
            )
        found = candidates(self.name, index, version_kind=OS, stream=stream, os_version=os_version)
        for c in found:
            if c.eligible and c.version == os_version:
                return self.pinned(c.version)
        for c in found:
            if c.eligible:
                return self.pinned(c.version)
        on_stream = [c.version for c in found if c.streams and stream in c.streams]
        has = ", ".join(on_stream) if on_stream else "none"
        raise self.error(
            f"no version for OS version {os_version} or an older one on the {stream} stream"
            f" in the index at {self.index_url} (on {stream}: {has};"
            f" {self.versions_text(index)})",
            f"publish {self.name}_{os_version}, or pin a version",
        )


def resolve(
    name: str,
    repository: str,
    version: str,
    version_kind: str,
    stream: str,
    *,
    arch: str,
    os_version: str | None,
    get_index: Fetch,
    get_text: Fetch,
    sha256_pin: str | None = None,
) -> Artifact:
    """The artifact `name` resolves to in `repository` (see the module docstring).

    version_kind is "pinned", "latest" or "os" (or manifest.VersionKind); stream is
    "stable", "next" or "testing" (or manifest.TrackStream). get_index and get_text fetch
    a URL: bytes, or None if it does not exist. get_text on a file: `<name>_latest` that
    is a symlink returns the link's target (repo.read_latest does exactly that).
    """
    kind, stream = _word(version_kind), _word(stream)
    try:
        base = repo.check_repository(repository)
    except LayershellError as exc:
        raise ResolveError(f"{name}: {exc.message}", exc.hint) from None
    r = _Resolver(name, base, arch, get_index, get_text, sha256_pin)
    if stream not in repo.STREAMS:
        raise r.error(f"unknown stream {stream!r}", f"use one of {', '.join(repo.STREAMS)}")
    if kind == PINNED:
        return r.pinned(version)
    if kind == LATEST:
        return r.latest(stream)
    if kind == OS:
        return r.os(stream, os_version)
    raise r.error(f"unknown version kind {kind!r}", f"use one of {', '.join(KINDS)}")


def describe(candidates_: Sequence[Candidate]) -> list[str]:
    """One line per candidate, for a dry run: `v0.0.2  [next, testing]  not on stable`."""
    lines = []
    for c in candidates_:
        streams = ", ".join(c.streams) or "no stream"
        lines.append(f"{c.version}  [{streams}]  {c.reason or 'eligible'}")
    return lines
