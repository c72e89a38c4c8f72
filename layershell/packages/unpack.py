"""Unpack a package archive into a new directory, refusing anything unsafe.

A package may only ever become files, directories and links inside its own directory.
Every entry is checked BEFORE anything is written for it, and any refusal or error
removes the partly unpacked directory, so the caller sees a whole package or nothing.

What is refused (UnsafeArchive):
- names that are absolute, empty, contain a `..` component or a NUL byte, or are longer
  than the limits; names that are not valid UTF-8: they cannot be shown, compared or
  typed reliably, and no real package needs them, so refusing is simpler to reason about
  than inventing an escaping scheme that every later stage would have to understand;
- device nodes, FIFOs, sparse files and every other type than file, directory, symbolic
  link and hard link;
- symbolic links to absolute paths or leading outside the package. A link target is
  checked lexically: its leading `..` components may climb at most to the package
  directory, and no `..` may follow a name (`a/../..`), because `a` could itself be a
  link and the kernel resolves `..` from where `a` points, not lexically. This is
  stricter than a plain lexical resolution and, unlike it, sound;
- hard links to anything but a regular file unpacked earlier from the same archive;
- an entry naming a path that an earlier entry already created (same name twice, a file
  where a directory was, a directory where a file was), or a path that goes through an
  earlier symbolic link or file: the classic escape is `link -> ../x`, then `link/file`;
- more entries, more bytes, or a higher expansion ratio than the Limits allow. The
  ratio is checked as the stream is decompressed, so a bomb stops after a few MiB;
- anything that is not a tar archive, plain or compressed with gzip, xz or zstd, and
  archives that are damaged or truncated.

What is neutralised, and reported in UnpackResult.stripped: setuid, setgid and sticky
bits, and group or world write permission (files and directories keep at most 0755).
Owners are never taken from the archive: everything belongs to the process that unpacks
(the layer's account). Directories always keep owner rwx so the package stays removable.

Writes go through directory file descriptors opened one component at a time with
O_NOFOLLOW, and files are created with O_EXCL|O_NOFOLLOW, so a symbolic link planted
concurrently cannot redirect a write outside the target.
"""

from __future__ import annotations

import argparse
import enum
import gzip
import io
import json
import lzma
import os
import queue
import stat
import sys
import tarfile
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import IO, TYPE_CHECKING, Protocol

from layershell.errors import LayershellError
from layershell.packages import trees

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

MiB = 1 << 20
GiB = 1 << 30

RATIO_FLOOR = MiB  # a tiny archive legitimately expands far beyond any sane ratio at first
METADATA_MAX = MiB  # a pax or GNU long-name header is read into memory whole
METADATA_PER_ENTRY = 2048  # allowance for headers when bounding the whole stream
XZ_MEMLIMIT = 256 * MiB  # an xz header may ask for a gigantic dictionary
ZSTD_MAX_WINDOW = 1 << 27  # zstd's own default limit, made explicit
CHUNK = MiB

ACCEPTED = ".tar, .tar.gz, .tar.xz, .tar.zst"

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

_FILE_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)
_METADATA_TYPES = (
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
)
_TYPE_WORDS = {
    tarfile.CHRTYPE: "a character device",
    tarfile.BLKTYPE: "a block device",
    tarfile.FIFOTYPE: "a FIFO",
    tarfile.GNUTYPE_SPARSE: "a sparse file",
}


class Format(str, enum.Enum):
    TAR = "tar"
    GZIP = "gzip"
    XZ = "xz"
    ZSTD = "zstd"


@dataclass(frozen=True)
class Limits:
    """How much one package may unpack to. max_files counts entries of every kind."""

    max_total_bytes: int = 4 * GiB
    max_files: int = 200_000
    max_ratio: float = 100
    max_path_length: int = 4096
    max_name_length: int = 255
    max_depth: int = 64  # directories nested in the package (docs/packages.md, "Limits")

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value <= 0:
                raise ValueError(f"Limits.{name} must be positive, not {value}")


@dataclass(frozen=True)
class Scan:
    """What an archive would unpack to, from its headers alone (scan())."""

    entries: int
    total_bytes: int  # of regular files
    depth: int  # the deepest directory nesting
    deepest: str  # an entry at that depth


def entry_depth(name: str, is_dir: bool) -> int:
    """How many directories deep an entry lies in the package: `a/b/` is 2 deep, and
    so is `a/b/file`."""
    parts = [part for part in name.split("/") if part not in ("", ".")]
    return len(parts) if is_dir else max(len(parts) - 1, 0)


def depth_refusal(depth: int, limit: int) -> str:
    return f"the path is {depth} directories deep, over the limit of {limit}"


@dataclass(frozen=True)
class UnpackResult:
    """What was unpacked; stripped lists (entry, what was neutralised)."""

    files: int
    directories: int
    symlinks: int
    total_bytes: int
    stripped: tuple[tuple[str, str], ...]


class UnsafeArchive(LayershellError):
    """The archive is refused: unsafe, damaged, over a limit, or not an archive."""

    exit_code = 1

    def __init__(self, archive: str, where: str | None, reason: str) -> None:
        """where: which entry, quoted for display (None when the whole file is refused)."""
        self.archive, self.where, self.reason = archive, where, reason
        place = f"{archive}: {where}" if where else archive
        super().__init__(f"{place}: {reason}", "the package is refused; nothing was installed")


class UnpackError(LayershellError):
    """Unpacking failed for a reason outside the archive: the target, the disk."""

    exit_code = 1


class _Refused(Exception):
    """A refusal raised where the archive's name is unknown; unpack() names it."""

    def __init__(self, entry: str | None, reason: str) -> None:
        super().__init__(reason)
        self.entry, self.reason = entry, reason


class _Kind(enum.Enum):
    DIR = "a directory"
    IMPLICIT_DIR = "a parent directory"
    FILE = "a file"
    SYMLINK = "a symbolic link"


def show(name: str) -> str:
    """Quote a name for a message: undecodable bytes as \\xNN, control characters escaped,
    so a hostile name can neither garble a terminal nor hide what it is. Names longer
    than 300 characters keep their start and end."""
    if len(name) > 300:
        return show(name[:200])[:-1] + f"...({len(name) - 260} more)..." + show(name[-60:])[1:]
    out = []
    for char in name:
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
            out.append(f"\\x{code - 0xDC00:02x}")
        elif char in "\\'":
            out.append("\\" + char)
        elif not char.isprintable():
            out.append(repr(char)[1:-1])
        else:
            out.append(char)
    return "'" + "".join(out) + "'"


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
    """Counts the bytes read through it, calling check(total) after every read."""

    def __init__(self, source: _Source, check: Callable[[int], None] | None = None) -> None:
        super().__init__()
        self.count = 0
        self._source, self._check = source, check

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        data = self._source.read(len(view))
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


def _decompressed(fmt: Format, raw: IO[bytes]) -> _Source:
    if fmt is Format.GZIP:
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if fmt is Format.XZ:
        return io.BufferedReader(_XzReader(raw))
    if fmt is Format.ZSTD:
        import zstandard

        dctx = zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW)
        return dctx.stream_reader(raw, read_across_frames=True)
    return raw


class _StrictTarInfo(tarfile.TarInfo):
    """tarfile takes a damaged header in mid-stream for the end of the archive, and reads
    pax and long-name headers into memory whole; both are refused here instead.

    Python point releases moved header parsing from frombuf() into _frombuf() (with the
    extraction-filter fixes; Debian 12's current python3.11 has it): both are checked,
    so the rules hold on either (tests/test_unpack.py runs on the host's Python, the
    booted testbed on Debian's newest)."""

    @staticmethod
    def _checked(buf: bytes | bytearray, parse: Callable[[], tarfile.TarInfo]) -> _StrictTarInfo:
        if len(buf) != tarfile.BLOCKSIZE:
            raise _Refused(None, "the archive is truncated (it ends without an end marker)")
        if buf.count(0) == tarfile.BLOCKSIZE:
            return parse()  # type: ignore[return-value]  # the end marker: tarfile's EOF
        try:
            info = parse()
        except tarfile.HeaderError as exc:
            raise _Refused(None, f"the archive is damaged ({exc})") from None
        if info.type in _METADATA_TYPES and info.size > METADATA_MAX:
            raise _Refused(None, f"a metadata header of {info.size} bytes is too large")
        return info  # type: ignore[return-value]

    @classmethod
    def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> _StrictTarInfo:
        parse = super().frombuf
        return cls._checked(buf, lambda: parse(buf, encoding, errors))

    @classmethod
    def _frombuf(
        cls, buf: bytes | bytearray, encoding: str, errors: str, **kwargs: object
    ) -> _StrictTarInfo:
        parse = getattr(super(), "_frombuf")  # noqa: B009 (not in typeshed)
        return cls._checked(buf, lambda: parse(buf, encoding, errors, **kwargs))


# --- writing: directory descriptors, removal ---------------------------------------------


def _walk(start: int, relative: str) -> int:
    """A new fd for start/relative, one component at a time, never following a link."""
    fd = start
    try:
        for name in relative.split("/"):
            next_fd = os.open(name, _DIR_FLAGS, dir_fd=fd)
            if fd != start:
                os.close(fd)
            fd = next_fd
    except BaseException:
        if fd != start:
            os.close(fd)
        raise
    return fd


class _Dirs:
    """Directory fds inside the target; keeps the last one open, since entries of one
    directory usually follow each other."""

    def __init__(self, root: int) -> None:
        self.root = root
        self._key, self._fd = "", root

    def open(self, key: str) -> int:
        """The fd of target/key ("" is the target); valid until the next call."""
        if key == self._key:
            return self._fd
        if not key:
            fd = self.root
        elif self._key and key.startswith(self._key + "/"):
            fd = _walk(self._fd, key[len(self._key) + 1 :])
        else:
            fd = _walk(self.root, key)
        self.close()
        self._key, self._fd = key, fd
        return fd

    def close(self) -> None:
        if self._fd != self.root:
            os.close(self._fd)
        self._key, self._fd = "", self.root


def _mtime(member: tarfile.TarInfo) -> float | None:
    value = member.mtime
    return float(value) if 0 <= value < 1 << 33 else None


# --- the unpacker ------------------------------------------------------------------------


class _Unpacker:
    def __init__(self, tar: tarfile.TarFile, target_fd: int, limits: Limits) -> None:
        self.tar, self.limits = tar, limits
        self.dirs = _Dirs(target_fd)
        self.kinds: dict[str, _Kind] = {}
        self.modes: dict[str, tuple[int, float | None]] = {}  # directories, applied last
        self.entries = self.files = self.directories = self.symlinks = self.total = 0
        self.stripped: list[tuple[str, str]] = []
        self.current: str | None = None  # the entry being read, for stream-level refusals
        self.last: str | None = None

    def context(self) -> str:
        if self.current is not None:
            return f"entry {show(self.current)}"
        if self.last is not None:
            return f"the entry after {show(self.last)}"
        return "the first entry"

    def refuse(self, reason: str) -> _Refused:
        return _Refused(self.context(), reason)

    def _next(self) -> tarfile.TarInfo | None:
        try:
            member = self.tar.next()
        except _Refused:
            raise
        except Exception as exc:
            raise self.refuse(f"the archive cannot be read ({exc})") from None
        # tarfile keeps every member it has read, which a stream of 200,000 never needs.
        self.tar.members.clear()  # type: ignore[attr-defined]
        return member

    def run(self) -> UnpackResult:
        while (member := self._next()) is not None:
            self.current = member.name
            self.entry(member)
            self.last, self.current = member.name, None
        self.finish()
        return UnpackResult(
            self.files, self.directories, self.symlinks, self.total, tuple(self.stripped)
        )

    # checks: nothing is written before all of them pass

    def normalise(self, name: str, what: str) -> str:
        """The entry's path relative to the target, components joined by "/"."""
        limits = self.limits
        if "\0" in name:
            raise self.refuse(f"the {what} contains a NUL byte")
        try:
            size = len(name.encode("utf-8"))
        except UnicodeEncodeError:
            raise self.refuse(f"the {what} is not valid UTF-8") from None
        if not name:
            raise self.refuse(f"the {what} is empty")
        if name.startswith("/"):
            raise self.refuse(f"the {what} is an absolute path")
        if size > limits.max_path_length:
            raise self.refuse(
                f"the {what} is {size} bytes long, over the limit of {limits.max_path_length}"
            )
        parts = [part for part in name.split("/") if part not in ("", ".")]
        if ".." in parts:
            raise self.refuse(f"the {what} has a '..' component")
        for part in parts:
            if len(part.encode()) > limits.max_name_length:
                raise self.refuse(
                    f"the {what} has a component of {len(part.encode())} bytes, "
                    f"over the limit of {limits.max_name_length}"
                )
        return "/".join(parts)

    def check_place(self, key: str, is_dir: bool) -> None:
        existing = self.kinds.get(key)
        if existing is not None and not (is_dir and existing is _Kind.IMPLICIT_DIR):
            raise self.refuse(f"an earlier entry already made {show(key)} {existing.value}")
        # Every recorded path has only directories above it, so the nearest recorded
        # ancestor decides.
        parent = key.rpartition("/")[0]
        while parent and parent not in self.kinds:
            parent = parent.rpartition("/")[0]
        kind = self.kinds.get(parent)
        if kind is _Kind.SYMLINK:
            raise self.refuse(f"the path goes through the symbolic link {show(parent)}")
        if kind is _Kind.FILE:
            raise self.refuse(f"the path goes through the file {show(parent)}")

    def check_symlink(self, key: str, target: str) -> None:
        if "\0" in target:
            raise self.refuse("the symbolic link target contains a NUL byte")
        try:
            size = len(target.encode("utf-8"))
        except UnicodeEncodeError:
            raise self.refuse("the symbolic link target is not valid UTF-8") from None
        if not target:
            raise self.refuse("the symbolic link target is empty")
        if size > self.limits.max_path_length:
            raise self.refuse(f"the symbolic link target is {size} bytes long")
        if target.startswith("/"):
            raise self.refuse(f"symbolic link to the absolute path {show(target)}")
        depth, ups, named = key.count("/"), 0, False
        for part in target.split("/"):
            if part in ("", "."):
                continue
            if part != "..":
                named = True
            elif named:
                raise self.refuse(
                    f"symbolic link to {show(target)}: '..' after a name could climb out "
                    "through another link"
                )
            else:
                ups += 1
        if ups > depth:
            raise self.refuse(f"symbolic link to {show(target)} points outside the package")

    def entry(self, member: tarfile.TarInfo) -> None:
        self.entries += 1
        if self.entries > self.limits.max_files:
            raise self.refuse(f"too many entries: the limit is {self.limits.max_files}")
        key = self.normalise(member.name, "name")
        kind = member.type
        if kind in _TYPE_WORDS:
            raise self.refuse(f"{_TYPE_WORDS[kind]} is not allowed in a package")
        if kind not in (*_FILE_TYPES, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE):
            raise self.refuse(f"entries of type {kind!r} are not allowed in a package")
        if not key:
            if kind == tarfile.DIRTYPE:
                return  # "./": the target itself, made by unpack()
            raise self.refuse("the name is empty")
        depth = entry_depth(key, kind == tarfile.DIRTYPE)
        if depth > self.limits.max_depth:
            raise self.refuse(depth_refusal(depth, self.limits.max_depth))
        if kind == tarfile.DIRTYPE:
            self.check_place(key, is_dir=True)
            self.directory(key, member)
        elif kind == tarfile.SYMTYPE:
            self.check_symlink(key, member.linkname)
            self.check_place(key, is_dir=False)
            self.symlink(key, member)
        elif kind == tarfile.LNKTYPE:
            try:
                source = self.normalise(member.linkname, "hard link target")
            except _Refused as exc:
                raise self.refuse(f"{exc.reason}: {show(member.linkname)}") from None
            if self.kinds.get(source) is not _Kind.FILE:
                raise self.refuse(
                    f"hard link to {show(member.linkname)}, which is not a regular file "
                    "unpacked earlier from this archive"
                )
            self.check_place(key, is_dir=False)
            self.hardlink(key, source)
        else:
            if member.sparse is not None:
                raise self.refuse(f"{_TYPE_WORDS[tarfile.GNUTYPE_SPARSE]} is not allowed")
            if member.size < 0:
                raise self.refuse("the archive is damaged (negative size)")
            if self.total + member.size > self.limits.max_total_bytes:
                raise self.refuse(
                    f"the files would exceed the limit of {self.limits.max_total_bytes} bytes"
                )
            self.check_place(key, is_dir=False)
            self.file(key, member)

    # writes

    def parent_fd(self, key: str) -> int:
        """The fd of key's directory, creating missing parents (0700 until finish())."""
        parent = key.rpartition("/")[0]
        missing = []
        while parent and parent not in self.kinds:
            missing.append(parent)
            parent = parent.rpartition("/")[0]
        for path in reversed(missing):
            above, _, name = path.rpartition("/")
            os.mkdir(name, 0o700, dir_fd=self.dirs.open(above))
            self.kinds[path] = _Kind.IMPLICIT_DIR
            self.modes[path] = (0o755, None)
            self.directories += 1
        return self.dirs.open(key.rpartition("/")[0])

    def note(self, key: str, mode: int) -> int:
        safe, what = trees.neutral_mode(mode & 0o7777)
        self.stripped.extend((key, w) for w in what)
        return safe

    def directory(self, key: str, member: tarfile.TarInfo) -> None:
        mode = self.note(key, member.mode) | 0o700
        if self.kinds.get(key) is None:
            fd = self.parent_fd(key)
            os.mkdir(key.rpartition("/")[2], 0o700, dir_fd=fd)
            self.directories += 1
        self.kinds[key] = _Kind.DIR
        self.modes[key] = (mode, _mtime(member))

    def symlink(self, key: str, member: tarfile.TarInfo) -> None:
        fd = self.parent_fd(key)
        name = key.rpartition("/")[2]
        os.symlink(member.linkname, name, dir_fd=fd)
        self.kinds[key] = _Kind.SYMLINK
        self.symlinks += 1
        mtime = _mtime(member)
        if mtime is not None:
            os.utime(name, (mtime, mtime), dir_fd=fd, follow_symlinks=False)

    def hardlink(self, key: str, source: str) -> None:
        fd = self.parent_fd(key)
        above, _, name = source.rpartition("/")
        source_fd = _walk(self.dirs.root, above) if above else self.dirs.root
        try:
            os.link(
                name,
                key.rpartition("/")[2],
                src_dir_fd=source_fd,
                dst_dir_fd=fd,
                follow_symlinks=False,
            )
        finally:
            if source_fd != self.dirs.root:
                os.close(source_fd)
        self.kinds[key] = _Kind.FILE
        self.files += 1

    def read(self, source: IO[bytes], size: int) -> bytes:
        try:
            data = source.read(size)
        except _Refused:
            raise
        except Exception as exc:
            raise self.refuse(f"the archive cannot be read ({exc})") from None
        if not data:
            raise self.refuse("the archive is truncated in the middle of this file")
        return data

    def file(self, key: str, member: tarfile.TarInfo) -> None:
        mode = self.note(key, member.mode)
        source = self.tar.extractfile(member)
        if source is None:  # cannot happen for a regular file; keeps mypy honest
            raise self.refuse("tarfile gave no data for a regular file")
        fd = os.open(key.rpartition("/")[2], _FILE_FLAGS, 0o600, dir_fd=self.parent_fd(key))
        self.kinds[key] = _Kind.FILE
        self.files += 1
        try:
            left = member.size
            while left:
                view = memoryview(self.read(source, min(CHUNK, left)))
                left -= len(view)
                self.total += len(view)
                while view:
                    view = view[os.write(fd, view) :]
            os.fchmod(fd, mode)
            mtime = _mtime(member)
            if mtime is not None:
                os.utime(fd, (mtime, mtime))
        finally:
            os.close(fd)

    def finish(self) -> None:
        """Directory modes and times last: writing inside a directory changes its mtime,
        and a read-only directory could not be filled."""
        self.current = None
        for key, (mode, mtime) in self.modes.items():
            fd = self.dirs.open(key)
            os.fchmod(fd, mode)
            if mtime is not None:
                os.utime(fd, (mtime, mtime))
        self.dirs.close()


def _make_target(target: str) -> tuple[int, str, int]:
    """Create target (it must not exist; its parent must): (parent fd, name, target fd)."""
    parent, name = os.path.split(os.path.abspath(target))
    if name in ("", ".", ".."):
        raise UnpackError(f"{target} cannot be a package directory")
    try:
        parent_fd = os.open(parent or "/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise UnpackError(
            f"cannot unpack into {target}: {parent}: {exc.strerror}",
            "the directory that will hold the package must exist",
        ) from None
    try:
        os.mkdir(name, 0o700, dir_fd=parent_fd)
        return parent_fd, name, os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except FileExistsError:
        os.close(parent_fd)
        raise UnpackError(
            f"cannot unpack into {target}: it already exists",
            "packages are unpacked into a new directory; remove it or choose another",
        ) from None
    except OSError as exc:
        os.close(parent_fd)
        raise UnpackError(f"cannot unpack into {target}: {exc.strerror}") from None


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


def unpack(archive: str, target: str, limits: Limits | None = None) -> UnpackResult:
    """Unpack archive into the new directory target, or refuse and leave no trace."""
    limits = limits or Limits()
    raw_file, fmt = _open_archive(archive)
    with raw_file:
        compressed = _Meter(raw_file)
        check = _bomb_check(limits, compressed)
        expanded = _Prefetched(_Meter(_decompressed(fmt, io.BufferedReader(compressed)), check))
        parent_fd, name, target_fd = _make_target(target)
        try:
            try:
                result = _unpack_stream(archive, io.BufferedReader(expanded), target_fd, limits)
            except BaseException as exc:
                _clean_up(archive, target, parent_fd, name, target_fd, exc)
                raise
            os.close(target_fd)
            return result
        finally:
            expanded.close()
            os.close(parent_fd)


def scan(archive: str, limits: Limits | None = None) -> Scan:
    """Read the archive's headers without writing anything: how many entries, how many
    bytes of files and how deep it would unpack. The install checks the layer's disk
    budget and the depth limit against it before unpacking (install.py). A bomb, a
    damaged stream or too many entries are refused here as by unpack(); everything
    else is left to unpack(), which checks every entry again as it writes it."""
    limits = limits or Limits()
    raw_file, fmt = _open_archive(archive)
    with raw_file:
        compressed = _Meter(raw_file)
        check = _bomb_check(limits, compressed)
        stream = io.BufferedReader(_Meter(_decompressed(fmt, io.BufferedReader(compressed)), check))
        entries = total = depth = 0
        deepest = ""
        current: str | None = None
        try:
            with tarfile.open(
                fileobj=stream,
                mode="r|",
                tarinfo=_StrictTarInfo,
                encoding="utf-8",
                errors="surrogateescape",
            ) as tar:
                while (member := tar.next()) is not None:
                    tar.members.clear()  # type: ignore[attr-defined]
                    current = member.name
                    entries += 1
                    if entries > limits.max_files:
                        raise _Refused(
                            f"entry {show(member.name)}",
                            f"too many entries: the limit is {limits.max_files}",
                        )
                    if member.type in _FILE_TYPES and member.size > 0:
                        total += member.size
                    here = entry_depth(member.name, member.type == tarfile.DIRTYPE)
                    if here > depth:
                        depth, deepest = here, member.name
        except _Refused as exc:
            raise UnsafeArchive(archive, exc.entry or _after(current), exc.reason) from None
        except Exception as exc:
            reason = f"the archive cannot be read ({exc})"
            raise UnsafeArchive(archive, _after(current), reason) from None
    return Scan(entries, total, depth, deepest)


def _after(name: str | None) -> str:
    return f"the entry after {show(name)}" if name is not None else "the first entry"


def _unpack_stream(archive: str, stream: IO[bytes], target_fd: int, limits: Limits) -> UnpackResult:
    try:
        tar = tarfile.open(  # noqa: SIM115 (closed in the finally below)
            fileobj=stream,
            mode="r|",
            tarinfo=_StrictTarInfo,
            encoding="utf-8",
            errors="surrogateescape",
        )
    except _Refused as exc:
        raise UnsafeArchive(archive, exc.entry or "the first entry", exc.reason) from None
    except Exception as exc:
        raise UnsafeArchive(archive, None, f"the archive cannot be read ({exc})") from None
    unpacker = _Unpacker(tar, target_fd, limits)
    try:
        result = unpacker.run()
        os.fchmod(target_fd, 0o755)
        return result
    except _Refused as exc:
        raise UnsafeArchive(archive, exc.entry or unpacker.context(), exc.reason) from None
    except OSError as exc:
        raise UnpackError(
            f"{archive}: {unpacker.context()}: cannot unpack: {exc.strerror or exc}",
            "check free space and permissions of the package directory",
        ) from None
    finally:
        unpacker.dirs.close()
        tar.close()


def _clean_up(
    archive: str, target: str, parent_fd: int, name: str, target_fd: int, exc: BaseException
) -> None:
    os.close(target_fd)
    try:
        trees.remove_at(parent_fd, name)
    except OSError as failure:
        raise UnpackError(
            f"{archive}: {exc}; and the partly unpacked {target} could not be removed: "
            f"{failure.strerror or failure}",
            f"remove {target} by hand",
        ) from exc


# --- command line: run as the layer's account in a subprocess ---------------------------


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    defaults = Limits()
    parser = argparse.ArgumentParser(
        prog="python -m layershell.packages.unpack",
        description="Unpack a package archive into a new directory, refusing unsafe entries.",
    )
    parser.add_argument("archive")
    parser.add_argument("target", help="the directory to create (its parent must exist)")
    parser.add_argument("--max-bytes", type=_positive, default=defaults.max_total_bytes)
    parser.add_argument("--max-files", type=_positive, default=defaults.max_files)
    parser.add_argument("--max-ratio", type=float, default=defaults.max_ratio)
    parser.add_argument("--max-path-length", type=_positive, default=defaults.max_path_length)
    parser.add_argument("--max-name-length", type=_positive, default=defaults.max_name_length)
    parser.add_argument("--max-depth", type=_positive, default=defaults.max_depth)
    args = parser.parse_args(argv)
    limits = Limits(
        max_total_bytes=args.max_bytes,
        max_files=args.max_files,
        max_ratio=args.max_ratio,
        max_path_length=args.max_path_length,
        max_name_length=args.max_name_length,
        max_depth=args.max_depth,
    )
    try:
        result = unpack(args.archive, args.target, limits)
    except LayershellError as exc:
        sys.stderr.write(f"{parser.prog}: error: {exc.message}\n")
        if exc.hint:
            sys.stderr.write(f"  hint: {exc.hint}\n")
        return exc.exit_code
    sys.stdout.write(json.dumps(asdict(result), sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
