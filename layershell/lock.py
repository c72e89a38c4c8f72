"""One operation at a time per layer: an flock on the layer's lock file.

A second caller waits and says why (which process holds it, doing what), or with
no_wait fails at once. The kernel drops an flock when its holder dies, SIGKILL
included, so a crash never leaves a stale lock behind.

The holder writes "PID WHAT" into the file, but that line can be stale: a reader may
see it between another process's flock and its write, or after a holder died. So the
holder named is the one the kernel reports (/proc/locks lists each granted FLOCK with
its pid and inode), and only once that process is seen holding it (a "lock:" line in
the fdinfo of one of its descriptors of this very file); the written WHAT is used only
when the written pid is that process. Nothing is named when nothing can be verified.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from layershell.errors import LayershellError

# A test hook, like faults.CRASH_ENV: when set, it names a file that every holder
# appends "PID PATH\n" to the moment it holds a lock, so a concurrency test learns the
# order in which operations took the layer's lock and can replay them one by one in
# that order (tests/test_concurrency.py). Unset in production.
ORDER_ENV = "LAYERSHELL_LOCK_ORDER"


class Busy(LayershellError):
    exit_code = 75  # EX_TEMPFAIL: try again later


@dataclass(frozen=True)
class Holder:
    pid: int
    what: str  # "core remove"; "" when not known

    def __str__(self) -> str:
        return f"{self.what or 'another layershell operation'} (pid {self.pid})"


def _written(fd: int) -> tuple[int | None, str]:
    """The "PID WHAT" line in the lock file: a hint, possibly stale."""
    try:
        text = os.pread(fd, 128, 0).decode(errors="replace")
    except OSError:
        return None, ""
    pid, _, what = text.partition("\n")[0].partition(" ")
    what = what.strip() if what.isprintable() else ""
    return (int(pid) if pid.isdigit() else None), what


def _kernel_holders(inode: int) -> list[int]:
    """Pids /proc/locks gives for granted FLOCKs on an inode ("->" lines wait)."""
    pids = []
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            for line in f:
                fields = line.split()
                if len(fields) < 6 or fields[1] != "FLOCK" or not fields[4].isdigit():
                    continue
                if fields[5].rpartition(":")[2] == str(inode):
                    pids.append(int(fields[4]))
    except OSError:
        pass
    return pids


def _holds(pid: int, st: os.stat_result) -> bool:
    """Whether `pid` has this file open with an flock granted on that descriptor."""
    try:
        fds = os.listdir(f"/proc/{pid}/fdinfo")
    except OSError:
        return False
    for fd in fds:
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}", encoding="ascii", errors="replace") as f:
                if not any(x.startswith("lock:") and " FLOCK " in x for x in f):
                    continue
            there = os.stat(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if (there.st_dev, there.st_ino) == (st.st_dev, st.st_ino):
            return True
    return False


def holder(fd: int) -> Holder | None:
    """The live process holding the flock on fd's file, or None if none can be seen."""
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    written, what = _written(fd)
    candidates = [*_kernel_holders(st.st_ino), *([written] if written else [])]
    for pid in dict.fromkeys(candidates):
        if pid > 0 and _holds(pid, st):
            return Holder(pid, what if pid == written else "")
    return None


def _record_order(path: str) -> None:
    order = os.environ.get(ORDER_ENV)
    if order:
        with open(order, "a", encoding="utf-8") as f:  # one short write: O_APPEND keeps it whole
            f.write(f"{os.getpid()} {path}\n")


def _try(fd: int, attempts: int = 3) -> tuple[bool, Holder | None]:
    """Take the lock without waiting: (True, None) if it was free and is held now, else
    (False, who holds it). A holder that lets go while it is looked up is none: again."""
    who: Holder | None = None
    for _ in range(attempts):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True, None
        except BlockingIOError:
            who = holder(fd)
            if who is not None:
                break
    return False, who


@contextmanager
def held(
    path: str,
    *,
    no_wait: bool = False,
    waiting: Callable[[str], None] | None = None,
    what: str = "",
) -> Iterator[int]:
    """Hold the lock; yields its file descriptor, which a child process may inherit to
    keep the lock held for as long as it runs. `what` (e.g. "core remove") is written
    next to the pid, so that a waiting process can say what it waits for."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        taken, who = _try(fd)
        if not taken:
            named = str(who) if who is not None else "another layershell operation"
            if no_wait:
                detail = f" ({who.what + ', ' if who.what else ''}pid {who.pid})" if who else ""
                raise Busy(
                    f"another layershell operation holds {path}{detail}",
                    "wait for it to finish, or run without --no-wait to queue behind it",
                )
            if waiting is not None:
                waiting(f"waiting for {named} to finish ...")
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {what}".rstrip().encode() + b"\n", 0)
        except OSError:
            pass  # a full disk: waiters learn the holder from /proc/locks all the same
        _record_order(path)
        yield fd
    finally:
        os.close(fd)
