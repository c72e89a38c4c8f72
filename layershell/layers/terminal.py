"""Root's terminal is never a layer's: what root starts in a layer gets a terminal of
its own, or none.

A process whose controlling terminal is root's can push bytes into that terminal's
input (TIOCSTI; the kernel here still allows it) and root's shell runs them once the
session ends. The executor's seccomp filter refuses TIOCSTI/TIOCLINUX to every layer
program; this module makes the boundary hold whatever the kernel and the filter do, the
way `su --pty` and `run0` do it:

- stdin is a terminal: the child gets a new session on a new pseudo-terminal (its
  standard streams that were root's terminal now are the pty), and root's process relays
  bytes between the two, with root's terminal in raw mode, and passes on window size
  changes. Keys such as Ctrl-C and Ctrl-Z reach the layer through the pty's own line
  discipline, so job control works inside the layer's session.
- stdin is not a terminal: the child only gets a new session. Without a controlling
  terminal, TIOCSTI on an inherited terminal descriptor fails (the kernel requires the
  caller's own controlling terminal), and /dev/tty cannot be opened.

Nothing flows from the layer's pty into root's terminal input; the relay only writes the
layer's output to root's terminal, as any program's output.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import signal
import termios
import time
import tty
from dataclasses import dataclass

STREAMS = (0, 1, 2)


@dataclass(frozen=True)
class Pty:
    master: int
    slave: int
    streams: tuple[int, ...]  # the standard descriptors that were root's terminal


def prepare() -> Pty | None:
    """Before the fork: a pty sized like root's terminal, if stdin is one."""
    if not os.isatty(0):
        return None
    master, slave = os.openpty()
    try:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, fcntl.ioctl(0, termios.TIOCGWINSZ, b"\0" * 8))
        termios.tcsetattr(slave, termios.TCSANOW, termios.tcgetattr(0))
    except OSError:
        pass  # a terminal without a size or modes: the pty's defaults will do
    os.set_inheritable(slave, False)
    return Pty(master, slave, tuple(fd for fd in STREAMS if os.isatty(fd)))


def child_side(pty: Pty | None) -> None:
    """In the child, before it drops privileges: a new session, and the pty as its
    controlling terminal in place of root's."""
    os.setsid()
    if pty is None:
        return
    os.close(pty.master)
    fcntl.ioctl(pty.slave, termios.TIOCSCTTY, 0)
    for fd in pty.streams:
        os.dup2(pty.slave, fd)
    if pty.slave not in STREAMS:
        os.close(pty.slave)


def _output_fd() -> int:
    return next((fd for fd in (1, 2, 0) if os.isatty(fd)), 1)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        try:
            data = data[os.write(fd, data) :]
        except InterruptedError:
            continue
        except OSError:
            return  # root's terminal went away: the layer's output has nowhere to go


def relay(pty: Pty, pid: int) -> int:
    """In root's process: relay until the child is gone and the pty drained; returns
    the child's wait status."""
    os.close(pty.slave)
    out = _output_fd()
    saved = termios.tcgetattr(0)

    def resize(_signum: int, _frame: object) -> None:
        try:
            size = fcntl.ioctl(0, termios.TIOCGWINSZ, b"\0" * 8)
            fcntl.ioctl(pty.master, termios.TIOCSWINSZ, size)
        except OSError:
            pass

    previous = signal.signal(signal.SIGWINCH, resize)
    status: int | None = None
    hung_up = False
    try:
        tty.setraw(0, termios.TCSANOW)
        while status is None:
            watch = [pty.master, 0]
            try:
                ready, _, _ = select.select(watch, [], [], 0.1)
            except InterruptedError:
                ready = []
            if pty.master in ready and not _pass(pty.master, out):
                break  # every descriptor of the pty's other side is closed
            if 0 in ready:
                try:
                    data = os.read(0, 65536)
                except OSError:
                    data = b""
                if data:
                    _write_all(pty.master, data)
                else:  # raw mode passes ^D on: this is root's terminal hanging up
                    hung_up = True
                    break
            done, wait_status = os.waitpid(pid, os.WNOHANG | os.WUNTRACED)
            if done and os.WIFSTOPPED(wait_status):
                # As su does: the session's leader stopped, so root's process stops too
                # and root's shell has its terminal back ("Stopped"); fg resumes both.
                termios.tcsetattr(0, termios.TCSADRAIN, saved)
                os.kill(os.getpid(), signal.SIGSTOP)
                tty.setraw(0, termios.TCSANOW)
                os.kill(pid, signal.SIGCONT)
            elif done:
                status = wait_status
        # The session's leader is gone: root's keys go to root's shell again at once.
        # What it printed last is passed on, within bounds: a process it left behind
        # that keeps printing must not keep root's terminal (it is hung up below).
        _drain(pty.master, out)
    finally:
        try:
            termios.tcsetattr(0, termios.TCSADRAIN, saved)
        except termios.error:
            pass  # root's terminal is gone
        signal.signal(signal.SIGWINCH, previous)
        os.close(pty.master)  # hangs the pty up: SIGHUP to what is left, EIO after
    if hung_up:
        end_session(pid)  # nobody is left to talk to it: as sshd ends a session
    return status if status is not None else wait(pid)


def end_session(sid: int) -> None:
    """SIGKILL every process of session `sid` (the layer's, which root started)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            if int(fields[3]) == sid:  # after ")": state ppid pgrp session ...
                os.kill(int(entry), signal.SIGKILL)
        except (OSError, ValueError, IndexError):
            continue


DRAIN_SECONDS = 1.0
DRAIN_BYTES = 1 << 20


def _drain(master: int, out: int) -> None:
    """Pass on what the pty still has to read: at most DRAIN_BYTES, for at most
    DRAIN_SECONDS, and only while more keeps coming."""
    deadline = time.monotonic() + DRAIN_SECONDS
    passed = 0
    while passed < DRAIN_BYTES and time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.05)
        if not ready:
            break
        n = _pass(master, out)
        if not n:
            break
        passed += n


def _pass(master: int, out: int) -> int:
    """Copy one read of the pty's output to root's terminal; 0 at its end (EIO)."""
    try:
        data = os.read(master, 65536)
    except OSError as exc:
        if exc.errno != errno.EIO:
            raise
        return 0
    _write_all(out, data)
    return len(data)


def wait(pid: int) -> int:
    """waitpid that survives signals (the parent forwards some to the child)."""
    while True:
        try:
            return os.waitpid(pid, 0)[1]
        except ChildProcessError:
            return 1 << 8
        except InterruptedError:
            continue
