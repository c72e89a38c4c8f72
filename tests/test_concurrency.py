"""Issue 11: operations on one layer that run at the same time serialize. Each one plans
and acts under the layer's lock, so the outcome of any mix is that of some sequential
order, and each command says only what it did. Rootless, real processes, real files, a
real SQLite record and a file:// repository."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.packages import Repository, program
from tests.support import Identity, python_cmd

NAMES = [f"p{i}" for i in range(10)]


def core(ident: Identity, *args: str) -> subprocess.CompletedProcess[bytes]:
    return ident.run(python_cmd(*args), timeout=120)


@dataclass(frozen=True)
class Done:
    """What one command did: its exit status and its output lines (stdout, stderr)."""

    args: tuple[str, ...]
    code: int
    out: tuple[str, ...]
    err: tuple[str, ...]


def start(ident: Identity, args: tuple[str, ...], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ident.argv(python_cmd(*args)),
        env={**ident.env, **env},
        cwd=str(ident.home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def finish(args: tuple[str, ...], proc: subprocess.Popen[bytes]) -> Done:
    out, err = proc.communicate(timeout=120)
    return Done(args, proc.returncode, lines(out), lines(err))


def lines(data: bytes) -> tuple[str, ...]:
    return tuple(data.decode(errors="replace").splitlines())


def run_together(
    ident: Identity, ops: list[tuple[str, ...]], env: dict[str, str] | None = None
) -> list[tuple[Done, int]]:
    """Start every command at once; each one's result and pid."""
    procs = [start(ident, args, env or {}) for args in ops]
    return [(finish(args, p), p.pid) for args, p in zip(ops, procs, strict=True)]


def wait_for(predicate: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached")


HOLD = """\
import sys
from layershell import lock
with lock.held(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.read()
"""


def layer_lock(ident: Identity) -> Path:
    return ident.home / ".local/share/layershell/layers/arne/lock"


def blocked_on(path: Path) -> int:
    """How many processes wait for the flock on `path` (/proc/locks marks them "->")."""
    inode = f":{path.stat().st_ino} "
    with open("/proc/locks", encoding="ascii") as f:
        return sum(1 for line in f if " -> FLOCK " in line and inode in line)


def run_gated(ident: Identity, ops: list[tuple[str, ...]]) -> list[Done]:
    """Start the commands while another process holds the layer's lock, and let it go
    once every one of them waits for it: all are surely under way at once, and the
    kernel picks which goes first."""
    gate = ident.popen(
        [sys.executable, "-c", HOLD, str(layer_lock(ident))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert gate.stdin is not None and gate.stdout is not None
    try:
        assert gate.stdout.readline() == b"held\n"
        procs = [start(ident, args, {}) for args in ops]
        wait_for(lambda: blocked_on(layer_lock(ident)) == len(ops))
    finally:
        gate.communicate(timeout=60)
    return [finish(args, p) for args, p in zip(ops, procs, strict=True)]


def active(ident: Identity) -> dict[str, str]:
    r = core(ident, "list", "--json")
    assert r.returncode == 0, r.stderr.decode()
    return {row["name"]: row["version"] for row in json.loads(r.stdout)}


def repository(ident: Identity, shared_dir: Path) -> tuple[Repository, str]:
    """p0..p9, version 1 published and installed, every one following latest."""
    repo = Repository(shared_dir / "repo")
    publish(repo, "1", NAMES)
    config = shared_dir / "composable.yaml"
    entries = "".join(f"    - name: {n}\n      version: latest\n" for n in NAMES)
    config.write_text(f"composable:\n  default_repository: {repo.file_url}\n  packages:\n{entries}")
    config.chmod(0o644)
    r = core(ident, "install", "--config", str(config))
    assert r.returncode == 0, r.stderr.decode()
    assert active(ident) == dict.fromkeys(NAMES, "1")
    return repo, str(config)


def publish(repo: Repository, version: str, names: list[str]) -> None:
    for name in names:
        repo.add(name, version, program(name, version))
    repo.index()


UPDATED = re.compile(r"updated (\S+) to (\S+)")


def updated(done: Done) -> list[tuple[str, str]]:
    return [(m[1], m[2]) for line in done.out if (m := UPDATED.fullmatch(line))]


def test_an_update_does_not_undo_a_concurrent_remove(
    fresh_rootless: Identity, shared_dir: Path
) -> None:
    """The defect as found: `core update & core remove p0` said "removed p0 1", and then
    the update, planned before the remove, installed p0 2 again. Each round starts both
    while the lock is taken, so both are under way at once whatever the machine's load."""
    ident = fresh_rootless
    repo, _ = repository(ident, shared_dir)
    for round_ in range(9):
        version, victim = str(round_ + 2), NAMES[round_]
        publish(repo, version, NAMES)
        ops: list[tuple[str, ...]] = [("update",), ("remove", victim)]
        first = round_ % 2  # either may start (and so queue) first
        done = {d.args[0]: d for d in run_gated(ident, ops[first:] + ops[:first])}
        upd, rem = done["update"], done["remove"]
        now = active(ident)
        said = f"round {round_}: update {upd}, remove {rem}, now {now}"
        assert upd.code == 0 and rem.code == 0, said
        assert any(line.startswith(f"removed {victim} ") for line in rem.out), said
        assert victim not in now, said
        for name, new in updated(upd):
            # True when said: the package is at that version, or the remove that came
            # after it removed that very version.
            assert now.get(name) == new or f"removed {name} {new}" in rem.out, said


def test_a_second_concurrent_update_reports_only_what_it_changed(
    fresh_rootless: Identity, shared_dir: Path
) -> None:
    ident = fresh_rootless
    repo, _ = repository(ident, shared_dir)
    for round_ in range(4):
        version = str(round_ + 2)
        publish(repo, version, NAMES)
        one, two = run_gated(ident, [("update",), ("update",)])
        said = f"round {round_}: {one}, {two}"
        assert one.code == 0 and two.code == 0, said
        assert active(ident) == dict.fromkeys(NAMES, version), said
        # Each package moved once, so exactly one of the two says it moved it.
        told = Counter(updated(one) + updated(two))
        assert told == Counter((n, version) for n in NAMES), said
        quiet = [d for d in (one, two) if not updated(d)]
        assert all("everything is up to date" in d.out for d in quiet), said
