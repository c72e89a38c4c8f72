"""The inbox: /opt/inbox/<profile>/<user>/<name>_<version>.tar.* dropped by Ignition or
by hand. The path says everything: the security profile, the layer account that installs
it, and the package name and version. Nothing is guessed: a path that does not say it
clearly is reported and left alone, or moved to failed/ with the reason.

Each tarball, installed or refused, moves to `done/` or `failed/` beside it (failed/ also
gets `<file>.reason`), so running the inbox again is a no-op, and a bad tarball never
stops the ones after it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from layershell import repo
from layershell.atomic import write_atomic
from layershell.manifest import Profile

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


def scan(inbox_dir: str, users: set[str]) -> Scan:
    drops: list[Drop] = []
    refused: list[tuple[str, str]] = []
    ignored: list[tuple[str, str]] = []
    if not os.path.isdir(inbox_dir):
        return Scan((), (), ())
    profiles = {p.value for p in Profile}
    for profile in sorted(os.listdir(inbox_dir)):
        pdir = os.path.join(inbox_dir, profile)
        if not os.path.isdir(pdir):
            ignored.append((pdir, "a file directly in the inbox; use <profile>/<user>/"))
            continue
        if profile not in profiles:
            ignored.append(
                (pdir, f"unknown profile {profile!r}; use one of {', '.join(sorted(profiles))}")
            )
            continue
        for user in sorted(os.listdir(pdir)):
            udir = os.path.join(pdir, user)
            if not os.path.isdir(udir):
                ignored.append((udir, "a file directly in a profile directory; use <user>/"))
                continue
            if user not in users:
                ignored.append(
                    (udir, f"{user!r} owns no installing layer; known: {', '.join(sorted(users))}")
                )
                continue
            for entry in sorted(os.listdir(udir)):
                path = os.path.join(udir, entry)
                if entry in (DONE, FAILED) or entry.startswith("."):
                    continue
                if not os.path.isfile(path) or os.path.islink(path):
                    refused.append((path, "not a regular file"))
                    continue
                parsed = repo.split_artifact_name(entry)
                if parsed is None:
                    refused.append(
                        (path, "not named <name>_<version>.tar, .tar.gz, .tar.xz or .tar.zst")
                    )
                    continue
                name, version, _ = parsed
                drops.append(Drop(path, profile, user, name, version))
    return Scan(tuple(drops), tuple(refused), tuple(ignored))


def settle(path: str, ok: bool, reason: str) -> Settled:
    """Move a processed tarball to done/ or failed/ (with <file>.reason) beside it."""
    area = os.path.join(os.path.dirname(path), DONE if ok else FAILED)
    os.makedirs(area, mode=0o755, exist_ok=True)
    base = os.path.basename(path)
    dest = os.path.join(area, base)
    if os.path.lexists(dest):  # the same file dropped again later: keep both
        dest = os.path.join(area, f"{base}.{time.strftime('%Y%m%dT%H%M%S')}.{os.getpid()}")
    os.rename(path, dest)
    if not ok:
        write_atomic(dest + ".reason", reason.rstrip("\n") + "\n", mode=0o644)
    return Settled(dest, ok, reason)


def process(
    inbox_dir: str,
    users: set[str],
    install_one: Callable[[Drop], tuple[bool, str]],
    log: Callable[[str], None],
) -> list[Settled]:
    """Install every drop; settle each; report what is not ours to touch.

    Scans again after each round until a scan finds nothing: a path unit does not start
    a run that is already going, so a tarball that lands during a run must be seen by
    that run."""
    results: list[Settled] = []
    reported: set[str] = set()
    for _ in range(100):
        found = scan(inbox_dir, users)
        for path, reason in found.ignored:
            if path not in reported:
                reported.add(path)
                log(f"inbox: skipped {path}: {reason}")
        if not found.drops and not found.refused:
            break
        for path, reason in found.refused:
            log(f"inbox: refused {path}: {reason}")
            results.append(settle(path, False, reason))
        for drop in found.drops:
            ok, reason = install_one(drop)
            results.append(settle(drop.path, ok, reason))
            log(f"inbox: {'installed' if ok else 'failed'} {drop.path}: {reason}")
    return results
