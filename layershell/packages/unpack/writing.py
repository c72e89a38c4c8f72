"""Writing a package: each entry checked before anything is written for it, then written
through directory descriptors opened one component at a time (the unpacker)."""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass

from layershell.packages import trees
from layershell.packages.unpack import tarstream as ts
from layershell.packages.unpack.errors import _Refused, show
from layershell.packages.unpack.limits import Limits, depth_refusal, entry_depth
from layershell.packages.unpack.reading import CHUNK
from layershell.packages.unpack.tarstream import FILE_TYPES, Member, TarReader

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

_TYPE_WORDS = {
    ts.CHRTYPE: "a character device",
    ts.BLKTYPE: "a block device",
    ts.FIFOTYPE: "a FIFO",
    ts.GNUTYPE_SPARSE: "a sparse file",
}
_KNOWN_TYPES = (*FILE_TYPES, ts.DIRTYPE, ts.SYMTYPE, ts.LNKTYPE)


@dataclass(frozen=True)
class UnpackResult:
    """What was unpacked; stripped lists (entry, what was neutralised)."""

    files: int
    directories: int
    symlinks: int
    total_bytes: int
    stripped: tuple[tuple[str, str], ...]


class _Kind(enum.Enum):
    DIR = "a directory"
    IMPLICIT_DIR = "a parent directory"
    FILE = "a file"
    SYMLINK = "a symbolic link"


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


def _mtime(member: Member) -> float | None:
    value = member.mtime
    return float(value) if 0 <= value < 1 << 33 else None


# --- the unpacker ------------------------------------------------------------------------


class _Unpacker:
    def __init__(self, tar: TarReader, target_fd: int, limits: Limits) -> None:
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

    def _next(self) -> Member | None:
        try:
            return self.tar.next()
        except _Refused:
            raise
        except Exception as exc:
            raise self.refuse(f"the archive cannot be read ({exc})") from None

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

    def entry(self, member: Member) -> None:
        self.entries += 1
        if self.entries > self.limits.max_files:
            raise self.refuse(f"too many entries: the limit is {self.limits.max_files}")
        key = self.normalise(member.name, "name")
        kind = member.type
        if kind in _TYPE_WORDS:
            raise self.refuse(f"{_TYPE_WORDS[kind]} is not allowed in a package")
        if kind not in _KNOWN_TYPES:
            raise self.refuse(f"entries of type {kind!r} are not allowed in a package")
        if not key:
            if kind == ts.DIRTYPE:
                return  # "./": the target itself, made by unpack()
            raise self.refuse("the name is empty")
        depth = entry_depth(key, kind == ts.DIRTYPE)
        if depth > self.limits.max_depth:
            raise self.refuse(depth_refusal(depth, self.limits.max_depth))
        if kind == ts.DIRTYPE:
            self.check_place(key, is_dir=True)
            self.directory(key, member)
        elif kind == ts.SYMTYPE:
            self.check_symlink(key, member.linkname)
            self.check_place(key, is_dir=False)
            self.symlink(key, member)
        elif kind == ts.LNKTYPE:
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
            if member.sparse:
                raise self.refuse(f"{_TYPE_WORDS[ts.GNUTYPE_SPARSE]} is not allowed")
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

    def directory(self, key: str, member: Member) -> None:
        mode = self.note(key, member.mode) | 0o700
        if self.kinds.get(key) is None:
            fd = self.parent_fd(key)
            os.mkdir(key.rpartition("/")[2], 0o700, dir_fd=fd)
            self.directories += 1
        self.kinds[key] = _Kind.DIR
        self.modes[key] = (mode, _mtime(member))

    def symlink(self, key: str, member: Member) -> None:
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

    def read(self, size: int) -> bytes:
        try:
            data = self.tar.read(size)
        except _Refused:
            raise
        except Exception as exc:
            raise self.refuse(f"the archive cannot be read ({exc})") from None
        if not data:
            raise self.refuse("the archive is truncated in the middle of this file")
        return data

    def file(self, key: str, member: Member) -> None:
        mode = self.note(key, member.mode)
        fd = os.open(key.rpartition("/")[2], _FILE_FLAGS, 0o600, dir_fd=self.parent_fd(key))
        self.kinds[key] = _Kind.FILE
        self.files += 1
        try:
            left = member.size
            while left:
                view = memoryview(self.read(min(CHUNK, left)))
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
