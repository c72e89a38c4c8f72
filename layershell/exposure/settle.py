"""Whether the units root started stay up: watched together, their journal when not."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Sequence

Run = Callable[[Sequence[str]], subprocess.CompletedProcess[str]]


def wait_all_active(
    units: list[str], run: Run, timeout: float, settle: float = 1.5
) -> dict[str, str]:
    """Each unit's state once it settled: stayed active for `settle` seconds (a simple
    service is active the moment it forks, so one look would miss a program that exits
    at once), or failed, or stopped after being active; else its state at `timeout`.
    All are watched at once, so starting N services costs one settling time, not N."""
    deadline = time.monotonic() + timeout
    since: dict[str, float] = {}
    states: dict[str, str] = dict.fromkeys(units, "")
    open_units = list(units)
    while open_units and time.monotonic() < deadline:
        for unit in list(open_units):
            state = run(["systemctl", "is-active", unit]).stdout.strip()
            now = time.monotonic()
            states[unit] = state
            if state == "failed" or (state == "inactive" and unit in since):
                open_units.remove(unit)
            elif state != "active":
                since.pop(unit, None)
            elif unit not in since:
                since[unit] = now
            elif now - since[unit] >= settle:
                open_units.remove(unit)
        if open_units:
            time.sleep(0.2)
    return states


def journal(unit: str, run: Run) -> str:
    result = run(["journalctl", "--no-pager", "-o", "cat", "-n", "15", "-u", unit])
    return "\n".join("    " + line for line in result.stdout.splitlines()[-15:])
