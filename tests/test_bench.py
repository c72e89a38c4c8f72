"""The benchmarks still run: each once, at its smallest, asserting that it completes and
prints its table and verdicts (never what the numbers are: bench/ compares timings,
tests do not). A shim named `true` became refused as a host program's name, and the
shim bench stopped measuring anything without a test noticing."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import BuiltImage, userns_available

BENCH = Path(__file__).resolve().parent.parent / "bench"


def run_bench(script: str, *args: str, rows: tuple[str, ...], goals: int, timeout: int) -> None:
    """Run bench/SCRIPT; assert it exits 0 and prints each row and every goal's verdict."""
    r = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    for row in rows:
        assert row in r.stdout, r.stdout
    assert r.stdout.count("goal: ") == goals, r.stdout


@pytest.mark.skipif(not userns_available(), reason="needs unprivileged user namespaces")
def test_bench_layer_shell_runs() -> None:
    rows = (
        "native /bin/true",
        "shim: ptrue (profile default)",
        "shim, no seccomp filter",
        "layer-shell, the Python path",
    )
    run_bench("bench_layer_shell.py", "--calls", "3", "--warmup", "1", rows=rows, goals=8,
              timeout=300)  # fmt: skip


@pytest.mark.skipif(not userns_available(), reason="needs unprivileged user namespaces")
def test_bench_install_runs_quick() -> None:
    r = subprocess.run(
        [sys.executable, str(BENCH / "bench_install.py"), "--quick"],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert "goal" in r.stdout, r.stdout
    assert "1s install from a signed file:// repository" in r.stdout, r.stdout
    assert "goal: verification adds <= 10% to an install from a repository:" in r.stdout


@pytest.mark.slow
@pytest.mark.skipif(not userns_available(), reason="needs unprivileged user namespaces")
def test_bench_sysext_runs(sysext_built: BuiltImage, shared_dir: Path) -> None:
    image = shared_dir / Path(sysext_built.image.path).name  # readable by uid 65534
    shutil.copy(sysext_built.image.path, image)
    rows = ("core --version", "core list --json (100 packages)", "image size")
    run_bench("bench_sysext.py", "--image", str(image), "--calls", "2", rows=rows, goals=3,
              timeout=600)  # fmt: skip
