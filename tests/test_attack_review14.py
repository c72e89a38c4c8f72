"""Attacks on the tar reader without tarfile (unpack/tarstream.py) and on decompression
in a forked child (unpack/reading.py, _Forked), review 14.

Found:

1. Global pax headers were kept whole for the rest of the archive, copied into every
   local header's records and applied to every entry: a 192 KiB archive took scan() to
   +984 MiB, and after 64 global headers each further entry cost 0.7 s of CPU (tarfile,
   before, did the same). Only the records the reader acts on are kept now.
2. With SIGCHLD ignored (inherited through exec) the kernel reaped the child, and
   close()'s waitpid raised ChildProcessError: a traceback after a good unpack.
3. The child was forked before the target was made: a target that existed left it
   blocked on a full pipe as long as the exception lived, holding copies of the
   parent's descriptors (the layer's lock among them); a failing second pipe() leaked
   the first.
4. A signal in the window between fork() and the child's own handlers unwound the
   child into the caller's code (its except and atexit handlers ran twice). Signals
   are held across fork() now and end the child outright.

Review 15, on those fixes: a caller's SIGCHLD handler that reaps every child made
close()'s kill raise ProcessLookupError (the pipes stayed open); a signal held across
fork() was raised before the pipes belonged to anything, and they leaked; an ignored
SIGCHLD stayed at its default after the unpack; and a local pax header no longer
carried the global records, so a global path lost to a long name, unlike in tarfile
(no check skipped: scan and unpack read alike). All four are mended.
"""

from __future__ import annotations

import io
import os
import signal
import tarfile
from pathlib import Path

import pytest

from layershell.packages.unpack import reading, scan, tarstream, unpack
from layershell.packages.unpack.errors import UnpackError
from tests.hostile import compress, f, tar_bytes
from tests.support import child_pids


def _pax(records: dict[str, str], kind: bytes) -> bytes:
    return tarfile.TarInfo._create_pax_generic_header(records, kind, "utf-8")  # type: ignore[attr-defined,no-any-return]


def test_global_pax_records_are_not_kept_without_end(tmp_path: Path) -> None:
    comments = {f"comment.{i}": "c" for i in range(20_000)}
    chain = _pax(comments, tarfile.XGLTYPE) * 3 + _pax(comments, tarfile.XHDTYPE) * 60
    data = chain + tar_bytes([f("a", b"1"), f("b", b"2")], fmt=tarfile.USTAR_FORMAT)
    reader = tarstream.TarReader(io.BufferedReader(io.BytesIO(data)))
    names = []
    while (member := reader.next()) is not None:
        names.append(member.name)
        assert len(reader._global) <= 4  # path, linkpath, mtime, the sparse mark
    assert names == ["a", "b"]
    archive = tmp_path / "globals_1.tar.gz"
    archive.write_bytes(compress(data, "gz"))
    assert scan(str(archive)).entries == 2


def test_an_ignored_sigchld_does_not_break_an_unpack(tmp_path: Path) -> None:
    archive = tmp_path / "ok_1.tar.gz"
    archive.write_bytes(compress(tar_bytes([f("bin/tool", b"x" * 100)]), "gz"))
    before = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    try:
        result = unpack(str(archive), str(tmp_path / "tree"))
    finally:
        signal.signal(signal.SIGCHLD, before)
    assert result.files == 1


def test_a_target_that_exists_leaves_no_child_and_no_descriptor(tmp_path: Path) -> None:
    archive = tmp_path / "big_1.tar.gz"
    archive.write_bytes(
        compress(tar_bytes([f(f"f{i}", os.urandom(9000)) for i in range(200)]), "gz")
    )
    (tmp_path / "there").mkdir()
    children, fds = child_pids(), len(os.listdir("/proc/self/fd"))
    with pytest.raises(UnpackError, match="already exists") as caught:
        unpack(str(archive), str(tmp_path / "there"))
    assert caught.value is not None  # the exception (and its frames) still alive here
    assert child_pids() == children
    assert len(os.listdir("/proc/self/fd")) == fds


def test_a_signal_ends_the_child_instead_of_running_python(tmp_path: Path) -> None:
    """SIGINT to the child kills it: no KeyboardInterrupt in a copy of this process
    (which would run the caller's handlers), and the reader is told it ended."""
    blocking_r, blocking_w = os.pipe()
    source = io.FileIO(blocking_r, "rb")  # the child waits on it for ever
    stream = reading.decompressing(source)
    try:
        assert isinstance(stream, reading._Forked)
        os.kill(stream._pid, signal.SIGINT)
        with pytest.raises(reading._StreamFailed, match="ended without a word"):
            stream.read()
    finally:
        stream.close()
        source.close()
        os.close(blocking_w)


def test_a_caller_that_reaps_its_children_does_not_break_an_unpack(tmp_path: Path) -> None:
    """Review 15: a daemon's SIGCHLD handler reaped the child before close() killed it;
    ProcessLookupError escaped unpack() and the pipes stayed open."""
    import time

    archive = tmp_path / "ok_1.tar.gz"
    archive.write_bytes(compress(tar_bytes([f("bin/tool", b"x" * 100)]), "gz"))

    def reap(_signum: int, _frame: object) -> None:
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            pass

    before = signal.signal(signal.SIGCHLD, reap)
    try:
        fds = len(os.listdir("/proc/self/fd"))
        stream = reading.decompressing(io.BytesIO(b"abc"))
        assert isinstance(stream, reading._Forked)
        assert stream.read() == b"abc"
        for _ in range(500):  # until the handler has reaped it (not a timing: a wait)
            if str(stream._pid) not in child_pids():
                break
            time.sleep(0.01)
        stream.close()  # raised ProcessLookupError, and left both pipes open
        assert len(os.listdir("/proc/self/fd")) == fds
        assert unpack(str(archive), str(tmp_path / "tree")).files == 1
    finally:
        signal.signal(signal.SIGCHLD, before)


def test_an_ignored_sigchld_is_ignored_again_afterwards(tmp_path: Path) -> None:
    archive = tmp_path / "ok_1.tar.gz"
    archive.write_bytes(compress(tar_bytes([f("a", b"1")]), "gz"))
    before = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    try:
        unpack(str(archive), str(tmp_path / "tree"))
        assert signal.getsignal(signal.SIGCHLD) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGCHLD, before)


def test_a_ctrl_c_during_fork_leaves_no_descriptor_and_no_child(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review 15: a SIGINT held across fork() was raised after it, before the pipes
    belonged to anything, and they leaked."""
    archive = tmp_path / "ok_1.tar.gz"
    archive.write_bytes(compress(tar_bytes([f("a", b"1")]), "gz"))
    real_fork = os.fork

    def interrupted_fork() -> int:
        os.kill(os.getpid(), signal.SIGINT)  # held until the mask is restored
        return real_fork()

    monkeypatch.setattr(os, "fork", interrupted_fork)
    children, fds = child_pids(), len(os.listdir("/proc/self/fd"))
    with pytest.raises(KeyboardInterrupt):
        unpack(str(archive), str(tmp_path / "tree"))
    assert child_pids() == children
    assert len(os.listdir("/proc/self/fd")) == fds
    assert not (tmp_path / "tree").exists()
