"""A whole archive: scan() reads its headers, unpack() makes it a package in a new
directory, or refuses and leaves no trace."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import IO

from layershell.packages import trees
from layershell.packages.unpack.errors import UnpackError, UnsafeArchive, _Refused, show
from layershell.packages.unpack.limits import Limits, entry_depth
from layershell.packages.unpack.reading import (
    COMPRESSED_READ,
    _bomb_check,
    _decompressed,
    _Meter,
    _open_archive,
    decompressing,
)
from layershell.packages.unpack.tarstream import DIRTYPE, FILE_TYPES, TarReader
from layershell.packages.unpack.writing import _DIR_FLAGS, UnpackResult, _Unpacker


@dataclass(frozen=True)
class Scan:
    """What an archive would unpack to, from its headers alone (scan())."""

    entries: int
    total_bytes: int  # of regular files
    depth: int  # the deepest directory nesting
    deepest: str  # an entry at that depth


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


def unpack(archive: str, target: str, limits: Limits | None = None) -> UnpackResult:
    """Unpack archive into the new directory target, or refuse and leave no trace."""
    limits = limits or Limits()
    raw_file, fmt = _open_archive(archive)
    with raw_file:
        compressed = _Meter(raw_file, most=COMPRESSED_READ)
        check = _bomb_check(limits, compressed)
        source = _Meter(_decompressed(fmt, compressed), check)
        parent_fd, name, target_fd = _make_target(target)
        expanded: io.RawIOBase | None = None
        try:
            try:
                expanded = decompressing(source)
                result = _unpack_stream(archive, io.BufferedReader(expanded), target_fd, limits)
            except BaseException as exc:
                _clean_up(archive, target, parent_fd, name, target_fd, exc)
                raise
            os.close(target_fd)
            return result
        finally:
            if expanded is not None:
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
        compressed = _Meter(raw_file, most=COMPRESSED_READ)
        check = _bomb_check(limits, compressed)
        stream = io.BufferedReader(_Meter(_decompressed(fmt, compressed), check))
        entries = total = depth = 0
        deepest = ""
        current: str | None = None
        tar = TarReader(stream)
        try:
            while (member := tar.next()) is not None:
                current = member.name
                entries += 1
                if entries > limits.max_files:
                    raise _Refused(
                        f"entry {show(member.name)}",
                        f"too many entries: the limit is {limits.max_files}",
                    )
                if member.type in FILE_TYPES and member.size > 0:
                    total += member.size
                here = entry_depth(member.name, member.type == DIRTYPE)
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
    unpacker = _Unpacker(TarReader(stream), target_fd, limits)
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
