"""Issue 11: operations on one layer that run at the same time serialize. Each one plans
and acts under the layer's lock, so the outcome of any mix is that of some sequential
order, and each command says only what it did. Rootless, real processes, real files, a
real SQLite record and a file:// repository."""

from __future__ import annotations

import difflib
import json
import random
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from layershell import lock
from tests.packages import Repository, program, tarball
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


def test_a_waiting_operation_names_the_live_holder(
    fresh_rootless: Identity, shared_dir: Path
) -> None:
    """The pid in the lock file can be stale (a holder that has since released the lock
    wrote it, or one that died): the message names the process that holds the lock."""
    ident = fresh_rootless
    store = ident.home / ".local/share/layershell/layers/arne"
    pkgs = ident.home / ".local/share/layershell/pkgs"
    go = store / "home" / "go"  # install.sh's HOME is the layer's home
    slow = tarball(
        shared_dir / "slow_1.tar.gz",
        {**program("slow", "1"), "install.sh": 'while [ ! -e "$HOME/go" ]; do sleep 0.1; done\n'},
    )
    other = str(tarball(shared_dir / "other_1.tar.gz", program("other", "1")))
    holder = ident.popen(
        python_cmd("install", str(slow)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    decoy = subprocess.Popen(["sleep", "600"])  # alive, and holds nothing
    waiter = None
    try:
        # The tree is renamed into place under the lock, then install.sh waits for "go".
        wait_for(lambda: (pkgs / "slow_1").exists())
        r = core(ident, "install", "--no-wait", other)
        assert r.returncode == 75
        assert f"(core install, pid {holder.pid})" in r.stderr.decode(), r.stderr.decode()
        (store / "lock").write_text(f"{decoy.pid}\n")  # stale: not the holder's pid
        r = core(ident, "install", "--no-wait", other)
        assert r.returncode == 75
        assert f"pid {holder.pid}" in r.stderr.decode(), r.stderr.decode()
        assert str(decoy.pid) not in r.stderr.decode()
        waiter = ident.popen(
            python_cmd("install", other), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert waiter.stderr is not None
        line = waiter.stderr.readline().decode()
        assert "waiting for" in line and f"pid {holder.pid})" in line, line
        assert str(decoy.pid) not in line
        go.touch()
        assert holder.wait(timeout=60) == 0
        _, err = waiter.communicate(timeout=60)
        assert waiter.returncode == 0, err.decode()
    finally:
        go.touch()
        decoy.kill()
        decoy.wait()
        for proc in (holder, waiter):
            if proc is not None:
                proc.kill()
                proc.communicate()
    assert active(ident) == {"slow": "1", "other": "1"}


# The acceptance test: random mixes of every operation, replayed one by one.

FETCH_TIME = re.compile(r" in [0-9.]+ s$")


def operation(rng: random.Random, config: str) -> tuple[str, ...]:
    name = rng.choice(NAMES)
    kind = rng.choice(["install", "update", "remove", "gc", "rollback"])
    if kind == "install":
        return ("install", "--config", config, name)
    if kind == "update":
        return rng.choice([("update",), ("update", name)])
    if kind == "remove":
        return ("remove", name)
    if kind == "gc":
        return rng.choice([("gc",), ("gc", "--keep", "1")])
    return ("rollback", name)


def said(done: Done) -> tuple[int, tuple[str, ...], tuple[str, ...]]:
    """What a command said, but for waiting (only a concurrent run waits) and timings."""
    err = tuple(FETCH_TIME.sub(" in T s", x) for x in done.err if not x.startswith("waiting for"))
    return done.code, done.out, err


def layer_state(ident: Identity) -> list[str]:
    """The record (`core list --json --all`, but for install times), the package trees
    and the shims, one line each."""
    r = core(ident, "list", "--json", "--all")
    assert r.returncode == 0, r.stderr.decode()
    rows = []
    for row in json.loads(r.stdout):
        verified = row.get("spec", {}).get("verified")
        if isinstance(verified, dict):
            verified.pop("at", None)  # when it was checked, like installed_at
        rows.append(json.dumps({k: v for k, v in row.items() if k != "installed_at"},
                               sort_keys=True))  # fmt: skip
    pkgs = ident.home / ".local/share/layershell/pkgs"
    bin_dir = ident.home / ".local/bin"
    trees = [f"tree {p.name}" for p in pkgs.iterdir() if not p.name.startswith(".")]
    return sorted(rows) + sorted(trees) + sorted(f"shim {p.name}" for p in bin_dir.iterdir())


def differ(a: list[str], b: list[str]) -> str:
    return "\n".join(difflib.unified_diff(a, b, "together", "one by one", lineterm=""))


def restore(ident: Identity, template: Path) -> None:
    shutil.rmtree(ident.home)
    subprocess.run(["cp", "-a", str(template), str(ident.home)], check=True)


def test_twenty_concurrent_mixed_operations_equal_a_sequential_order(
    fresh_rootless: Identity, shared_dir: Path
) -> None:
    ident = fresh_rootless
    repo, config = repository(ident, shared_dir)
    publish(repo, "2", NAMES)
    assert core(ident, "update", *NAMES[:5]).returncode == 0  # p0..p4: 1 and 2 installed
    publish(repo, "3", NAMES[:3])
    template = shared_dir / "template"
    subprocess.run(["cp", "-a", str(ident.home), str(template)], check=True)
    for seed in range(10):
        rng = random.Random(seed)
        ops = [operation(rng, config) for _ in range(20)]
        restore(ident, template)
        order_file = shared_dir / f"order-{seed}"
        order_file.touch(mode=0o666)
        order_file.chmod(0o666)
        together = run_together(ident, ops, {lock.ORDER_ENV: str(order_file)})
        after_together = layer_state(ident)
        took = [
            int(pid)
            for pid, path in (line.split(" ", 1) for line in order_file.read_text().splitlines())
            if path == str(layer_lock(ident))
        ]
        index = {pid: i for i, (_, pid) in enumerate(together)}
        order = [index[pid] for pid in dict.fromkeys(took) if pid in index]
        replay = f"seed {seed}: in lock order: {[ops[i] for i in order]}"
        assert sorted(order) == list(range(len(ops))), f"{replay}: each takes the lock"
        restore(ident, template)
        alone = {i: finish(ops[i], start(ident, ops[i], {})) for i in order}
        for i in order:
            assert said(together[i][0]) == said(alone[i]), f"{replay}: {ops[i]}"
        after_alone = layer_state(ident)
        assert after_together == after_alone, f"{replay}\n{differ(after_together, after_alone)}"
        assert sorted(Counter(took).values()) == [1] * len(ops), f"{replay}: once each"
