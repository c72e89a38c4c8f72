"""`core --version` says where core runs from (layershell/host/origin.py): the extension's
frozen program is tested in tests/test_sysext.py and tests/test_sysext_boot.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from layershell import __version__

CHECKOUT = Path(__file__).resolve().parent.parent


def version(*argv: str, env: dict[str, str] | None = None) -> list[str]:
    done = subprocess.run(
        [*argv, "--version"], capture_output=True, text=True, check=True, env=env, cwd="/"
    )
    return done.stdout.splitlines()


def test_the_venv_says_venv() -> None:
    lines = version(sys.executable, "-I", "-m", "layershell")
    assert lines == [f"core, version {__version__}", f"running from: venv {sys.prefix}"]
    assert sys.prefix != sys.base_prefix  # the tests run in dev.sh's venv


def test_a_checkout_on_the_path_says_checkout() -> None:
    env = dict(os.environ, PYTHONPATH=str(CHECKOUT))
    lines = version(sys.executable, "-m", "layershell", env=env)
    assert lines == [f"core, version {__version__}", f"running from: checkout {CHECKOUT}"]
