"""Updates: newer versions on a package's stream, installed side by side and switched to
atomically; rollback to an installed version; garbage collection.

Every one of them plans and acts under one hold of the layer's lock (pipeline.locked):
an update resolves what the record holds at that moment, so it never installs a package
another operation removed meanwhile, and never reports a move another update made.

The switch is the install's own: one database transaction makes the new version active,
then the /opt/pkgs/<name> link (and with it every shim) moves, then root reattaches a
portable service. layershell's record is the truth throughout: reconcile puts the link
back in line after a crash, and the exposure sync attaches what the record says.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from layershell.errors import LayershellError, NotInstalled, suggest
from layershell.packages import fetch, install
from layershell.packages.holds import read_holds
from layershell.packages.pipeline import Job, Planner, Recorded, Report, Session, install_jobs
from layershell.packages.state import Installed, State
from layershell.packages.target import Target

FOLLOWING = ("latest", "os")  # version kinds an update moves
KEEP = 1  # previous versions kept, by update and by gc alike (core rollback needs one)
Log = Callable[[str], None]


@dataclass(frozen=True)
class Step:
    """One package's update: from `current` to `new` (None: nothing newer)."""

    name: str
    current: str
    new: str | None
    stream: str
    kind: str
    repository: str
    job: Job | None = None
    error: str = ""

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "current": self.current,
            "new": self.new,
            "stream": self.stream,
            "version_kind": self.kind,
            "repository": self.repository,
            "error": self.error or None,
        }


def plan(
    rows: list[Installed],
    planner: Planner,
    names: set[str] | None = None,
    *,
    os_only: bool = False,
    held: Mapping[str, str] | None = None,
    holds: Mapping[str, str] | None = None,
    layer: str = "",
) -> list[Step]:
    """Resolve every active package that follows a stream (or the OS) again. `held`:
    package -> a version whose service failed to start; an update does not retry it
    (a daily timer would flip to it and back every day); `core install` does. `holds`:
    packages held where they are (core hold, a rollback) until core unhold. A name in
    `names` that `rows` do not have is a typo (NotInstalled), not "up to date"."""
    known = {r.name for r in rows}
    missing = sorted(names - known) if names is not None else []
    if missing:
        raise NotInstalled(missing, layer, known)
    steps: list[Step] = []
    for row in sorted((r for r in rows if r.active), key=lambda r: r.name):
        recorded = Recorded.of(row.spec)
        kind = recorded.version_kind.value if recorded.version_kind is not None else ""
        if names is not None and row.name not in names:
            continue
        if holds and row.name in holds:
            steps.append(Step(row.name, row.version, None, "", kind, "", None,
                              f"held at {row.version} (core unhold {row.name})"))  # fmt: skip
            continue
        if kind not in FOLLOWING or (os_only and kind != "os"):
            if names is not None:
                steps.append(Step(row.name, row.version, None, "", kind, "", None,
                                  f"pinned ({kind or 'file'}): nothing to follow"))  # fmt: skip
            continue
        repository = recorded.repository or ""
        stream = recorded.track_stream.value
        # The keys the install was restricted to, unless the host's manifest says now.
        planner.trust.adopt(repository, recorded.verified)
        try:
            art = planner.resolve(row.name, repository, kind, kind, stream, None)
        except LayershellError as exc:
            steps.append(Step(row.name, row.version, None, stream, kind, repository, None,
                              exc.message))  # fmt: skip
            continue
        if art.version == row.version:
            steps.append(Step(row.name, row.version, None, stream, kind, repository))
            continue
        if held and held.get(row.name) == art.version:
            steps.append(Step(row.name, row.version, None, stream, kind, repository, None,
                              f"held at {row.version}: {art.version}'s service did not start "
                              f"(core install {row.name} to retry)"))  # fmt: skip
            continue
        spec = {**row.spec, **planner.verification(art)}
        job = Job(art.name, art.version, art.url, None, art.sha256, art.size, spec)
        steps.append(Step(row.name, row.version, art.version, stream, kind, repository, job))
    return steps


@dataclass(frozen=True)
class Result:
    """What an update found (every step) and what it changed (the report)."""

    steps: list[Step]
    report: Report


def apply(
    session: Session,
    planner: Planner,
    fetcher: fetch.Fetcher,
    names: set[str] | None = None,
    *,
    os_only: bool = False,
    held: Mapping[str, str] | None = None,
    keep: int | None = None,
    log: Log,
) -> Result:
    """Plan from the record as it is under the lock, install what moved, and with `keep`
    prune what came before (root prunes itself, once the new services run)."""
    holds = read_holds(session.target)
    steps = plan(
        session.db.all(), planner, names, os_only=os_only, held=held, holds=holds,
        layer=session.target.layer.name,
    )  # fmt: skip
    jobs = [s.job for s in steps if s.job is not None]
    report = install_jobs(session, jobs, fetcher, log=log)
    if keep is not None:
        # Every package looked at, not only those that moved: an update killed between
        # its install and its prune left the old versions, and the next one, with
        # nothing newer to install, must still remove them (test_crash_random).
        failed = {f.name for f in report.failures}
        names_seen = {s.name for s in steps if not s.error} | {o.name for o in report.outcomes}
        names_seen |= {s.name for s in steps if s.name in holds}  # held, still pruned
        for name in sorted(names_seen - failed):
            prune(session.target, session.db, name, keep, log)
    return Result(steps, report)


def prune(
    target: Target, db: State, name: str, keep: int, log: Log, held: str | None = None
) -> list[str]:
    """Remove inactive versions of `name` beyond the `keep` most recently installed. A
    `held` version (its service did not start) goes first and does not count: the
    version to go back to is a good one."""
    inactive = sorted(
        (r for r in db.versions(name) if not r.active), key=lambda r: r.installed_at, reverse=True
    )
    doomed = [r for r in inactive if r.version == held]
    doomed += [r for r in inactive if r.version != held][keep:]
    removed = []
    for row in doomed:
        install.remove(target, db, name, row.version)
        why = "its service did not start" if row.version == held else f"keeping {keep} previous"
        log(f"removed {name} {row.version} ({why})")
        removed.append(row.version)
    return removed


def rollback(session: Session, name: str, to: str | None, *, log: Log) -> tuple[str, str]:
    """Make an installed version active again: `to`, else the one installed before the
    active one. Returns (from, to)."""
    target, db = session.target, session.db
    versions = sorted(db.versions(name), key=lambda r: r.installed_at)
    active = next((r for r in versions if r.active), None)
    if not versions or active is None:
        raise NotInstalled([name], target.layer.name, {r.name for r in db.all()})
    if to is None:
        older = [r for r in versions if r.installed_at < active.installed_at]
        if not older:
            raise LayershellError(
                f"{name} {active.version} is the oldest installed version",
                f"installed: {', '.join(r.version for r in versions)}",
            )
        chosen = older[-1]
    else:
        found = [r for r in versions if r.version == to]
        if not found:
            have = [r.version for r in versions]
            raise LayershellError(
                f"{name} {to} is not installed",
                suggest(to, have) or f"installed: {', '.join(have)}",
                exit_code=2,  # a version named that is not there: bad input
            )
        chosen = found[0]
    if chosen.version == active.version:
        return active.version, chosen.version
    for path, what in install.recheck(target, name, chosen.version).stripped:
        log(f"note: {name}: {path}: {what}")
    with db.transaction():
        db.record(chosen, activate=True)
        db.event(name, chosen.version, "rollback", f"from {active.version}")
    install.switch_link(target, name, chosen.version)
    return active.version, chosen.version


PARTIAL_AGE = 86400.0  # s: an unfinished download older than a day is not coming back


def gc(session: Session, *, keep: int = KEEP) -> list[str]:
    """Remove inactive versions (all but `keep` per package), download-cache entries
    that no installed version uses, and unfinished downloads older than a day (all of
    them: `core gc --partial`, which needs no database)."""
    target, db = session.target, session.db
    done = fetch.prune_cache(target.cache_dir, older_than=PARTIAL_AGE)
    for name in sorted({r.name for r in db.all()}):
        # prune's one line is "removed X" for an update's log; gc returns the removals,
        # and its command prints each once.
        done += [f"{name} {v}" for v in prune(target, db, name, keep, lambda _line: None)]
    used = {r.sha256 for r in db.all()}
    cache = os.path.join(target.cache_dir, "sha256")
    try:
        entries = os.listdir(cache)
    except FileNotFoundError:
        entries = []
    for entry in entries:
        if entry not in used:
            os.unlink(os.path.join(cache, entry))
            done.append(f"cache {entry[:12]}")
    return done
