"""The inbox: /opt/inbox/<profile>/<user>/<name>_<version>.tar.* dropped by Ignition or
by hand. The path says everything: the security profile, the layer account that installs
it, and the package name and version. Nothing is guessed: a path that does not say it
clearly is reported and left alone, or moved to failed/ with the reason.

Each tarball, installed or refused, moves to `done/` or `failed/` beside it (failed/ also
gets `<file>.reason`), so running the inbox again is a no-op, and a bad tarball never
stops the ones after it.

Root runs this and installs what it finds with the profile its directory names, so the
inbox is only believed where root alone could have written it: the tarball and every
directory level (inbox, profile, user) must belong to root and be writable by nobody
else. Anything else is refused to failed/ with the reason. Every step goes through
directory descriptors (safepath), and no link in the inbox is followed.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass

from layershell import safepath
from layershell.packages import repo
from layershell.packages.manifest import Profile
from layershell.text import printable

DONE, FAILED = "done", "failed"


@dataclass(frozen=True)
class Drop:
    path: str
    profile: str
    user: str
    name: str
    version: str


@dataclass(frozen=True)
class Settled:
    path: str  # where the tarball went
    ok: bool
    reason: str


@dataclass(frozen=True)
class Scan:
    drops: tuple[Drop, ...]
    refused: tuple[tuple[str, str], ...]  # (path, reason): named badly, to move to failed/
    ignored: tuple[tuple[str, str], ...]  # (path, reason): not ours to move; reported only


TRUST_HINT = (
    "only root may write the inbox: chown root and chmod go-w the directory or tarball, "
    "then drop the tarball again"
)


def _level_problem(d: safepath.Dir) -> str:
    """Why root cannot take this inbox directory's word for what it holds, or ''."""
    why = safepath.why_untrusted(d.st)
    if why:
        return f"{d.path} is {why}"
    if not d.trusted:
        return f"a directory above {d.path} can be changed by someone other than root"
    return ""


def _file_problem(path: str, st: os.stat_result) -> str:
    why = safepath.why_untrusted(st)
    return f"{path} is {why}, not root's alone ({TRUST_HINT})" if why else ""


def _area_problem(udir: safepath.Dir) -> str:
    """done/ and failed/ must be directories root alone can change (or missing)."""
    for area in (DONE, FAILED):
        st = udir.lstat(area)
        path = os.path.join(udir.path, area)
        if st is None:
            continue
        if not stat.S_ISDIR(st.st_mode):
            kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a directory"
            return f"{path} is {kind}: the inbox moves nothing there; remove it"
        why = safepath.why_untrusted(st)
        if why:
            return f"{path} is {why}: the inbox moves nothing there; remove it"
    return ""


def _subdirs(
    parent: safepath.Dir, ignored: list[tuple[str, str]], not_dir: str
) -> list[tuple[str, safepath.Dir]]:
    """(name, opened directory) of parent's entries; links and others only reported."""
    found = []
    for name in sorted(os.listdir(parent.fd)):
        path = os.path.join(parent.path, name)
        st = parent.lstat(name)
        if st is None:
            continue
        if stat.S_ISLNK(st.st_mode):
            ignored.append((path, "a symbolic link; the inbox follows none"))
            continue
        if not stat.S_ISDIR(st.st_mode):
            ignored.append((path, not_dir))
            continue
        try:
            found.append((name, parent.child(name)))
        except safepath.UnsafePath as exc:
            ignored.append((path, exc.message))
    return found


def scan(inbox_dir: str, users: set[str]) -> Scan:
    """What the inbox holds. Walked through descriptors, following no link; a tarball
    is installed only when root alone could have put it there: it and every directory
    level above it are root's and writable by nobody else (else refused, with why)."""
    drops: list[Drop] = []
    refused: list[tuple[str, str]] = []
    ignored: list[tuple[str, str]] = []
    try:
        top = safepath.walk(os.path.abspath(inbox_dir))
    except safepath.MissingPath:
        return Scan((), (), ())
    except safepath.UnsafePath as exc:
        return Scan((), (), ((inbox_dir, exc.message),))
    profiles = {p.value for p in Profile}
    with top:
        top_problem = _level_problem(top)
        for profile, pdir in _subdirs(
            top, ignored, "a file directly in the inbox; use <profile>/<user>/"
        ):
            with pdir:
                if profile not in profiles:
                    known = ", ".join(sorted(profiles))
                    ignored.append((pdir.path, f"unknown profile {profile!r}; use one of {known}"))
                    continue
                p_problem = top_problem or _level_problem(pdir)
                for user, udir in _subdirs(
                    pdir, ignored, "a file directly in a profile directory; use <user>/"
                ):
                    with udir:
                        if user not in users:
                            known = ", ".join(sorted(users))
                            ignored.append(
                                (udir.path, f"{user!r} owns no installing layer; known: {known}")
                            )
                            continue
                        area = _area_problem(udir)
                        if area:
                            ignored.append((udir.path, area))
                            continue
                        _scan_user(udir, profile, user, p_problem or _level_problem(udir),
                                   drops, refused)  # fmt: skip
    return Scan(tuple(drops), tuple(refused), tuple(ignored))


def _scan_user(
    udir: safepath.Dir,
    profile: str,
    user: str,
    problem: str,
    drops: list[Drop],
    refused: list[tuple[str, str]],
) -> None:
    for entry in sorted(os.listdir(udir.fd)):
        path = os.path.join(udir.path, entry)
        if entry in (DONE, FAILED) or entry.startswith("."):
            continue
        st = udir.lstat(entry)
        if st is None:
            continue
        if not stat.S_ISREG(st.st_mode):
            refused.append((path, "not a regular file"))
            continue
        if problem:
            refused.append((path, f"{problem}, not root's alone ({TRUST_HINT})"))
            continue
        why = _file_problem(path, st)
        if why:
            refused.append((path, why))
            continue
        parsed = repo.split_artifact_name(entry)
        if parsed is None:
            refused.append((path, "not named <name>_<version>.tar, .tar.gz, .tar.xz or .tar.zst"))
            continue
        name, version, _ = parsed
        drops.append(Drop(path, profile, user, name, version))


def settle(path: str, ok: bool, reason: str) -> Settled:
    """Move a processed tarball to done/ or failed/ (with <file>.reason) beside it.
    Through descriptors: done/ and failed/ are made by root, or must be root's already
    (UnsafePath otherwise), and nothing is written through a link."""
    directory, base = os.path.split(os.path.abspath(path))
    area_name = DONE if ok else FAILED
    with (
        safepath.walk(directory) as udir,
        udir.child(area_name, create=0o755, hint="remove it, then run core inbox again") as area,
    ):
        why = safepath.why_untrusted(area.st)
        if why:
            raise safepath.UnsafePath(
                f"{area.path} is {why}: the inbox moves nothing there", "remove it"
            )
        dest = base
        if area.lstat(dest) is not None:  # the same file dropped again later: keep both
            dest = f"{base}.{time.strftime('%Y%m%dT%H%M%S')}.{os.getpid()}"
        os.rename(base, dest, src_dir_fd=udir.fd, dst_dir_fd=area.fd)
        if not ok:
            # Read with cat: the reason carries a package's text (install.sh's last
            # lines, from the account's --json result with json's escapes undone, where
            # a lone surrogate is no UTF-8 either).
            text = printable(reason.rstrip("\n")) + "\n"
            data = text.encode(errors="backslashreplace")
            safepath.write_file(area, dest + ".reason", data, mode=0o644)
        return Settled(os.path.join(area.path, dest), ok, reason)


def process(
    inbox_dir: str,
    users: set[str],
    install: Callable[[list[Drop]], list[tuple[bool, str]]],
    log: Callable[[str], None],
) -> list[Settled]:
    """Install every drop; settle each; report what is not ours to touch. `install`
    takes the drops of one <profile>/<user> directory at once (one process of the
    account's for all of them) and says (ok, why) for each, in order.

    Scans again after each round until a scan finds nothing: a path unit does not start
    a run that is already going, so a tarball that lands during a run must be seen by
    that run."""
    results: list[Settled] = []
    reported: set[str] = set()
    stuck: set[str] = set()  # could not be moved: reported once, never retried

    def settled(path: str, ok: bool, reason: str) -> Settled:
        try:
            return settle(path, ok, reason)
        except (OSError, safepath.UnsafePath) as exc:
            stuck.add(path)
            why = exc.message if isinstance(exc, safepath.UnsafePath) else str(exc)
            log(f"inbox: cannot move {path} to {DONE if ok else FAILED}/: {why}")
            return Settled(path, False, f"{reason}; and not moved: {why}")

    for _ in range(100):
        found = scan(inbox_dir, users)
        for path, reason in found.ignored:
            if path not in reported:
                reported.add(path)
                log(f"inbox: skipped {path}: {reason}")
        refused = [(p, r) for p, r in found.refused if p not in stuck]
        drops = [d for d in found.drops if d.path not in stuck]
        if not drops and not refused:
            break
        for path, reason in refused:
            log(f"inbox: refused {path}: {reason}")
            results.append(settled(path, False, reason))
        groups: dict[tuple[str, str], list[Drop]] = {}
        for drop in drops:
            groups.setdefault((drop.user, drop.profile), []).append(drop)
        for group in groups.values():
            for drop, (ok, reason) in zip(group, install(group), strict=True):
                results.append(settled(drop.path, ok, reason))
                log(f"inbox: {'installed' if ok else 'failed'} {drop.path}: {reason}")
    return results
