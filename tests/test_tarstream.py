"""tarstream reads every archive as tarfile does, field for field, and refuses what it
says it refuses; where either refuses a damaged archive, it refuses too."""

from __future__ import annotations

import io
import os
import random
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from layershell.packages.unpack import tarstream
from layershell.packages.unpack.errors import _Refused
from tests import hostile
from tests.hostile import Entry, d, f, hard, sym, tar_bytes

Row = tuple[str, bytes, str, int, int, int, bool, bytes]


def by_tarfile(data: bytes) -> list[Row] | None:
    """What tarfile reads (None: it refuses), as the unpacker used to read it."""
    rows: list[Row] = []
    try:
        with tarfile.open(
            fileobj=io.BytesIO(data), mode="r|", encoding="utf-8", errors="surrogateescape"
        ) as tar:
            for m in tar:
                body = b""
                if m.type in tarstream.FILE_TYPES:
                    source = tar.extractfile(m)
                    body = source.read() if source is not None else b""
                row = (m.name, m.type, m.linkname, m.mode, m.size, int(m.mtime),
                       m.sparse is not None or m.type == tarfile.GNUTYPE_SPARSE, body)  # fmt: skip
                rows.append(row)
    except (tarfile.TarError, EOFError, ValueError, OverflowError):
        return None
    return rows


def by_reader(data: bytes) -> list[Row] | None:
    """What tarstream reads (None: it refuses)."""
    reader = tarstream.TarReader(io.BufferedReader(io.BytesIO(data)))
    rows: list[Row] = []
    try:
        while (m := reader.next()) is not None:
            body = b""
            if m.type in tarstream.FILE_TYPES:
                while chunk := reader.read(1 << 16):
                    body += chunk
            rows.append((m.name, m.type, m.linkname, m.mode, m.size, int(m.mtime), m.sparse, body))
    except _Refused:
        return None
    return rows


def refusal(data: bytes) -> str:
    reader = tarstream.TarReader(io.BufferedReader(io.BytesIO(data)))
    with pytest.raises(_Refused) as caught:
        while reader.next() is not None:
            pass
    return caught.value.reason


LONG = "long-" + "x" * 60 + "/" + "y" * 80 + "/file-with-a-long-name"
ENTRIES = (
    d("bin"),
    f("bin/tool", b"#!/bin/sh\necho hi\n", 0o4755),
    sym("bin/alias", "tool"),
    hard("bin/again", "bin/tool"),
    d("share/docs/"),
    f("share/docs/empty", b""),
    f("share/docs/one-block", b"b" * 512),
    f("share/docs/past-a-block", b"c" * 513),
    f(LONG, b"long\n"),
    f("caf\u00e9/\U0001f600", b"unicode\n"),
)


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_the_formats_tarfile_writes(fmt: int) -> None:
    entries = [*ENTRIES]
    if fmt != tarfile.USTAR_FORMAT:  # ustar cannot hold a link target over 100 bytes
        entries.append(sym("far", "../" * 0 + "z" * 150))
    data = tar_bytes(entries, fmt=fmt)
    read = by_reader(data)
    assert read is not None and read == by_tarfile(data)
    assert [row[0] for row in read][:2] == ["bin", "bin/tool"]
    assert len(read) == len(entries)


def test_numbers_tarfile_writes_in_base_256_and_pax() -> None:
    big = Entry("later", tarfile.REGTYPE, data=b"x")
    for fmt in (tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=fmt) as tar:
            info = tarfile.TarInfo(big.name)
            info.size, info.mtime, info.uid = 1, 8**12 + 5, 8**8 + 1  # past 11 octal digits
            tar.addfile(info, io.BytesIO(b"x"))
        data = buffer.getvalue()
        assert (
            by_reader(data)
            == by_tarfile(data)
            == [("later", b"0", "", 0o644, 1, 8**12 + 5, False, b"x")]
        )


def test_global_pax_headers_and_a_binary_charset() -> None:
    buffer = io.BytesIO()
    with tarfile.open(
        fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT,
        pax_headers={"comment": "made for the test", "mtime": "1234.5"},
    ) as tar:  # fmt: skip
        for name in ("a", "b"):
            info = tarfile.TarInfo(name)
            tar.addfile(info, io.BytesIO(b""))
    data = buffer.getvalue()
    read = by_reader(data)
    assert read == by_tarfile(data)
    assert read is not None and [row[5] for row in read] == [1234, 1234]
    records = _record(b"hdrcharset", b"BINARY") + _record(b"path", b"caf\xe9")
    binary = _header(b"pax", kind=b"x", size=len(records)) + _padded(records)
    binary += _header(b"plain") + END
    read = by_reader(binary)
    assert read == by_tarfile(binary)
    assert read is not None and read[0][0] == "caf\udce9"  # kept, and refused by name later


def _record(key: bytes, value: bytes) -> bytes:
    body = b" " + key + b"=" + value + b"\n"
    size = len(body) + 1
    while len(b"%d" % size) + len(body) != size:
        size += 1
    return b"%d" % size + body


def _header(name: bytes, kind: bytes = b"0", size: int = 0, signed: bool = False) -> bytes:
    block = bytearray(512)
    block[0 : len(name)] = name
    block[100:108] = b"0000644\0"
    for start in (108, 116):
        block[start : start + 8] = b"0000000\0"
    block[124:136] = b"%011o\0" % size
    block[136:148] = b"00000000000\0"
    block[156:157] = kind
    block[257:265] = b"ustar\x0000"
    block[148:156] = b" " * 8
    total = sum(b - 256 if b > 127 else b for b in block) if signed else sum(block)
    block[148:156] = b"%06o\0 " % total
    return bytes(block)


def _padded(data: bytes) -> bytes:
    return data + bytes(-len(data) % 512)


END = bytes(1024)


def test_what_old_tars_wrote() -> None:
    """A V7 directory (a file type with a slash), and a checksum of signed chars."""
    v7 = _header(b"olddir/", kind=b"\0") + END
    assert by_reader(v7) == by_tarfile(v7) == [("olddir", b"5", "", 0o644, 0, 0, False, b"")]
    sun = _header("caf\u00e9".encode(), signed=True) + END
    assert by_reader(sun) == by_tarfile(sun)
    assert by_reader(sun) is not None


def test_the_first_header_of_a_chain_wins() -> None:
    """Two long names and a pax path before one file: tarfile takes the first."""
    gnu = tarfile.TarInfo._create_gnu_long_header  # type: ignore[attr-defined]
    first = gnu("first-" + "a" * 120, tarfile.GNUTYPE_LONGNAME, "utf-8", "strict")
    second = gnu("second-" + "b" * 120, tarfile.GNUTYPE_LONGNAME, "utf-8", "strict")
    pax = tarfile.TarInfo._create_pax_generic_header(  # type: ignore[attr-defined]
        {"path": "from-pax"}, tarfile.XHDTYPE, "utf-8"
    )
    body = _header(b"plain", size=3) + _padded(b"abc")
    everyone = tarfile.TarInfo._create_pax_generic_header(  # type: ignore[attr-defined]
        {"path": "from-global"}, tarfile.XGLTYPE, "utf-8"
    )
    comment = tarfile.TarInfo._create_pax_generic_header(  # type: ignore[attr-defined]
        {"comment": "c"}, tarfile.XHDTYPE, "utf-8"
    )
    chains = ((first, second), (first, pax), (pax, first), (pax, second, first),
              (everyone, comment, first))  # fmt: skip  # review 15: the global path wins
    for chain in chains:
        data = b"".join(chain) + body + END
        read = by_reader(data)
        assert read is not None and read == by_tarfile(data), chain
        assert len(read) == 1 and read[0][7] == b"abc"


def test_archives_gnu_tar_writes(tmp_path: Path) -> None:
    if shutil.which("tar") is None:
        pytest.skip("no tar(1) here")
    src = tmp_path / "src"
    deep = src / ("d" * 90) / ("e" * 90)
    deep.mkdir(parents=True)
    (deep / ("f" * 120)).write_bytes(b"deep\n")
    (src / "link").symlink_to("t" * 150)
    (src / "x").write_bytes(b"x" * 5000)
    os.link(src / "x", src / "y")
    os.utime(src / "x", (1.5e9, 1.5e9))
    for fmt in ("gnu", "oldgnu", "posix", "ustar", "v7"):
        out = tmp_path / f"{fmt}.tar"
        done = subprocess.run(["tar", f"--format={fmt}", "-C", str(src), "-cf", str(out), "."],
                              capture_output=True, check=False)  # fmt: skip
        if done.returncode:  # ustar and v7 cannot hold every name: their refusal is tar's
            continue
        data = out.read_bytes()
        read = by_reader(data)
        assert read is not None and read == by_tarfile(data), fmt
        assert len(read) >= 6


def test_the_hostile_corpus_reads_as_tarfile_reads_it(tmp_path: Path) -> None:
    """Parsing is not where these are refused (the unpacker is): both read the same."""
    import gzip
    import lzma

    import zstandard

    for case, path in hostile.write_corpus(tmp_path):
        if case.name == "decompression-bomb":
            continue  # gigabytes of zeros: the meter's test, not the parser's
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            try:
                raw = gzip.decompress(raw)
            except EOFError:
                continue  # truncated: the decompressor refuses it
        elif raw[:6] == b"\xfd7zXZ\x00":
            raw = lzma.decompress(raw)
        elif raw[:4] == b"\x28\xb5\x2f\xfd":
            raw = zstandard.ZstdDecompressor().decompress(raw)
        ours = by_reader(raw)
        if case.name in ("garbage-after-member", "huge-pax-header", "gzip-of-text",
                         "not-an-archive"):  # fmt: skip
            assert ours is None, case.name  # damaged, too large, or no tar at all
            continue
        assert ours is not None and ours == by_tarfile(raw), case.name


def test_damage_is_refused_or_read_as_tarfile_reads_it() -> None:
    """Seeded single-byte damage to a good archive: tarfile takes much of it for the end
    of the archive; the reader refuses it, or reads exactly what tarfile reads."""
    goods = [tar_bytes(list(ENTRIES), fmt=fmt) for fmt in (tarfile.PAX_FORMAT, tarfile.GNU_FORMAT)]
    rng = random.Random(16)
    refused = same = 0
    for i in range(3000):
        data = bytearray(goods[i % 2])
        for _ in range(1 + i % 3):
            at = rng.randrange(len(data))
            data[at] = rng.randrange(256)
        ours = by_reader(bytes(data))
        if ours is None:
            refused += 1
            continue
        theirs = by_tarfile(bytes(data))
        assert ours == theirs, f"byte {at} set to {data[at]}"
        same += 1
    assert refused > 50 and same > 50  # both outcomes were really exercised


def test_what_it_refuses_that_tarfile_takes() -> None:
    one = _header(b"f", size=1) + _padded(b"x")
    assert by_tarfile(one) is not None
    assert "truncated" in refusal(one)  # no end marker
    assert "damaged (invalid header)" in refusal(one + b"\xa5" * 512 + END)  # not the end
    pax = tarfile.TarInfo._create_pax_generic_header  # type: ignore[attr-defined]
    endless = pax({"comment": "x"}, tarfile.XHDTYPE, "utf-8") * 65 + one + END
    assert "more than 64 metadata headers" in refusal(endless)
    every = pax({"size": "1"}, tarfile.XGLTYPE, "utf-8") + one + END
    assert "global pax header sets the size" in refusal(every)
    dangling = pax({"path": "p"}, tarfile.XHDTYPE, "utf-8") + END
    assert "followed by the end of the archive" in refusal(dangling)
    lonely = pax({"comment": "c"}, tarfile.XGLTYPE, "utf-8") + END
    assert by_tarfile(lonely) is None
    assert "followed by the end of the archive" in refusal(lonely)
    nonsense = pax({"size": "lots"}, tarfile.XHDTYPE, "utf-8") + one + END
    assert "pax size 'lots' is not a number" in refusal(nonsense)
    huge = _header(b"././@LongLink", kind=b"L", size=2 << 20) + END
    assert "metadata header of 2097152 bytes is too large" in refusal(huge)
    sparse = pax({"GNU.sparse.map": "0,1"}, tarfile.XHDTYPE, "utf-8") + one + END
    read = by_reader(sparse)
    assert read is not None and read[0][6] is True  # marked sparse: the unpacker refuses it


def test_data_is_read_in_pieces_and_skipped_when_unread() -> None:
    data = tar_bytes([f("a", b"1" * 3000), f("b", b"2" * 10)], fmt=tarfile.PAX_FORMAT)
    reader = tarstream.TarReader(io.BufferedReader(io.BytesIO(data)))
    first = reader.next()
    assert first is not None and first.name == "a"
    assert reader.read(1000) == b"1" * 1000  # the rest of a is skipped by next()
    second = reader.next()
    assert second is not None and second.name == "b"
    assert reader.read(100) == b"2" * 10 and reader.read(100) == b""
    assert reader.next() is None and reader.next() is None
