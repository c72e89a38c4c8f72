"""Crash points: where the crash-consistency tests kill layershell for real (SIGKILL,
the state a power cut or the OOM killer leaves; tests/test_install.py,
tests/test_crash_random.py). In production nothing sets the variable, and each point
costs one environment lookup."""

from __future__ import annotations

import os
import signal

CRASH_ENV = "LAYERSHELL_CRASH_AT"  # the point a crash test kills at


def checkpoint(name: str) -> None:
    """Crash-consistency tests kill the process here, for real, with SIGKILL: the same
    state a power cut or the OOM killer leaves (tests/test_install.py). "account:NAME"
    kills only the layer account's process root handed the work to."""
    if os.environ.get(CRASH_ENV) in (name, f"account:{name}"):
        os.kill(os.getpid(), signal.SIGKILL)


def died_with(returncode: int) -> None:
    """In a crash test, root's operation dies with the account's process it handed the
    work to: the test kills `core update`, not half of it (unless it says account:)."""
    point = os.environ.get(CRASH_ENV, "")
    if point and not point.startswith("account:") and returncode == -signal.SIGKILL:
        os.kill(os.getpid(), signal.SIGKILL)
