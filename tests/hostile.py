"""A corpus of hostile package archives, each with the outcome unpack must give it.

Every archive is built with tarfile (compressed with gzip unless the case is about
another format). Layout the tests rely on: the package is unpacked into
BASE/parent/pkg, next to the canary BASE/parent/canary and BASE/sibling/canary, so
"../canary" and "../../sibling/canary" are what a naive extractor would overwrite.
"""

from __future__ import annotations

import enum
import gzip
import io
import lzma
import random
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import zstandard

from layershell.packages.unpack import Limits

MTIME = 1_600_000_000
BOMB_BYTES = 200 * 2**20


class Outcome(str, enum.Enum):
    REFUSED = "refused"
    NEUTRALISED = "neutralised"


@dataclass(frozen=True)
class Entry:
    """One tar member: name, type, data or link target, mode."""

    name: str
    type: bytes = tarfile.REGTYPE
    data: bytes = b""
    mode: int = 0o644
    linkname: str = ""
    pax: dict[str, str] = field(default_factory=dict)
    device: tuple[int, int] = (0, 0)


def d(name: str, mode: int = 0o755) -> Entry:
    return Entry(name, tarfile.DIRTYPE, mode=mode)


def f(name: str, data: bytes = b"pwned\n", mode: int = 0o644) -> Entry:
    return Entry(name, data=data, mode=mode)


def sym(name: str, target: str) -> Entry:
    return Entry(name, tarfile.SYMTYPE, mode=0o777, linkname=target)


def hard(name: str, target: str) -> Entry:
    return Entry(name, tarfile.LNKTYPE, linkname=target)


def tar_bytes(
    entries: Sequence[Entry],
    *,
    fmt: int = tarfile.PAX_FORMAT,
    encoding: str = "utf-8",
) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt, encoding=encoding) as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry.name)
            info.type, info.mode, info.mtime = entry.type, entry.mode, MTIME
            info.linkname, info.pax_headers = entry.linkname, dict(entry.pax)
            info.devmajor, info.devminor = entry.device
            info.size = len(entry.data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(entry.data) if info.isreg() else None)
    return buffer.getvalue()


def compress(data: bytes, how: str) -> bytes:
    if how == "gz":
        return gzip.compress(data, mtime=0)
    if how == "xz":
        return lzma.compress(data, format=lzma.FORMAT_XZ)
    if how == "zst":
        return zstandard.ZstdCompressor().compress(data)
    assert how == "tar", how
    return data


def archive(
    *entries: Entry, how: str = "gz", fmt: int = tarfile.PAX_FORMAT, encoding: str = "utf-8"
) -> Callable[[Path], None]:
    """A builder writing these entries to the path it is given."""

    def build(path: Path) -> None:
        path.write_bytes(compress(tar_bytes(entries, fmt=fmt, encoding=encoding), how))

    return build


class _Zeros:
    """A file object of n zero bytes, so the bomb is built without holding it in memory."""

    def __init__(self, size: int) -> None:
        self.left = size

    def read(self, size: int = -1) -> bytes:
        size = self.left if size < 0 else min(size, self.left)
        self.left -= size
        return bytes(size)


def build_bomb(path: Path) -> None:
    with tarfile.open(path, "w:gz", compresslevel=9) as tar:
        info = tarfile.TarInfo("zeros")
        info.size, info.mtime = BOMB_BYTES, MTIME
        tar.addfile(info, _Zeros(BOMB_BYTES))


def build_truncated(path: Path) -> None:
    data = random.Random(3).randbytes(256 * 1024)
    whole = compress(tar_bytes([f("big", data)]), "gz")
    path.write_bytes(whole[: len(whole) // 2])


def build_garbage_after_member(path: Path) -> None:
    data = tar_bytes([f("ok", b"fine\n"), f("next", b"x")], fmt=tarfile.USTAR_FORMAT)
    assert data[1024:1028] == b"next"  # header, one data block, then the second header
    path.write_bytes(compress(data[:1024] + b"\xa5" * 512 + data[1536:], "gz"))


def build_not_an_archive(path: Path) -> None:
    path.write_text("#!/bin/sh\necho this is a shell script, not a package\n")


def build_gzip_of_text(path: Path) -> None:
    path.write_bytes(gzip.compress(b"just some text, no tar inside\n" * 40))


@dataclass(frozen=True)
class Case:
    """A hostile archive and what unpack must do with it.

    refused: UnsafeArchive whose message contains `message` (which quotes the entry).
    neutralised: unpacking succeeds; `path` ends with `mode` and `stripped` is reported.
    """

    name: str
    filename: str
    build: Callable[[Path], None]
    outcome: Outcome
    message: str = ""
    path: str = ""
    mode: int = 0
    stripped: str = ""
    limits: Limits = field(default_factory=Limits)


def refused(
    name: str,
    build: Callable[[Path], None],
    message: str,
    *,
    ext: str = "tar.gz",
    limits: Limits | None = None,
) -> Case:
    return Case(name, f"{name}.{ext}", build, Outcome.REFUSED, message, limits=limits or Limits())


def neutralised(
    name: str, build: Callable[[Path], None], path: str, mode: int, stripped: str
) -> Case:
    return Case(
        name, f"{name}.tar.gz", build, Outcome.NEUTRALISED, path=path, mode=mode, stripped=stripped
    )


DEEP = "a/" * 1500

CASES: tuple[Case, ...] = (
    # names
    refused("absolute-path", archive(f("/tmp/x")), "'/tmp/x': the name is an absolute path"),
    refused("dotdot", archive(f("../canary")), "'../canary': the name has a '..' component"),
    refused("dotdot-nested", archive(f("a/../../canary")), "'a/../../canary'"),
    refused(
        "dotdot-into-sibling",
        archive(d("a"), f("a/../../../sibling/canary")),
        "'a/../../../sibling/canary'",
    ),
    refused("empty-name", archive(f("")), "entry '': the name is empty"),
    refused("nul-in-name", archive(f("é\0x")), "'é\\x00x': the name contains a NUL byte"),
    refused(
        "non-utf8-name",
        archive(f("caf\xe9"), fmt=tarfile.GNU_FORMAT, encoding="latin-1"),
        "'caf\\xe9': the name is not valid UTF-8",
    ),
    refused("long-component", archive(f("x" * 300)), "component of 300 bytes"),
    refused("long-path", archive(f("d/" * 2100 + "f")), "4201 bytes long"),
    # types
    refused(
        "char-device",
        archive(Entry("dev/null", tarfile.CHRTYPE, mode=0o666, device=(1, 3))),
        "'dev/null': a character device is not allowed",
    ),
    refused(
        "block-device",
        archive(Entry("dev/sda", tarfile.BLKTYPE, mode=0o660, device=(8, 0))),
        "'dev/sda': a block device is not allowed",
    ),
    refused("fifo", archive(Entry("pipe", tarfile.FIFOTYPE)), "'pipe': a FIFO is not allowed"),
    refused(
        "sparse-file",
        archive(Entry("holes", tarfile.GNUTYPE_SPARSE), fmt=tarfile.GNU_FORMAT),
        "'holes': a sparse file is not allowed",
    ),
    refused(
        "volume-header",
        archive(Entry("label", b"V"), fmt=tarfile.GNU_FORMAT),
        "'label': entries of type b'V' are not allowed",
    ),
    # symbolic links
    refused(
        "symlink-outside", archive(sym("etc", "../../etc")), "'etc': symbolic link to '../../etc'"
    ),
    refused(
        "symlink-absolute",
        archive(sym("passwd", "/etc/passwd")),
        "'passwd': symbolic link to the absolute path '/etc/passwd'",
    ),
    refused(
        "symlink-then-file-through-it",
        archive(sym("link", "../../sibling"), f("link/canary")),
        "'link': symbolic link to '../../sibling' points outside",
    ),
    refused(
        "file-through-inside-symlink",
        archive(d("d"), sym("link", "d"), f("link/f")),
        "'link/f': the path goes through the symbolic link 'link'",
    ),
    refused(
        "symlink-climbs-through-link",
        archive(d("a/b"), sym("a/b/up", ".."), sym("esc", "a/b/up/../../..")),
        "'esc': symbolic link to 'a/b/up/../../..': '..' after a name",
    ),
    refused("symlink-one-level-too-high", archive(sym("a/l", "../..")), "'a/l': symbolic link to"),
    refused(
        "symlink-empty-target", archive(sym("l", "")), "'l': the symbolic link target is empty"
    ),
    # hard links
    refused(
        "hardlink-etc-passwd",
        archive(hard("passwd", "/etc/passwd")),
        "'passwd': the hard link target is an absolute path: '/etc/passwd'",
    ),
    refused(
        "hardlink-outside",
        archive(hard("canary", "../canary")),
        "'canary': the hard link target has a '..' component",
    ),
    refused(
        "hardlink-to-directory",
        archive(d("d"), hard("h", "d")),
        "'h': hard link to 'd', which is not a regular file",
    ),
    refused(
        "hardlink-forward",
        archive(hard("h", "later"), f("later")),
        "'h': hard link to 'later', which is not a regular file",
    ),
    refused(
        "hardlink-through-symlink",
        archive(d("d"), f("d/f"), sym("l", "d"), hard("h", "l/f")),
        "'h': hard link to 'l/f'",
    ),
    # clashes
    refused("duplicate-file", archive(f("a"), f("a")), "'a': an earlier entry already made 'a'"),
    refused("dir-then-file", archive(d("d"), f("d")), "'d': an earlier entry already made 'd'"),
    refused("file-then-dir", archive(f("f"), d("f")), "'f': an earlier entry already made 'f'"),
    refused(
        "file-then-child", archive(f("f"), f("f/x")), "'f/x': the path goes through the file 'f'"
    ),
    refused(
        "symlink-then-same-name",
        archive(sym("l", "x"), f("l")),
        "'l': an earlier entry already made 'l' a symbolic link",
    ),
    # limits
    refused("decompression-bomb", build_bomb, "entry 'zeros': decompression bomb"),
    refused(
        "too-many-files",
        archive(*(f(f"f{i:03}") for i in range(50))),
        "'f010': too many entries",
        limits=Limits(max_files=10),
    ),
    refused(
        "too-many-bytes",
        archive(f("small"), f("big", random.Random(1).randbytes(2 * 2**20))),
        "'big': the files would exceed the limit of 1048576 bytes",
        limits=Limits(max_total_bytes=2**20),
    ),
    refused(
        "huge-pax-header",
        archive(Entry("x", pax={"comment": "c" * (2 * 2**20)})),
        "metadata header of",
    ),
    # cleaning up what was written before the refusal
    refused(
        "deep-tree-then-escape",
        archive(f(DEEP + "f"), f("../canary")),
        "'../canary'",
        limits=Limits(max_depth=2000),  # past the depth limit, to test the cleanup
    ),
    refused(
        "bushy-tree-then-escape",
        archive(
            *(f(f"t/{i}/{j}/file") for i in range(4) for j in "xyz"),
            sym("t/0/up", "../1"),
            sym("t/1/x/canary", "../../../../canary"),  # refused: the cleanup is what counts
        ),
        "'t/1/x/canary': symbolic link to '../../../../canary' points outside",
    ),
    refused(
        "readonly-dir-then-escape",
        archive(d("ro", 0o555), f("ro/f"), f("../canary")),
        "'../canary'",
    ),
    # every format goes through the same checks
    refused("xz-dotdot", archive(f("../canary"), how="xz"), "'../canary'", ext="tar.xz"),
    refused("zstd-dotdot", archive(f("../canary"), how="zst"), "'../canary'", ext="tar.zst"),
    refused("plain-tar-dotdot", archive(f("../canary"), how="tar"), "'../canary'", ext="tar"),
    # not archives, or broken ones
    refused("not-an-archive", build_not_an_archive, "not a package archive", ext="sh"),
    refused("gzip-of-text", build_gzip_of_text, "the first entry: the archive is"),
    refused("truncated", build_truncated, "'big': the archive cannot be read"),
    refused(
        "garbage-after-member", build_garbage_after_member, "after 'ok': the archive is damaged"
    ),
    # neutralised: unpacked, without the dangerous bits
    neutralised(
        "setuid-file", archive(f("bin/su", b"#!/bin/sh\n", 0o4755)), "bin/su", 0o755, "setuid"
    ),
    neutralised("setgid-dir", archive(d("share", 0o2775), f("share/f")), "share", 0o755, "setgid"),
    neutralised(
        "world-writable-file", archive(f("data", b"x", 0o666)), "data", 0o644, "world write"
    ),
    neutralised("sticky-dir", archive(d("tmp", 0o1777)), "tmp", 0o755, "sticky"),
    neutralised(
        "setuid-setgid-world-writable",
        archive(f("tool", b"x", 0o6777)),
        "tool",
        0o755,
        "group and world write removed",
    ),
)


def write_corpus(directory: Path) -> list[tuple[Case, Path]]:
    """Write every hostile archive into directory; return each case with its file."""
    written = []
    for case in CASES:
        path = directory / case.filename
        case.build(path)
        written.append((case, path))
    return written
