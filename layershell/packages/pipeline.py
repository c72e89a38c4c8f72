"""The install pipeline: manifest or references -> plan -> fetch -> verify -> unpack ->
install -> record, for one installing layer, under its lock.

One operation holds the layer's lock (`locked`) from before it plans until after it has
acted and exposed: whatever decides what to change (the record, an index) is read under
the lock, so operations that run at the same time take turns, each one seeing the
record the one before it left (docs/updates.md, "Concurrent operations").

Every package is planned (resolved to an artifact with a sha256) before anything is
fetched, so bad input stops the run before it changes anything. Each package then
installs as its own transaction (install.py): a failure leaves that package as it was
and the others installed; the run reports every failure and exits non-zero.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from layershell import faults, lock
from layershell.errors import LayershellError, NotInstalled
from layershell.packages import fetch, holds, install, manifest, plan, repo, settled, unpack, verify
from layershell.packages.fetch.urls import local_path
from layershell.packages.install import Outcome
from layershell.packages.source import Source
from layershell.packages.state import State
from layershell.packages.target import Target
from layershell.paths import Paths

Log = Callable[[str], None]


@dataclass(frozen=True)
class Job:
    """One package to install: where its bytes come from and what to record about it."""

    name: str
    version: str
    url: str | None  # to fetch, or None for a local tarball
    tarball: str | None
    sha256: str | None
    size: int | None
    spec: dict[str, object]

    @property
    def origin(self) -> str:
        """Where the package came from, as recorded: never with a password."""
        return redact(self.url) if self.url else self.tarball or ""


@dataclass(frozen=True)
class Failure:
    name: str
    error: LayershellError


@dataclass(frozen=True)
class Report:
    outcomes: tuple[Outcome, ...]
    failures: tuple[Failure, ...]


def os_version(paths: Paths) -> str | None:
    for root in dict.fromkeys((paths.root, "/")):
        version = repo.host_os_version(root=root)
        if version is not None:
            return version
    return None


def redact(url: str) -> str:
    """A URL without the password of its user:password@ part (state.db is readable)."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def spec_record(spec: manifest.PackageSpec, repository: str | None) -> dict[str, object]:
    """What the record keeps of a manifest entry (exposure and updates act on it)."""
    return {
        "version_kind": spec.version_kind.value,
        "track_stream": spec.track_stream.value,
        "profile": spec.profile.value,
        "install_method": spec.install_method.value,
        "enable": list(spec.enable),
        "start": list(spec.start),
        "expose": None if spec.expose is None else list(spec.expose),
        "repository": repository,
    }


@dataclass(frozen=True)
class Recorded:
    """A record's spec read back typed: what spec_record wrote, what an update follows.
    The record is the layer account's JSON, so a value of the wrong type or out of its
    enum reads as absent (a pinned package, the default stream), never as a string
    that happens to be there."""

    version_kind: manifest.VersionKind | None  # None: a tarball, or nothing to follow
    track_stream: manifest.TrackStream
    repository: str | None
    verified: dict[str, object] | None  # how its origin was checked (verify.Verification)

    @classmethod
    def of(cls, spec: dict[str, object]) -> Recorded:
        kind, stream = spec.get("version_kind"), spec.get("track_stream")
        repository, verified = spec.get("repository"), spec.get("verified")
        kinds = {k.value: k for k in manifest.VersionKind}
        streams = {s.value: s for s in manifest.TrackStream}
        return cls(
            kinds.get(kind) if isinstance(kind, str) else None,
            streams.get(stream, manifest.TrackStream.stable)
            if isinstance(stream, str)
            else manifest.TrackStream.stable,
            repository if isinstance(repository, str) else None,
            verified if isinstance(verified, dict) else None,
        )


def trust_for(
    paths: Paths, loaded: manifest.Manifest | None, target: Target | None, warn: Log
) -> verify.Trust:
    """What this host trusts: the keys in its keys directory, the manifest's
    `repositories:` settings, the generations the installing layer accepted."""
    return verify.Trust(
        paths.keys_dir,
        loaded.repositories if loaded is not None else (),
        record_file=target.generations_file if target is not None else None,
        warn=warn,
    )


def accepted_generations(db: State, arch: str) -> dict[str, int]:
    """The newest generation each repository's installed versions were verified at: what
    the layer had accepted at least, should its repositories.json be lost."""
    seen: dict[str, int] = {}
    for row in db.all():
        recorded = Recorded.of(row.spec)
        verified, repository = recorded.verified, recorded.repository
        if verified is None or repository is None:
            continue
        generation = verified.get("generation")
        if type(generation) is not int:
            continue
        try:
            key = f"{repo.check_repository(repository)}/{arch}"
        except LayershellError:
            continue
        seen[key] = max(seen.get(key, 0), generation)
    return seen


class Planner:
    """Resolves requests to jobs, reading indexes through the fetcher (cached, 304s),
    each repository accepted by `trust` first (verify.py decides; fetch only fetches)."""

    def __init__(
        self,
        fetcher: fetch.Fetcher,
        *,
        arch: str,
        os_version: str | None,
        trust: verify.Trust,
    ) -> None:
        self.fetcher = fetcher
        self.arch = arch
        self.os_version = os_version
        self.trust = trust
        # (name, version) -> how it was verified, for the record (core info shows it)
        self.verified: dict[tuple[str, str], dict[str, object]] = {}

    def use_record(self, session: Session) -> None:
        """Under the lock: the installed versions also say which generations were accepted."""
        self.trust.history = lambda: accepted_generations(session.db, self.arch)

    def _get_text(self, url: str) -> bytes | None:
        # A file:// <name>_latest may be a symlink: its target names the version.
        if url.startswith("file:"):
            return repo.read_latest(local_path(url))
        return self.fetcher.get_text(url)

    def resolve(
        self, name: str, repository: str, version: str, kind: str, stream: str, pin: str | None
    ) -> plan.Artifact:
        try:
            base = repo.check_repository(repository)
        except LayershellError:
            base = None  # plan.resolve says what is wrong with it
        get_index: plan.Fetch = self.fetcher.get_index
        get_text: plan.Fetch = self._get_text
        accepted = None
        if base is not None:
            # All three revalidated with one conditional request each (304s): an
            # unchanged repository costs three small answers.
            accepted = self.trust.accept(
                base, self.arch, self.fetcher.get_index, self.fetcher.get_index
            )
            signed_index = accepted.index
            if signed_index is not None:
                # Only what was signed: the index matched against SHA256SUMS, and no
                # <name>_latest file (the signed index records what it names).
                url = repo.index_url(base, self.arch)
                get_index = lambda u: signed_index if u == url else None  # noqa: E731
                get_text = lambda _u: None  # noqa: E731
        art = plan.resolve(
            name, repository, version, kind, stream,
            arch=self.arch, os_version=self.os_version,
            get_index=get_index, get_text=get_text, sha256_pin=pin,
        )  # fmt: skip
        if accepted is not None:
            accepted.confirm(art.name, art.version, art.file_name, art.sha256)
            record = accepted.record()
            if accepted.verification is verify.Verification.SIGNATURE:
                assert base is not None
                record.update(self.trust.restrictions(base))  # kept by its updates
            self.verified[(art.name, art.version)] = record
        return art

    def verification(self, art: plan.Artifact) -> dict[str, object]:
        return (
            {"verified": self.verified[(art.name, art.version)]}
            if ((art.name, art.version) in self.verified)
            else {}
        )

    def from_spec(self, spec: manifest.PackageSpec, repository: str) -> Job:
        art = self.resolve(
            spec.name, repository, spec.version, spec.version_kind.value,
            spec.track_stream.value, spec.sha256,
        )  # fmt: skip
        record = {**spec_record(spec, repository), **self.verification(art)}
        return Job(art.name, art.version, art.url, None, art.sha256, art.size, record)

    def from_reference(self, text: str) -> Job:
        ref = repo.parse_reference(text)
        if ref.arch != self.arch:
            raise LayershellError(
                f"{text} is built for {ref.arch}, this host is {self.arch}",
                f"use the {self.arch} directory of the repository",
                exit_code=2,
            )
        kind = plan.LATEST if ref.version == "latest" else plan.PINNED
        art = self.resolve(ref.name, ref.repository, ref.version, kind, "stable", None)
        record: dict[str, object] = {
            "version_kind": kind,
            "track_stream": "stable",
            "repository": ref.repository,
            **self.verification(art),
        }
        return Job(art.name, art.version, art.url, None, art.sha256, art.size, record)

    @staticmethod
    def from_tarball(
        path: str,
        profile: str | None = None,
        loaded: manifest.Manifest | None = None,
        verification: str = "none",
    ) -> Job:
        """A tarball installed as given: `none` (the admin named it), or `inbox` (root's
        inbox, where Ignition put it after checking the config's hash of it)."""
        parsed = repo.split_artifact_name(os.path.basename(path))
        if parsed is None:
            raise LayershellError(
                f"{path}: a package file is named <name>_<version>.tar[.gz|.xz|.zst]",
                "rename it, e.g. goss_v0.0.1.tar.gz",
                exit_code=2,
            )
        name, version, _ = parsed
        # Installed as given: the admin named the file (the inbox's is covered by the
        # hash in the Ignition config that put it there, docs/security.md).
        verified = {"verification": verification}
        record: dict[str, object] = {"version_kind": "file", "verified": verified}
        spec = loaded.get(name) if loaded is not None else None
        if spec is not None:
            # A tarball the manifest names (the inbox, after Ignition): the manifest says
            # how it is exposed; the path's profile, if any, wins for the profile.
            record = {
                **spec_record(spec, loaded.repository_for(spec) if loaded else None),
                "version_kind": "file",
                "verified": verified,
            }
        if profile is not None:
            record["profile"] = profile
        return Job(name, version, None, os.path.abspath(path), None, None, record)


def plan_jobs(
    planner: Planner,
    requests: list[str],
    loaded: manifest.Manifest | None,
    target: Target,
    *,
    profile: str | None = None,
    rootless: bool = False,
) -> list[Job]:
    """Every request resolved before anything is fetched; the first problem stops it."""
    jobs: list[Job] = []
    if not requests:
        if loaded is None:
            raise LayershellError(
                "nothing to install", "name packages, references or tarballs, or use --config"
            )
        specs = list(loaded.packages)
    else:
        specs = []
        for text in requests:
            if "://" in text or text.startswith("file:"):
                jobs.append(planner.from_reference(text))
            elif os.path.isfile(text) and text.endswith((".yaml", ".yml")):
                raise LayershellError(
                    f"{text} is a manifest, not a package",
                    f"install what it lists with: core install --config {text}",
                    exit_code=2,
                )
            elif os.path.isfile(text):
                jobs.append(planner.from_tarball(text, profile, loaded))
            elif loaded is not None and loaded.get(text) is not None:
                specs.append(loaded.get(text))  # type: ignore[arg-type]
            else:
                where = f" in {loaded.file}" if loaded else ""
                raise LayershellError(
                    f"{text!r} is not a reference, a tarball, or a package{where}",
                    "a reference looks like https://repo/x86_64/goss_v0.0.1",
                    exit_code=2,
                )
    for spec in specs:
        # Rootless mode maps every layer to the caller, so `user:` names nobody else.
        if rootless:
            pass
        elif spec.user is not None and spec.user != target.account:
            raise LayershellError(
                f"{loaded.file if loaded else ''}:{spec.line}: package {spec.name} is for "
                f"user {spec.user}, but layer {target.layer.name} belongs to {target.account}",
                "set user: to the layer's account, or leave it out",
                exit_code=2,
            )
        assert loaded is not None
        jobs.append(planner.from_spec(spec, loaded.repository_for(spec)))
    return jobs


def _copy_cap(cache_dir: str) -> int:
    """How much of a local tarball may be copied: no more than unpacking could ever
    accept, and never the last gigabyte (or 5%) of the cache's filesystem."""
    os.makedirs(cache_dir, exist_ok=True)
    st = os.statvfs(cache_dir)
    free, size = st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize
    return max(0, min(unpack.Limits().max_total_bytes, free - min(size // 20, 1 << 30)))


def _source(fetcher: fetch.Fetcher, job: Job) -> Source:
    """Fetch (verified against the sha256 before it enters the cache) or hash a tarball."""
    if job.url is not None:
        path = fetcher.fetch(job.url, sha256=job.sha256, size=job.size, name=job.name)
        digest = job.sha256 or os.path.basename(path)
    else:
        assert job.tarball is not None
        # Hashed as it is copied: the copy, not the named file, is what gets unpacked.
        local = os.path.join(fetcher.cache_dir, install.LOCAL_COPIES)
        path, digest = verify.private_copy(job.tarball, local, _copy_cap(fetcher.cache_dir))
        if job.sha256 is not None and digest != job.sha256.lower():
            os.unlink(path)
            raise verify.HashMismatch(job.name, job.tarball, job.sha256.lower(), digest)
    return Source(job.name, job.version, path, digest, os.path.getsize(path), job.origin, job.spec)


@dataclass(frozen=True)
class Session:
    """The layer's operation lock, held: its record open and its tree reconciled."""

    target: Target
    db: State
    lock_fd: int  # install.sh inherits it: the lock stays held while a script lives


@contextmanager
def locked(target: Target, what: str, *, no_wait: bool = False, log: Log) -> Iterator[Session]:
    """Hold the layer's lock for one whole operation (`what`, e.g. "core remove", is
    what a process waiting for it is told): plan, act and expose inside it."""
    with lock.held(target.lock_file, no_wait=no_wait, waiting=log, what=what) as lock_fd:
        # The last operation left the layer settled and nothing changed since: no pass
        # over every installed package (settled.py). Asked before the database is
        # opened, which makes its WAL.
        unchanged = settled.clean(target)
        with State(target.database) as db:
            if not unchanged:
                install.reconcile(target, db, log)
            settled.take(target)
            yield Session(target, db, lock_fd)
        settled.leave(target)  # not reached when the operation raised


def install_jobs(
    session: Session,
    jobs: list[Job],
    fetcher: fetch.Fetcher,
    *,
    log: Log,
    script_timeout: float | None = None,  # None: the layer's limits.script_timeout
) -> Report:
    """Fetch and install planned jobs, each package on its own (see the module's text)."""
    outcomes: list[Outcome] = []
    failures: list[Failure] = []
    target, db = session.target, session.db
    for job in jobs:
        src = None
        try:
            src = _source(fetcher, job)
            faults.checkpoint("fetched")
            outcomes.append(
                install.install(
                    target, src, db, script_timeout=script_timeout, log=log,
                    lock_fd=session.lock_fd,
                )
            )  # fmt: skip
        except LayershellError as exc:
            if src is not None and job.tarball is not None:
                # Name the file the user gave, not its private copy (_source).
                exc.message = exc.message.replace(src.archive, job.tarball)
            failures.append(Failure(job.name, exc))
        except (OSError, sqlite3.Error) as exc:
            # A full disk or a database error ends this package, not the run.
            failures.append(Failure(job.name, _os_failure(exc)))
        finally:
            if src is not None and job.tarball is not None:
                os.unlink(src.archive)  # the private copy (_source)
    return Report(tuple(outcomes), tuple(failures))


def run(
    target: Target,
    jobs: list[Job],
    fetcher: fetch.Fetcher,
    *,
    no_wait: bool = False,
    log: Log,
    script_timeout: float | None = None,
) -> Report:
    """Install jobs planned without the record (a tarball from the inbox), under the lock.
    Jobs that depend on what is installed are planned inside `locked` instead."""
    with locked(target, "core install", no_wait=no_wait, log=log) as session:
        return install_jobs(session, jobs, fetcher, log=log, script_timeout=script_timeout)


def _os_failure(exc: OSError | sqlite3.Error) -> LayershellError:
    """What a failure of the system says, with the file it concerns and what to do."""
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        text = f"{exc.strerror or exc}{where}"
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return LayershellError(
                text + "; the package was not installed",
                "free space there: core gc --partial (unfinished downloads), core gc "
                "(inactive versions), core remove NAME; then run it again",
            )
        return LayershellError(text, "the package was not installed; see the message")
    return LayershellError(f"the state database: {exc}", "core repair (or core repair --rebuild)")


def remove(session: Session, names: list[str]) -> list[tuple[str, str]]:
    """Every installed version of each package; none if any of them is not installed."""
    target, db = session.target, session.db
    missing = [n for n in names if not db.versions(n)]
    if missing:
        raise NotInstalled(missing, target.layer.name, {r.name for r in db.all()})
    removed: list[tuple[str, str]] = []
    for name in names:
        removed += [(name, v) for v in install.remove(target, db, name)]
    holds.forget(target, names)
    return removed
