"""One operation at a time per layer: an flock on the layer's lock file.

A second caller waits and says why (which pid holds it), or with no_wait fails at once.
The kernel drops an flock when its holder dies, SIGKILL included, so a crash never
leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from layershell.errors import LayershellError

# A test hook, like install.CRASH_ENV: when set, it names a file that every holder
# appends "PID PATH\n" to the moment it holds a lock, so a concurrency test learns the
# order in which operations took the layer's lock and can replay them one by one in
# that order (tests/test_concurrency.py). Unset in production.
ORDER_ENV = "LAYERSHELL_LOCK_ORDER"


class Busy(LayershellError):
    exit_code = 75  # EX_TEMPFAIL: try again later


def _holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 64).decode(errors="replace").strip()
    except OSError:
        return "another process"
    return f"pid {text}" if text.isdigit() else "another process"


def _record_order(path: str) -> None:
    order = os.environ.get(ORDER_ENV)
    if order:
        with open(order, "a", encoding="utf-8") as f:  # one short write: O_APPEND keeps it whole
            f.write(f"{os.getpid()} {path}\n")


@contextmanager
def held(
    path: str, *, no_wait: bool = False, waiting: Callable[[str], None] | None = None
) -> Iterator[int]:
    """Hold the lock; yields its file descriptor, which a child process may inherit to
    keep the lock held for as long as it runs."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            who = _holder(fd)
            if no_wait:
                raise Busy(
                    f"another layershell operation holds {path} ({who})",
                    "wait for it to finish, or run without --no-wait to queue behind it",
                ) from None
            if waiting is not None:
                waiting(f"waiting for another layershell operation ({who}) to finish ...")
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _record_order(path)
        yield fd
    finally:
        os.close(fd)
