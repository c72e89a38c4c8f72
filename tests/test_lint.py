"""The linters are part of the test suite: mypy --strict and ruff (lint and format)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, check=False
    )


def test_mypy_strict() -> None:
    r = run("mypy", "--no-error-summary")
    assert r.returncode == 0, r.stdout + r.stderr


def test_ruff_lint() -> None:
    r = run("ruff", "check", "--no-cache", "layershell", "tests", "bench")
    assert r.returncode == 0, r.stdout + r.stderr


def test_ruff_format() -> None:
    r = run("ruff", "format", "--check", "--no-cache", "layershell", "tests", "bench")
    assert r.returncode == 0, r.stdout + r.stderr
