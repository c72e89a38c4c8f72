"""The tenth attack review's findings (the refactors and small fixes after 1a3e545),
each written as the attack and asserting that it fails."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

from layershell.cli import app as app_mod

# -- root reading its account's result (cli/app._read_bounded) ----------------------

# The account's core prints its result and exits; something it left behind keeps the
# pipe open. LEFT is what that process does with it.
_ACCOUNT = """
import os, sys, time
if os.fork() == 0:
    os.setsid()
    {left}
    os._exit(0)
sys.stdout.write('{{"command": "install", "ok": true}}\\n')
sys.stdout.flush()
os._exit(0)
"""


def _read_with(left: str) -> tuple[bytes | None, float]:
    """What root's _read_bounded returns for an account whose leftover does `left`, and
    how long it took; None if it had not returned after 10 s (the leftover is killed)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _ACCOUNT.format(left=left)],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    got: list[bytes] = []
    start = time.monotonic()
    reader = threading.Thread(target=lambda: got.append(app_mod._read_bounded(proc)), daemon=True)
    reader.start()
    try:
        reader.join(10)
        took = time.monotonic() - start
        returned = not reader.is_alive()
    finally:
        for pid in _holders(proc):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        reader.join(5)
        proc.wait()
    return (got[0] if returned else None), took


def _holders(proc: subprocess.Popen[bytes]) -> list[int]:
    """The processes other than this one whose stdout is proc's pipe."""
    assert proc.stdout is not None
    pipe = os.fstat(proc.stdout.fileno()).st_ino
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            st = os.stat(f"/proc/{entry}/fd/1")
        except OSError:
            continue
        if st.st_ino == pipe:
            found.append(int(entry))
    return found


def test_a_silent_leftover_holding_the_pipe_does_not_keep_root_waiting() -> None:
    """The case the bounded read was written for: the leftover keeps the pipe open and
    says nothing; root has the result within about a second of the account's exit."""
    out, took = _read_with("time.sleep(60)")
    assert out is not None, "root was still reading after 10 s"
    assert b'"ok": true' in out
    assert took < 5


def test_a_leftover_that_keeps_writing_does_not_keep_root_reading() -> None:
    """_read_bounded only looked at whether the account had ended when a select found
    nothing to read: a process the account left behind that writes to the pipe more
    often than every 0.2 s (a byte every 50 ms here) kept root reading for as long as
    it liked, holding root's operation lock and journal, although root promises to stop
    a second after the account's process ended."""
    out, took = _read_with("while True:\n        os.write(1, b' ')\n        time.sleep(0.05)")
    assert out is not None, "root was still reading 10 s after the account ended"
    assert took < 5
