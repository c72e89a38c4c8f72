"""Issue 11, acceptance: SIGKILL at 50 random moments of install, update, remove and gc.

Each kill is followed by `core list` without any repair, which must succeed and agree
with the package tree, and with what the shim runs; then by the next operation, after
which the layer is exactly as if the killed one had run (or never started). The random
moments come from a seeded generator: a failure names its seed, operation and delay, so
`SEED=... pytest tests/test_crash_random.py` replays it. Rootless, real processes and
files, a real SQLite database, a file:// repository."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.packages import ARCH, Repository, program
from tests.support import Identity, python_cmd

POINTS = 50
SEED = int(os.environ.get("SEED", "20261201"))


def core(ident: Identity, *args: str) -> subprocess.CompletedProcess[bytes]:
    return ident.run(python_cmd(*args), timeout=180)


def pkgs(ident: Identity) -> Path:
    return ident.home / ".local/share/layershell/pkgs"


class Layer:
    """The identity's layer, with the checks every kill is followed by."""

    def __init__(self, ident: Identity, repo: Repository, label: str) -> None:
        self.ident, self.repo, self.label = ident, repo, label

    def url(self, name: str, version: str) -> str:
        return f"{self.repo.file_url}/{ARCH}/{name}_{version}"

    def publish(self, name: str, version: str) -> None:
        self.repo.add(name, version, program(name, version))
        self.repo.index()

    def ok(self, *args: str) -> str:
        r = core(self.ident, *args)
        assert r.returncode == 0, f"{self.label}: core {' '.join(args)}: {r.stderr.decode()}"
        return r.stdout.decode()

    def killed(self, delay: float, *args: str) -> bool:
        """Run `core ARGS`, SIGKILL it after `delay` s; True if it was killed."""
        proc = self.ident.popen(
            python_cmd(*args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=120)
        assert b"Traceback" not in err, f"{self.label}: {err.decode()}"
        return proc.returncode == -signal.SIGKILL

    def rows(self) -> list[dict[str, object]]:
        r = core(self.ident, "list", "--json", "--all")
        err = r.stderr.decode()
        assert r.returncode == 0 and "Traceback" not in err, f"{self.label}: core list: {err}"
        rows: list[dict[str, object]] = json.loads(r.stdout)
        return rows

    def active(self) -> dict[str, str]:
        return {str(r["name"]): str(r["version"]) for r in self.rows() if r["active"]}

    def consistent(self, *, settled: bool) -> dict[str, str]:
        """list agrees with the tree and the shims; `settled` (after an operation that
        ran to its end): no leftover of an interrupted one either."""
        rows = self.rows()
        recorded = {f"{r['name']}_{r['version']}" for r in rows}
        trees = {p.name for p in pkgs(self.ident).iterdir() if "_" in p.name and p.is_dir()}
        assert recorded <= trees, f"{self.label}: recorded without a tree: {recorded - trees}"
        marks = pkgs(self.ident) / ".records"
        for extra in trees - recorded:
            # An interrupted install's tree: its record never said committed.
            assert not settled, f"{self.label}: left over after an operation: {extra}"
            assert not (marks / f"{extra}.json").exists(), f"{self.label}: {extra} lost"
        active: dict[str, str] = {}
        for r in rows:
            if r["active"]:
                active[str(r["name"])] = str(r["version"])
        for name, version in active.items():
            run = self.ident.run([name])
            said = run.stdout.decode().strip()
            assert said == f"{name} {version}", f"{self.label}: list says {version}: {said!r}"
        if settled:
            staging = pkgs(self.ident) / ".staging"
            assert not staging.exists() or not any(staging.iterdir()), self.label
        return active


def delays(rng: random.Random, longest: float) -> list[float]:
    return [rng.uniform(0.0, longest) for _ in range(POINTS)]


def timed(layer: Layer, *args: str, before: object = None) -> float:
    """How long the operation takes here: the shortest of three runs (`before` readies
    each), so the random moments fall inside it."""
    took = []
    for _ in range(3):
        if callable(before):
            before()
        start = time.monotonic()
        layer.ok(*args)
        took.append(time.monotonic() - start)
    return min(took)


@pytest.fixture
def layer(fresh_rootless: Identity, shared_dir: Path, request: pytest.FixtureRequest) -> Layer:
    return Layer(fresh_rootless, Repository(shared_dir / "repo"), request.node.name)


def test_install(layer: Layer) -> None:
    rng = random.Random(f"{SEED}-install")
    layer.publish("tool", "0")
    layer.ok("install", layer.url("tool", "0"))
    # A fresh install each time (the same one again would be "unchanged"): remove first.
    longest = timed(
        layer, "install", layer.url("tool", "0"), before=lambda: layer.ok("remove", "tool")
    )
    kills = 0
    for i, delay in enumerate(delays(rng, longest), start=1):
        layer.label = f"install seed={SEED} point={i} delay={delay:.3f}s"
        layer.publish("tool", str(i))
        kills += layer.killed(delay, "install", layer.url("tool", str(i)))
        before = layer.consistent(settled=False)["tool"]
        assert before in (str(i - 1), str(i)), layer.label
        layer.ok("install", layer.url("tool", str(i)))
        assert layer.consistent(settled=True) == {"tool": str(i)}, layer.label
        if i % 10 == 0:
            layer.ok("gc", "--keep", "0")  # keep the tree small; gc has its own test
    assert kills >= POINTS * 3 // 5  # the points fell inside the operation


def test_update(layer: Layer) -> None:
    rng = random.Random(f"{SEED}-update")
    config = layer.ident.home / "composable.yaml"
    config.write_text(
        f"composable:\n  default_repository: {layer.repo.file_url}\n  packages:\n"
        "    - name: tool\n      version: latest\n      track_stream: stable\n"
    )
    layer.publish("tool", "0")
    layer.ok("install", "--config", str(config))
    versions = iter(range(1, 4))
    longest = timed(layer, "update", before=lambda: layer.publish("tool", str(next(versions))))
    kills = 0
    for i, delay in enumerate(delays(rng, longest), start=4):
        layer.label = f"update seed={SEED} point={i - 3} delay={delay:.3f}s"
        layer.publish("tool", str(i))
        kills += layer.killed(delay, "update")
        assert layer.consistent(settled=False)["tool"] in (str(i - 1), str(i)), layer.label
        layer.ok("update")
        assert layer.consistent(settled=True) == {"tool": str(i)}, layer.label
        kept = {str(r["version"]) for r in layer.rows()}
        assert kept <= {str(i - 1), str(i), str(i - 2)}, (layer.label, kept)
    assert kills >= POINTS * 3 // 5


def test_remove(layer: Layer) -> None:
    rng = random.Random(f"{SEED}-remove")
    layer.publish("keep", "1")
    layer.ok("install", layer.url("keep", "1"))
    layer.publish("gone", "1")
    layer.ok("install", layer.url("gone", "1"))
    longest = timed(
        layer, "remove", "gone", before=lambda: layer.ok("install", layer.url("gone", "1"))
    )
    kills = 0
    for i, delay in enumerate(delays(rng, longest), start=1):
        layer.label = f"remove seed={SEED} point={i} delay={delay:.3f}s"
        layer.ok("install", layer.url("gone", "1"))
        kills += layer.killed(delay, "remove", "gone")
        after = layer.consistent(settled=False)
        assert after.get("keep") == "1", layer.label
        if "gone" in after:  # killed before the record forgot it: remove it again
            layer.ok("remove", "gone")
        else:
            layer.ok("repair")  # the next operation, on what is left
        assert layer.consistent(settled=True) == {"keep": "1"}, layer.label
    assert kills >= POINTS * 3 // 5


def test_gc(layer: Layer) -> None:
    rng = random.Random(f"{SEED}-gc")
    layer.publish("tool", "1")
    layer.publish("tool", "2")

    def two_versions() -> None:
        layer.ok("install", layer.url("tool", "1"))
        layer.ok("install", layer.url("tool", "2"))

    longest = timed(layer, "gc", "--keep", "0", before=two_versions)
    kills = 0
    for i, delay in enumerate(delays(rng, longest), start=1):
        layer.label = f"gc seed={SEED} point={i} delay={delay:.3f}s"
        layer.ok("install", layer.url("tool", "1"))  # active 1, inactive 2
        layer.ok("install", layer.url("tool", "2"))  # active 2, inactive 1
        kills += layer.killed(delay, "gc", "--keep", "0")
        assert layer.consistent(settled=False) == {"tool": "2"}, layer.label
        layer.ok("gc", "--keep", "0")
        assert layer.consistent(settled=True) == {"tool": "2"}, layer.label
        assert {str(r["version"]) for r in layer.rows()} == {"2"}, layer.label
    assert kills >= POINTS * 3 // 5
