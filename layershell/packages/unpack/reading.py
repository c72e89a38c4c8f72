"""Reading an archive: its format by its first bytes, the bytes metered as they are read
(so a bomb stops early), and decompression ahead in a forked child (in a thread where
no process can be started). Its tar headers are tarstream's."""

from __future__ import annotations

import enum
import fcntl
import gzip
import io
import lzma
import os
import queue
import signal
import stat
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn, Protocol

from layershell.packages.unpack.errors import UnpackError, UnsafeArchive, _Refused
from layershell.packages.unpack.limits import METADATA_PER_ENTRY, RATIO_FLOOR, Limits, MiB

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

XZ_MEMLIMIT = 256 * MiB  # an xz header may ask for a gigantic dictionary
ZSTD_MAX_WINDOW = 1 << 27  # zstd's own default limit, made explicit
CHUNK = MiB
COMPRESSED_READ = 32 << 10  # what a decompressor gets of the archive per read (_Meter)

ACCEPTED = ".tar, .tar.gz, .tar.xz, .tar.zst"


class Format(str, enum.Enum):
    TAR = "tar"
    GZIP = "gzip"
    XZ = "xz"
    ZSTD = "zstd"


# --- reading: format detection, metering, decompression ---------------------------------


def _is_tar_header(block: bytes) -> bool:
    if len(block) < 512:
        return False
    if block[257:262] == b"ustar":
        return True
    field = block[148:156].replace(b"\0", b" ").strip()
    if not field or any(c not in b"01234567" for c in field):
        return False
    unsigned = sum(block[:148]) + 8 * 32 + sum(block[156:512])
    signed = sum(b - 256 if b > 127 else b for b in block[:148] + block[156:512]) + 8 * 32
    return int(field, 8) in (unsigned, signed)


def _sniff(head: bytes) -> Format | None:
    if head.startswith(b"\x1f\x8b"):
        return Format.GZIP
    if head.startswith(b"\xfd7zXZ\x00"):
        return Format.XZ
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return Format.ZSTD
    if _is_tar_header(head):
        return Format.TAR
    return None


def _not_an_archive(archive: str) -> UnsafeArchive:
    return UnsafeArchive(archive, None, f"not a package archive (accepted formats: {ACCEPTED})")


def _open_archive(path: str) -> tuple[io.FileIO, Format]:
    """The archive opened for reading, and its format by its first bytes."""
    try:
        # O_NONBLOCK: opening a FIFO must not hang; it changes nothing for a regular file.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise UnpackError(f"cannot read {path}: {exc.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafeArchive(path, None, "not a regular file")
    raw = io.FileIO(fd, "rb")
    try:
        found = _sniff(raw.read(512))
        if found is None:
            raise _not_an_archive(path)
        raw.seek(0)
    except BaseException:
        raw.close()
        raise
    return raw, found


def detect_format(path: str) -> Format:
    """The archive's format, by its first bytes (never by its name)."""
    raw, found = _open_archive(path)
    raw.close()
    return found


class _Source(Protocol):
    def read(self, size: int, /) -> bytes: ...


class _Meter(io.RawIOBase):
    """Counts the bytes read through it, calling check(total) after every read. With
    `most`, no read takes more: a decompressor that reads ahead in large blocks (ISA-L's
    takes 128 KiB) would otherwise make a bomb look as if it came from more input."""

    def __init__(
        self, source: _Source, check: Callable[[int], None] | None = None, most: int = 0
    ) -> None:
        super().__init__()
        self.count = 0
        self._source, self._check, self._most = source, check, most

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        data = self._source.read(min(len(view), self._most) if self._most else len(view))
        view[: len(data)] = data
        self.count += len(data)
        if self._check is not None:
            self._check(self.count)
        return len(data)


class _XzReader(io.RawIOBase):
    """lzma.LZMAFile with a memory limit (it offers none); concatenated streams work."""

    def __init__(self, source: _Source) -> None:
        super().__init__()
        self._source = source
        self._dec = self._decompressor()
        self._eof = False

    @staticmethod
    def _decompressor() -> lzma.LZMADecompressor:
        return lzma.LZMADecompressor(lzma.FORMAT_XZ, memlimit=XZ_MEMLIMIT)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        data = self._read(len(view))
        view[: len(data)] = data
        return len(data)

    def _read(self, size: int) -> bytes:
        while not self._eof and size:
            if self._dec.eof:
                rest = self._dec.unused_data or self._source.read(CHUNK)
                if not rest:
                    self._eof = True
                    break
                self._dec = self._decompressor()
                try:
                    data = self._dec.decompress(rest, size)
                except lzma.LZMAError:  # padding or trailing garbage after a stream
                    self._eof = True
                    break
            else:
                raw = self._source.read(CHUNK) if self._dec.needs_input else b""
                if self._dec.needs_input and not raw:
                    raise EOFError("the xz stream ends early: the archive is truncated")
                data = self._dec.decompress(raw, size)
            if data:
                return data
        return b""


class _Prefetched(io.RawIOBase):
    """Reads `source` (the decompressor) ahead in a thread, so decompression overlaps
    writing files: zlib, lzma and zstd release the GIL while they work, as GNU tar gets
    the same overlap from a separate gzip process. An exception in the thread (a bomb
    refused by the meter) is raised to the reader at the point it happened."""

    # Small chunks keep an error (a truncated stream) close to the entry it belongs to.
    CHUNK = 64 << 10
    DEPTH = 64

    def __init__(self, source: _Source) -> None:
        super().__init__()
        self._source = source
        self._queue: queue.Queue[bytes | BaseException] = queue.Queue(self.DEPTH)
        self._stop = threading.Event()
        self._pending = b""
        self._done = False
        self._thread = threading.Thread(target=self._run, name="unpack-prefetch", daemon=True)
        self._thread.start()

    def _put(self, item: bytes | BaseException) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                data = self._source.read(self.CHUNK)
                if not self._put(data) or not data:
                    return
        except BaseException as exc:  # handed to the reader, which raises it
            self._put(exc)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        while not self._pending and not self._done:
            item = self._queue.get()
            if isinstance(item, BaseException):
                self._done = True
                raise item
            if not item:
                self._done = True
            self._pending = item
        n = min(len(view), len(self._pending))
        view[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def close(self) -> None:
        # The thread must be gone before the caller closes the file it reads: a read in
        # flight on a closed descriptor can land on the next file that reuses the number
        # (seen in the testbed: the next package's archive read to its end by the last
        # package's thread). It notices _stop within one put timeout.
        self._stop.set()
        self._thread.join()
        super().close()


_HELD = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT}


class _StreamFailed(Exception):
    """The child decompressing the archive stopped on an error; its text is the child's."""


class _Forked(io.RawIOBase):
    """Decompresses in a forked child that writes the stream into a pipe: a real second
    core, as GNU tar gets from its gzip process. Neither python-isal's inflate nor
    zstandard's reader lets a thread run beside it for long (measured: a thread's
    decompression took as long as if it ran after the main thread's work), so
    _Prefetched overlapped little but the reading of the file.

    The child holds no more than this process does (it is this process, as the layer's
    account) and only reads the archive and writes the pipe; the decompressor is made
    here, so the child imports nothing (an import lock another thread held at fork()
    would never be released in it). It writes everything it
    decompressed before it reports how it ended, on a second pipe, so an error (a bomb
    refused by the meter, a truncated stream) is raised to the reader at the point in
    the stream where it happened."""

    PIPE_SIZE = MiB  # fs.pipe-max-size's default: fewer switches between the two

    def __init__(self, source: _Source) -> None:
        super().__init__()
        self._pid = 0
        self._sigchld: signal._HANDLER = None
        fds: list[int] = []
        # Signals wait until the child has its own handlers: a Ctrl-C landing between
        # fork() and them would unwind the child into the caller's code, a second copy.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD)
        try:
            try:
                self._own_sigchld()
                fds.extend(os.pipe())
                fds.extend(os.pipe())
                data_r, data_w, status_r, status_w = fds
                try:
                    fcntl.fcntl(data_w, fcntl.F_SETPIPE_SZ, self.PIPE_SIZE)
                except OSError:
                    pass  # a smaller pipe only costs switches
                self._pid = os.fork()
                if self._pid == 0:  # the child: never returns
                    self._child(source, data_w, status_w, data_r, status_r, blocked)
            except BaseException:
                for fd in fds:
                    os.close(fd)
                self._restore_sigchld()
                raise
            os.close(data_w)
            os.close(status_w)
            self._pipe = io.FileIO(data_r, "rb")
            self._status = status_r
            self._done = False
        finally:
            try:
                # A signal held meanwhile is raised here (pthread_sigmask runs the
                # handlers), when everything above is in place for close().
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            except BaseException:
                self.close()
                raise

    def _own_sigchld(self) -> None:
        """SIGCHLD ignored (inherited through exec) makes the kernel reap the child, whose
        pid could then be another process's when close() kills it: the default for the
        child's lifetime, where this thread may change it."""
        if signal.getsignal(signal.SIGCHLD) == signal.SIG_IGN:
            try:
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                self._sigchld = signal.SIG_IGN
            except ValueError:  # not the main thread: close() tolerates a reaped child
                pass

    def _restore_sigchld(self) -> None:
        if self._sigchld is not None:
            signal.signal(signal.SIGCHLD, self._sigchld)
            self._sigchld = None

    @staticmethod
    def _child(
        source: _Source, data_w: int, status_w: int, data_r: int, status_r: int,
        blocked: set[int | signal.Signals],
    ) -> NoReturn:  # fmt: skip
        code = 0
        try:
            os.close(data_r)
            os.close(status_r)
            for signum in _HELD:  # a signal ends the child: it never raises into Python
                signal.signal(signum, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            while data := source.read(_Prefetched.CHUNK):  # small: see _Prefetched.CHUNK
                view = memoryview(data)
                while view:
                    view = view[os.write(data_w, view) :]
            report = b"ok"
        except _Refused as exc:
            report = b"R" + exc.reason.encode("utf-8", "backslashreplace")
        except BrokenPipeError:
            report, code = b"", 1  # the reader is gone: it stopped reading on purpose
        except BaseException as exc:  # reported to the reader, which raises it
            report = b"E" + str(exc).encode("utf-8", "backslashreplace")
        try:
            os.close(data_w)
            os.write(status_w, report[:4096])
        finally:
            os._exit(code)  # no atexit handlers, no flushing of the parent's buffers

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        if self._done:
            return 0
        n = self._pipe.readinto(buffer)
        if n:
            return n
        self._done = True
        report = b""
        while chunk := os.read(self._status, 4096):
            report += chunk
        if report == b"ok":
            return 0
        text = report[1:].decode("utf-8", "replace")
        if report[:1] == b"R":
            raise _Refused(None, text)
        raise _StreamFailed(text or "the decompressing process ended without a word")

    def close(self) -> None:
        pid, self._pid = self._pid, 0
        if pid:
            # The child may be blocked on a full pipe after a refusal: it is ended, not
            # waited for.
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ChildProcessError, ProcessLookupError):
                pass  # reaped already: by the kernel, or by the caller's SIGCHLD handler
            finally:
                self._pipe.close()
                os.close(self._status)
                self._restore_sigchld()
        super().close()


def decompressing(source: _Source) -> io.RawIOBase:
    """source (the decompressor, made but not read yet) read in a child process; in a
    thread of this one if no process can be started (a layer at its limit of them)."""
    try:
        return _Forked(source)
    except OSError:
        return _Prefetched(source)


def _decompressed(fmt: Format, raw: _Meter) -> _Source:
    if fmt is Format.GZIP:
        # ISA-L's inflate (python-isal) is 2-3x zlib's here (bench/bench_install.py), the
        # same stream format with the same API; zlib where it is not installed.
        try:
            from isal import igzip
        except ImportError:
            return gzip.GzipFile(fileobj=raw, mode="rb")
        return igzip.IGzipFile(fileobj=raw, mode="rb")  # type: ignore[no-untyped-call]
    if fmt is Format.XZ:
        return io.BufferedReader(_XzReader(raw))
    if fmt is Format.ZSTD:
        import zstandard

        dctx = zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW)
        return dctx.stream_reader(io.BufferedReader(raw), read_across_frames=True)
    return raw


def _bomb_check(limits: Limits, compressed: _Meter) -> Callable[[int], None]:
    """The check run on every read of the decompressed stream: a bomb stops early."""
    stream_cap = limits.max_total_bytes + METADATA_PER_ENTRY * limits.max_files + MiB

    def check(expanded: int) -> None:
        allowed = max(RATIO_FLOOR, limits.max_ratio * compressed.count)
        if expanded > allowed:
            raise _Refused(
                None,
                f"decompression bomb: {expanded} bytes came out of the first "
                f"{compressed.count} bytes of the archive, over the limit of "
                f"{limits.max_ratio:g} to 1",
            )
        if expanded > stream_cap:
            raise _Refused(None, f"the archive expands beyond {stream_cap} bytes")

    return check
