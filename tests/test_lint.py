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


def test_no_validator_ends_in_a_dollar() -> None:
    """`$` also matches before a trailing newline, so `^...$` with re.match let a name
    like "evil\\n" through into a shim root writes (the second attack review): every
    anchored rule is `\\A...\\Z` (or fullmatch). Parsers with re.M may use ^ and $."""
    import re

    pattern = re.compile(r"""re\.compile\(\s*r?["'](\^[^"']*\$)["']\s*(,\s*re\.(?!M\b)\w+)?\)""")
    found = [
        f"{path.relative_to(REPO)}:{n}: {m.group(1)}"
        for path in sorted((REPO / "layershell").rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        for m in [pattern.search(line)]
        if m and "re.M" not in line
    ]
    assert not found, "anchor with \\A...\\Z, not ^...$:\n" + "\n".join(found)
