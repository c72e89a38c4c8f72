"""Tar headers read from a stream: ustar, GNU and pax, strictly and without tarfile.

tarfile's per-member Python (a dozen field conversions through helpers, its own stream
buffer in front of ours, a file object per member) was 40% of unpacking a package of
10,000 files. This reader does the same parsing in a few slices per header, reads the
data straight from the stream, and refuses what tarfile would take quietly: a damaged
header in mid-stream (tarfile takes it for the end), a metadata header over a MiB, a
chain of them without end, a global header that would set every entry's size.

Where it accepts an archive it reads it as tarfile does, field for field: which
header of a chain wins, the ustar prefix, trailing slashes, the signed checksum of old
tars, base-256 numbers, pax records and their charset. tests/test_tarstream.py holds
it to tarfile's reading of every archive the tests build and of GNU tar's own.
"""

from __future__ import annotations

import re
from typing import IO

from layershell.packages.unpack.errors import _Refused
from layershell.packages.unpack.limits import MiB

BLOCK = 512
METADATA_MAX = MiB  # a pax or GNU long-name header is read into memory whole
CHAIN_MAX = 64  # metadata headers before one entry: real archives have one or two

REGTYPE, AREGTYPE, LNKTYPE, SYMTYPE = b"0", b"\0", b"1", b"2"
CHRTYPE, BLKTYPE, DIRTYPE, FIFOTYPE, CONTTYPE = b"3", b"4", b"5", b"6", b"7"
GNUTYPE_LONGNAME, GNUTYPE_LONGLINK, GNUTYPE_SPARSE = b"L", b"K", b"S"
XHDTYPE, XGLTYPE, SOLARIS_XHDTYPE = b"x", b"g", b"X"

FILE_TYPES = (REGTYPE, AREGTYPE, CONTTYPE)
_REGULAR = (REGTYPE, AREGTYPE, CONTTYPE, GNUTYPE_SPARSE)  # their data follows them
_SUPPORTED = (
    *_REGULAR, LNKTYPE, SYMTYPE, DIRTYPE, FIFOTYPE, CHRTYPE, BLKTYPE,
    GNUTYPE_LONGNAME, GNUTYPE_LONGLINK,
)  # fmt: skip
_GNU = (GNUTYPE_LONGNAME, GNUTYPE_LONGLINK, GNUTYPE_SPARSE)
_METADATA = (XHDTYPE, XGLTYPE, SOLARIS_XHDTYPE, GNUTYPE_LONGNAME, GNUTYPE_LONGLINK)
_KEPT = (b"path", b"linkpath", b"size", b"mtime")  # the pax records _apply_pax acts on
_SPARSE = "GNU.sparse."  # stands for any record of GNU's sparse formats

_HIGH = bytes(range(128, 256))
_ZERO_BLOCK = bytes(BLOCK)
_LENGTH = re.compile(rb"([0-9]{1,20}) ")


class Member:
    """One entry of the archive, as its headers describe it."""

    __slots__ = ("linkname", "mode", "mtime", "name", "size", "sparse", "type")

    def __init__(self, name: str, linkname: str, kind: bytes, mode: int, size: int,
                 mtime: float) -> None:  # fmt: skip
        self.name, self.linkname, self.type = name, linkname, kind
        self.mode, self.size, self.mtime = mode, size, mtime
        self.sparse = kind == GNUTYPE_SPARSE


def _damaged(why: str) -> _Refused:
    return _Refused(None, f"the archive is damaged ({why})")


def _text(field: bytes) -> str:
    end = field.find(0)
    return (field if end < 0 else field[:end]).decode("utf-8", "surrogateescape")


def _number(field: bytes) -> int:
    """A numeric field: octal text, or base-256 (GNU) when the first byte says so."""
    if field[0] in (0o200, 0o377):
        n = int.from_bytes(field[1:], "big")
        return n - 256 ** (len(field) - 1) if field[0] == 0o377 else n
    end = field.find(0)
    try:
        return int((field if end < 0 else field[:end]).decode("ascii").strip() or "0", 8)
    except ValueError:
        raise _damaged("invalid header") from None


def _checksum_ok(buf: bytes) -> bool:
    stored = _number(buf[148:156])
    unsigned = 256 + sum(buf) - sum(buf[148:156])
    if stored == unsigned:
        return True
    # Sun and NeXT tars summed signed chars: each byte over 127 counts 256 less.
    high = BLOCK - 8 - len(buf[:148].translate(None, _HIGH)) - len(buf[156:].translate(None, _HIGH))
    return stored == unsigned - 256 * high


def _header(buf: bytes) -> Member:
    if not _checksum_ok(buf):
        raise _damaged("bad checksum")
    kind = buf[156:157]
    name = _text(buf[0:100])
    for start in (108, 116, 329, 337):  # uid, gid, device numbers: unused, but checked
        _number(buf[start : start + 8])
    member = Member(name, _text(buf[157:257]), kind, _number(buf[100:108]),
                    _number(buf[124:136]), _number(buf[136:148]))  # fmt: skip
    if kind == AREGTYPE and name.endswith("/"):
        member.type = DIRTYPE  # old V7 tars wrote a directory as a file with a slash
    if member.type == DIRTYPE:
        member.name = member.name.rstrip("/")
    prefix = _text(buf[345:500])
    if prefix and kind not in _GNU:
        member.name = prefix + "/" + member.name
    return member


def _block(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


def _pax_records(buf: bytes, into: dict[str, str]) -> None:
    """Parse pax records ("LEN KEY=VALUE\\n") into `into`, as tarfile does."""
    pos, raw, binary = 0, [], None
    while len(buf) > pos and buf[pos] != 0:
        match = _LENGTH.match(buf, pos)
        if not match:
            raise _damaged("invalid header")
        length = int(match.group(1))
        end = match.start(1) + length - 1
        if length < 5 or pos + length > len(buf):
            raise _damaged("invalid header")
        key, equals, value = buf[match.end(1) + 1 : end].partition(b"=")
        if not key or equals != b"=" or buf[end] != 0x0A:
            raise _damaged("invalid header")
        raw.append((key, value))
        if key == b"hdrcharset" and binary is None:
            binary = value == b"BINARY"
        pos += length
    for key, value in raw:
        # Only what _apply_pax acts on is kept: a global header's records are kept for
        # the rest of the archive and applied to every entry, so millions of others
        # (comments, xattrs) would cost memory and time per entry without end.
        if key.startswith(b"GNU.sparse."):
            into[_SPARSE] = ""
        elif key in _KEPT:
            # Every charset comes out as UTF-8 with undecodable bytes kept as
            # surrogates, which the unpacker then refuses by name.
            into[key.decode()] = value.decode("utf-8", "surrogateescape")


def _apply_pax(member: Member, headers: dict[str, str]) -> None:
    for key, value in headers.items():
        if key == _SPARSE:
            member.sparse = True  # refused by the unpacker, whatever the version
        elif key == "path":
            member.name = value.rstrip("/")
        elif key == "linkpath":
            member.linkname = value
        elif key == "size":
            try:
                member.size = int(value)
            except ValueError:
                raise _damaged(f"the pax size {value[:40]!r} is not a number") from None
        elif key == "mtime":
            try:
                member.mtime = float(value)
            except ValueError:
                member.mtime = 0  # as tarfile does: the time is not worth refusing for


class TarReader:
    """Members one at a time from a tar stream; read() gives the current one's data."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._left = 0  # data of the current member not read yet
        self._pad = 0  # and the padding after it
        self._global: dict[str, str] = {}
        self._ended = False

    def _exactly(self, size: int) -> bytes:
        data = self._stream.read(size)
        if len(data) != size:
            raise _Refused(None, "the archive is truncated (it ends without an end marker)")
        return data

    def _skip(self) -> None:
        need = self._left + self._pad
        while need:
            data = self._stream.read(min(need, MiB))
            if not data:
                raise _Refused(None, "the archive is truncated in the middle of this file")
            need -= len(data)
        self._left = self._pad = 0

    def next(self) -> Member | None:
        """The next member, or None at the end marker."""
        if self._ended:
            return None
        self._skip()
        chain: list[tuple[bytes, str | dict[str, str]]] = []
        for seen in range(CHAIN_MAX + 1):
            buf = self._exactly(BLOCK)
            if buf == _ZERO_BLOCK:
                if seen:  # a global header counts: tarfile refuses it there too
                    raise _damaged("a metadata header is followed by the end of the archive")
                self._ended = True  # what follows the end marker is never read
                return None
            member = _header(buf)
            if member.type not in _METADATA:
                return self._builtin(member, chain)
            if member.size > METADATA_MAX:
                raise _Refused(None, f"a metadata header of {member.size} bytes is too large")
            if member.size < 0:
                raise _damaged("negative size")
            data = self._exactly(_block(member.size))
            if member.type == XGLTYPE:
                _pax_records(data, self._global)
                if "size" in self._global:
                    raise _damaged("a global pax header sets the size of every entry")
            elif member.type in (XHDTYPE, SOLARIS_XHDTYPE):
                # A copy of the global records with its own, as tarfile's: applied
                # after a long name in the chain, its global path still wins there.
                local = dict(self._global)  # at most the few records kept
                _pax_records(data, local)
                chain.append((XHDTYPE, local))
            else:
                chain.append((member.type, _text(data)))
        raise _damaged(f"more than {CHAIN_MAX} metadata headers before one entry")

    def _builtin(self, member: Member, chain: list[tuple[bytes, str | dict[str, str]]]) -> Member:
        data_follows = member.type in _REGULAR or member.type not in _SUPPORTED
        _apply_pax(member, self._global)
        if member.type == DIRTYPE:
            member.name = member.name.rstrip("/")
        # The first header of a chain wins: tarfile applies them from the inside out.
        for kind, value in reversed(chain):
            if isinstance(value, dict):
                _apply_pax(member, value)
                continue
            if kind == GNUTYPE_LONGNAME:
                member.name = value
            else:
                member.linkname = value
            if member.type == DIRTYPE:
                member.name = member.name.removesuffix("/")
        if data_follows:
            if member.size < 0:
                raise _damaged("negative size")
            self._left, self._pad = member.size, _block(member.size) - member.size
        return member

    def read(self, size: int) -> bytes:
        """Up to `size` bytes of the current member's data; b"" at its end (or the
        archive's: a short read means the stream ended)."""
        size = min(size, self._left)
        if not size:
            return b""
        data = self._stream.read(size)
        self._left -= len(data)
        return data
