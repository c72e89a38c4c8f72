"""unpack: every hostile archive is refused or neutralised, and nothing outside the
package directory changes; good archives unpack identically from every format."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import pytest

from layershell.packages.unpack import Limits, show, unpack
from layershell.packages.unpack.__main__ import main
from layershell.packages.unpack.errors import UnpackError, UnsafeArchive
from layershell.packages.unpack.reading import Format, detect_format
from tests import hostile
from tests.hostile import MTIME, compress, d, f, hard, sym, tar_bytes
from tests.support import child_pids

REPO = Path(__file__).resolve().parent.parent
OUTSIDE = ("/tmp/x", "/etc/passwd", "/etc/shadow")
CANARY = b"canary: must never change\n"
OLD = 1_000_000_000  # the canaries' mtime, far from now


def snapshot(root: Path, skip: Path) -> dict[str, tuple[object, ...]]:
    """Everything under root except skip: type, mode, owner, inode, content, mtime."""
    found: dict[str, tuple[object, ...]] = {}
    pending = [root]
    while pending:
        directory = pending.pop()
        for entry in os.scandir(directory):
            path = Path(entry.path)
            if path == skip:
                continue
            st = os.lstat(path)
            rel = str(path.relative_to(root))
            if stat.S_ISDIR(st.st_mode):
                found[rel] = ("dir", st.st_mode, st.st_uid, st.st_ino)
                pending.append(path)
            elif stat.S_ISLNK(st.st_mode):
                found[rel] = ("link", os.readlink(path), st.st_ino, st.st_mtime_ns)
            else:
                found[rel] = (st.st_mode, st.st_uid, st.st_ino, path.read_bytes(), st.st_mtime_ns)
    return found


def outside_state() -> dict[str, tuple[int, int, int] | None]:
    state: dict[str, tuple[int, int, int] | None] = {}
    for name in OUTSIDE:
        try:
            st = os.lstat(name)
            state[name] = (st.st_ino, st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            state[name] = None
    return state


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class Scene:
    """BASE/parent/{canary, pkg (the target)} and BASE/sibling/canary."""

    def __init__(self, tmp: Path) -> None:
        self.base = tmp / "base"
        self.parent = self.base / "parent"
        self.target = self.parent / "pkg"
        self.inbox = tmp / "in"
        for directory in (self.parent, self.base / "sibling", self.inbox):
            directory.mkdir(parents=True)
        for canary in (self.parent / "canary", self.base / "sibling" / "canary"):
            canary.write_bytes(CANARY)
            os.utime(canary, (OLD, OLD))


@pytest.fixture
def scene(tmp_path: Path) -> Scene:
    return Scene(tmp_path)


@pytest.mark.parametrize("case", hostile.CASES, ids=lambda case: case.name)
def test_hostile_archive(case: hostile.Case, scene: Scene) -> None:
    archive = scene.inbox / case.filename
    case.build(archive)
    before, outside, fds = snapshot(scene.base, scene.target), outside_state(), open_fds()

    if case.outcome is hostile.Outcome.REFUSED:
        with pytest.raises(UnsafeArchive) as caught:
            unpack(str(archive), str(scene.target), case.limits)
        message = caught.value.message
        assert message.startswith(f"{archive}: "), message
        assert case.message in message
        assert caught.value.hint == "the package is refused; nothing was installed"
        assert caught.value.exit_code == 1
        assert not os.path.lexists(scene.target)
    else:
        result = unpack(str(archive), str(scene.target), case.limits)
        st = os.lstat(scene.target / case.path)
        assert oct(stat.S_IMODE(st.st_mode)) == oct(case.mode)
        assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())
        assert any(
            entry == case.path and case.stripped in what for entry, what in result.stripped
        ), result.stripped
        for path in [scene.target, *scene.target.rglob("*")]:
            mode = os.lstat(path).st_mode
            if not stat.S_ISLNK(mode):
                assert mode & 0o7022 == 0, path

    # Nothing outside the package directory changed, and nothing new appeared there.
    assert snapshot(scene.base, scene.target) == before
    assert (scene.parent / "canary").read_bytes() == CANARY
    assert (scene.base / "sibling" / "canary").stat().st_mtime == OLD
    assert outside_state() == outside
    assert open_fds() == fds


def test_the_corpus_is_complete(tmp_path: Path) -> None:
    written = hostile.write_corpus(tmp_path)
    assert len(written) >= 18
    assert all(path.is_file() for _, path in written)
    formats = {detect_format(str(path)) for _, path in written if path.suffix != ".sh"}
    assert formats == set(Format)


def test_a_bomb_stops_early(scene: Scene) -> None:
    archive = scene.inbox / "bomb.tar.gz"
    hostile.build_bomb(archive)
    with pytest.raises(UnsafeArchive) as caught:
        unpack(str(archive), str(scene.target))
    found = re.search(r"(\d+) bytes came out of the first (\d+) bytes", caught.value.message)
    assert found, caught.value.message
    expanded, read = int(found[1]), int(found[2])
    assert read < archive.stat().st_size // 4  # stopped in the first quarter of the archive
    assert expanded < hostile.BOMB_BYTES // 20


def test_small_archives_may_expand_a_lot(scene: Scene) -> None:
    """Below the 1 MiB floor the ratio is not applied: a tiny package of zeros is fine."""
    archive = scene.inbox / "zeros.tar.gz"
    archive.write_bytes(compress(tar_bytes([f("zeros", bytes(900 * 1024))]), "gz"))
    assert archive.stat().st_size * 100 < 900 * 1024
    result = unpack(str(archive), str(scene.target))
    assert result.total_bytes == 900 * 1024


# --- good archives -------------------------------------------------------------------

TOOL = b"#!/bin/sh\necho tool\n"
GOOD = (
    d("bin"),
    f("bin/tool", TOOL, 0o755),
    hard("bin/tool-again", "bin/tool"),
    sym("bin/alias", "tool"),
    d("lib"),
    f("lib/libfoo.so.1", b"\x7fELF not really\n", 0o644),
    sym("lib/libfoo.so", "libfoo.so.1"),
    d("share/doc"),
    f("share/doc/README", b"read me\n"),
    sym("share/doc/tool", "../../bin/tool"),
    f("implicit/parent/file", b"made without its directories\n", 0o600),
    d("private", 0o750),
    d("."),
)
EXPECTED = {
    "bin": ("dir", 0o755),
    "bin/tool": ("file", 0o755, TOOL),
    "bin/tool-again": ("file", 0o755, TOOL),
    "bin/alias": ("link", "tool"),
    "lib": ("dir", 0o755),
    "lib/libfoo.so.1": ("file", 0o644, b"\x7fELF not really\n"),
    "lib/libfoo.so": ("link", "libfoo.so.1"),
    "share": ("dir", 0o755),
    "share/doc": ("dir", 0o755),
    "share/doc/README": ("file", 0o644, b"read me\n"),
    "share/doc/tool": ("link", "../../bin/tool"),
    "implicit": ("dir", 0o755),
    "implicit/parent": ("dir", 0o755),
    "implicit/parent/file": ("file", 0o600, b"made without its directories\n"),
    "private": ("dir", 0o750),
}


def tree(root: Path) -> dict[str, tuple[object, ...]]:
    found: dict[str, tuple[object, ...]] = {}
    for path in root.rglob("*"):
        st = os.lstat(path)
        rel = str(path.relative_to(root))
        assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid()), rel
        if stat.S_ISLNK(st.st_mode):
            found[rel] = ("link", os.readlink(path))
        elif stat.S_ISDIR(st.st_mode):
            found[rel] = ("dir", stat.S_IMODE(st.st_mode))
        else:
            found[rel] = ("file", stat.S_IMODE(st.st_mode), path.read_bytes())
    return found


FORMATS = {"tar": Format.TAR, "gz": Format.GZIP, "xz": Format.XZ, "zst": Format.ZSTD}


@pytest.mark.parametrize("how", list(FORMATS))
def test_every_format_unpacks_the_same_tree(how: str, scene: Scene) -> None:
    archive = scene.inbox / f"good.{how}"
    archive.write_bytes(compress(tar_bytes(GOOD), how))
    assert detect_format(str(archive)) is FORMATS[how]

    result = unpack(str(archive), str(scene.target))

    assert tree(scene.target) == EXPECTED
    assert stat.S_IMODE(scene.target.stat().st_mode) == 0o755
    tool, again = (os.lstat(scene.target / "bin" / n) for n in ("tool", "tool-again"))
    assert tool.st_ino == again.st_ino
    assert tool.st_mtime == MTIME
    assert os.lstat(scene.target / "bin").st_mtime == MTIME
    assert os.lstat(scene.target / "bin" / "alias").st_mtime == MTIME
    assert (scene.target / "share" / "doc" / "tool").read_bytes() == TOOL
    files = [e for e in GOOD if e.type == tarfile.REGTYPE]
    assert result.files == len(files) + 1  # and the hard link
    assert result.directories == 7
    assert result.symlinks == 3
    assert result.total_bytes == sum(len(e.data) for e in files)
    assert result.stripped == ()


def test_an_archive_made_by_gnu_tar(scene: Scene, tmp_path: Path) -> None:
    if shutil.which("tar") is None:
        pytest.skip("no tar(1) here")
    src = tmp_path / "src"
    (src / "bin").mkdir(parents=True)
    (src / "bin" / "tool").write_bytes(TOOL)
    (src / "bin" / "tool").chmod(0o755)
    (src / "bin" / "alias").symlink_to("tool")
    (src / "share").mkdir()
    (src / "share").chmod(0o2775)  # setgid group-writable, as under /usr/local on Debian
    os.link(src / "bin" / "tool", src / "share" / "hard")
    archive = scene.inbox / "gnu.tar.gz"
    subprocess.run(["tar", "-C", str(src), "-czf", str(archive), "."], check=True)

    result = unpack(str(archive), str(scene.target))

    assert tree(scene.target) == {
        "bin": ("dir", 0o755),
        "bin/tool": ("file", 0o755, TOOL),
        "bin/alias": ("link", "tool"),
        "share": ("dir", 0o755),
        "share/hard": ("file", 0o755, TOOL),
    }
    assert set(result.stripped) == {
        ("share", "setgid bit stripped"),
        ("share", "group write removed"),
    }


@pytest.mark.slow  # creating 10,000 files takes seconds on a loaded disk
def test_ten_thousand_files(scene: Scene) -> None:
    entries = [f(f"d{i // 100:02}/f{i:05}", b"%d\n" % i) for i in range(10_000)]
    archive = scene.inbox / "many.tar.gz"
    archive.write_bytes(compress(tar_bytes(entries), "gz"))
    result = unpack(str(archive), str(scene.target))
    assert (result.files, result.directories) == (10_000, 100)
    assert (scene.target / "d42" / "f04217").read_bytes() == b"4217\n"
    assert sum(1 for _ in scene.target.rglob("f*")) == 10_000


def test_explicit_directory_after_its_contents(scene: Scene) -> None:
    archive = scene.inbox / "late-dir.tar.gz"
    archive.write_bytes(compress(tar_bytes([f("a/f"), d("a", 0o750)]), "gz"))
    result = unpack(str(archive), str(scene.target))
    assert stat.S_IMODE((scene.target / "a").stat().st_mode) == 0o750
    assert result.directories == 1


def test_read_only_directory_is_filled_and_stays_removable(scene: Scene) -> None:
    archive = scene.inbox / "ro.tar.gz"
    archive.write_bytes(compress(tar_bytes([d("ro", 0o555), f("ro/f", b"x")]), "gz"))
    unpack(str(archive), str(scene.target))
    assert (scene.target / "ro" / "f").read_bytes() == b"x"
    assert stat.S_IMODE((scene.target / "ro").stat().st_mode) == 0o755  # owner rwx kept
    shutil.rmtree(scene.target)


# --- the target ----------------------------------------------------------------------


def good_archive(scene: Scene) -> Path:
    archive = scene.inbox / "good.tar.gz"
    archive.write_bytes(compress(tar_bytes(GOOD), "gz"))
    return archive


def test_an_existing_target_is_left_alone(scene: Scene) -> None:
    scene.target.mkdir()
    (scene.target / "mine").write_text("keep me")
    with pytest.raises(UnpackError, match="already exists"):
        unpack(str(good_archive(scene)), str(scene.target))
    assert [p.name for p in scene.target.iterdir()] == ["mine"]


def test_the_parent_must_exist(scene: Scene) -> None:
    target = scene.parent / "missing" / "pkg"
    with pytest.raises(UnpackError, match="No such file or directory") as caught:
        unpack(str(good_archive(scene)), str(target))
    assert "must exist" in caught.value.hint
    assert not (scene.parent / "missing").exists()


def test_only_regular_files_are_archives(scene: Scene) -> None:
    fifo = scene.inbox / "fifo.tar.gz"
    os.mkfifo(fifo)
    for path in (fifo, scene.inbox):
        with pytest.raises(UnsafeArchive, match="not a regular file"):
            unpack(str(path), str(scene.target))
    assert not os.path.lexists(scene.target)


def test_a_missing_archive(scene: Scene) -> None:
    with pytest.raises(UnpackError, match="cannot read"):
        unpack(str(scene.inbox / "nope.tar.gz"), str(scene.target))
    assert not os.path.lexists(scene.target)


# --- formats, names, limits ----------------------------------------------------------


def test_detect_format(tmp_path: Path) -> None:
    ustar = tar_bytes([f("x")], fmt=tarfile.USTAR_FORMAT)
    # A pre-POSIX (v7) header has no magic: only its checksum says it is tar.
    header = bytearray(ustar[:512])
    header[257:265] = bytes(8)
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    cases = {
        "a.tar": (ustar, Format.TAR),
        "v7.tar": (bytes(header) + ustar[512:], Format.TAR),
        "a.tgz": (compress(ustar, "gz"), Format.GZIP),
        "a.txz": (compress(ustar, "xz"), Format.XZ),
        "a.tzst": (compress(ustar, "zst"), Format.ZSTD),
    }
    for name, (data, expected) in cases.items():
        (tmp_path / name).write_bytes(data)
        assert detect_format(str(tmp_path / name)) is expected, name
    header[0] ^= 1  # the checksum no longer matches
    (tmp_path / "bad").write_bytes(bytes(header))
    for name, data in (("bad", bytes(header)), ("empty", b""), ("zip", b"PK\x03\x04" + bytes(600))):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(UnsafeArchive, match=r"accepted formats: \.tar, \.tar\.gz"):
            detect_format(str(tmp_path / name))


def test_show_makes_hostile_names_printable() -> None:
    assert show("bin/tool") == "'bin/tool'"
    assert show("caf\udce9") == "'caf\\xe9'"
    assert show("a\nb\x1b[31m") == "'a\\nb\\x1b[31m'"
    assert show("it's") == "'it\\'s'"
    assert show("é") == "'é'"
    long = show("x" * 5000)
    assert len(long) < 300 and "4740 more" in long


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_files"):
        Limits(max_files=0)


# --- the command line, as the installer runs it --------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "layershell.packages.unpack", *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        check=False,
    )


def test_cli_round_trip(scene: Scene) -> None:
    archive = good_archive(scene)
    done = run_cli(str(archive), str(scene.target))
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    expected = unpack(str(archive), str(scene.parent / "again"))
    assert summary == json.loads(json.dumps(asdict(expected)))
    assert tree(scene.target) == EXPECTED


def test_cli_refusal(scene: Scene) -> None:
    archive = scene.inbox / "evil.tar.gz"
    hostile.archive(f("ok"), f("../canary"))(archive)
    done = run_cli(str(archive), str(scene.target))
    assert done.returncode == 1
    assert done.stdout == ""
    assert f"{archive}: entry '../canary'" in done.stderr
    assert "hint: the package is refused; nothing was installed" in done.stderr
    assert not os.path.lexists(scene.target)


def test_cli_limits(scene: Scene, capsys: pytest.CaptureFixture[str]) -> None:
    archive = good_archive(scene)
    assert main([str(archive), str(scene.target), "--max-files", "3"]) == 1
    assert "too many entries: the limit is 3" in capsys.readouterr().err
    assert main([str(archive), str(scene.target), "--max-bytes", "10"]) == 1
    assert "exceed the limit of 10 bytes" in capsys.readouterr().err
    assert main([str(archive), str(scene.target), "--max-name-length", "5"]) == 1
    assert "over the limit of 5" in capsys.readouterr().err
    assert not os.path.lexists(scene.target)
    assert main([str(archive), str(scene.target), "--max-ratio", "2.5"]) == 0
    assert json.loads(capsys.readouterr().out)["symlinks"] == 3


def entries_of(archive: Path) -> Iterator[str]:
    with tarfile.open(archive) as tar:
        yield from tar.getnames()


def test_hostile_entries_are_really_in_the_archives(tmp_path: Path) -> None:
    """The corpus is what it claims: tarfile reads back the hostile names unchanged."""
    wanted = {
        "absolute-path": "/tmp/x",
        "dotdot": "../canary",
        "nul-in-name": "é\0x",
        "empty-name": "",
    }
    for case in hostile.CASES:
        if case.name in wanted:
            path = tmp_path / case.filename
            case.build(path)
            assert wanted[case.name] in list(entries_of(path)), case.name


# --- the depth limit (issue 10, attack 9) --------------------------------------------


def test_a_package_2000_directories_deep_is_refused(scene: Scene) -> None:
    """Before the limit it unpacked, and every later rmtree of it hit RecursionError."""
    archive = scene.inbox / "deep.tar.gz"
    hostile.archive(f("ok"), f("d/" * 2000 + "f"))(archive)
    with pytest.raises(UnsafeArchive) as caught:
        unpack(str(archive), str(scene.target))
    assert "the path is 2000 directories deep, over the limit of 64" in caught.value.message
    assert not os.path.lexists(scene.target)


@pytest.mark.parametrize(("depth", "ok"), [(64, True), (65, False)])
def test_depth_limit_counts_directories(scene: Scene, depth: int, ok: bool) -> None:
    archive = scene.inbox / "edge.tar.gz"
    # A file 64 directories deep is fine, and so is the 64th directory itself.
    hostile.archive(d("d/" * depth), f("d/" * depth + "f"))(archive)
    if ok:
        unpack(str(archive), str(scene.target))
        assert (scene.target / ("d/" * depth + "f")).is_file()
    else:
        with pytest.raises(UnsafeArchive, match=f"the path is {depth} directories deep"):
            unpack(str(archive), str(scene.target))
        assert not os.path.lexists(scene.target)


def test_depth_limit_is_configurable(scene: Scene) -> None:
    archive = scene.inbox / "deep.tar.gz"
    hostile.archive(f("a/b/c/f"))(archive)
    with pytest.raises(UnsafeArchive, match="3 directories deep, over the limit of 2"):
        unpack(str(archive), str(scene.target), Limits(max_depth=2))
    assert main([str(archive), str(scene.target), "--max-depth", "3"]) == 0


def test_scan_reads_headers_only(scene: Scene) -> None:
    from layershell.packages.unpack import scan

    archive = scene.inbox / "scan.tar.gz"
    hostile.archive(d("x/y"), f("x/y/z/f", b"12345"), f("g", b"abc"), sym("l", "g"))(archive)
    found = scan(str(archive))
    assert (found.entries, found.total_bytes, found.depth) == (4, 8, 3)
    assert found.deepest == "x/y/z/f"
    assert not os.path.lexists(scene.target)  # nothing was written anywhere
    bomb = scene.inbox / "bomb.tar.gz"
    hostile.build_bomb(bomb)
    with pytest.raises(UnsafeArchive, match="decompression bomb"):
        scan(str(bomb))


def test_gzip_is_inflated_by_isal_and_by_zlib_without_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """reading._decompressed takes ISA-L's inflate when python-isal is there (a
    dependency: 2-3x zlib's) and zlib's when it is not; both unpack the same tree."""
    import builtins
    import gzip as gzip_module
    import io

    from layershell.packages.unpack import reading

    stream = reading._decompressed(
        reading.Format.GZIP, reading._Meter(io.BytesIO(gzip_module.compress(b"x")))
    )
    assert type(stream).__module__ == "isal.igzip"
    archive = tmp_path / "both_1.0.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        data = b"same bytes\n" * 1000
        info = tarfile.TarInfo("bin/both")
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
    unpack(str(archive), str(tmp_path / "with-isal"))
    real = builtins.__import__

    def no_isal(name: str, *args: object, **kwargs: object) -> object:
        if name == "isal" or name.startswith("isal."):
            raise ImportError(name)
        return real(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_isal)
    stream = reading._decompressed(
        reading.Format.GZIP, reading._Meter(io.BytesIO(gzip_module.compress(b"x")))
    )
    assert isinstance(stream, gzip_module.GzipFile)
    unpack(str(archive), str(tmp_path / "with-zlib"))
    for tree in ("with-isal", "with-zlib"):
        assert (tmp_path / tree / "bin/both").read_bytes() == data


def test_decompression_runs_in_a_child_that_is_always_reaped(scene: Scene) -> None:
    """reading._Forked: the stream comes from a forked child, which is gone after a
    whole unpack, after a refusal in mid-stream and after a bomb stopped by its meter."""
    import io

    from layershell.packages.unpack import reading

    stream = reading.decompressing(io.BytesIO(b"abc"))
    try:
        assert isinstance(stream, reading._Forked) and str(stream._pid) in child_pids()
        assert stream.read() == b"abc"
    finally:
        stream.close()
    before = child_pids()
    good = scene.inbox / "good.tar.zst"
    good.write_bytes(compress(tar_bytes([f(f"f{i}", os.urandom(9000)) for i in range(300)]), "zst"))
    unpack(str(good), str(scene.target))
    escape = scene.inbox / "escape.tar.gz"
    many = [f(f"f{i}", os.urandom(4000)) for i in range(300)]  # the pipe is full at the refusal
    escape.write_bytes(compress(tar_bytes([*many, f("../canary")]), "gz"))
    with pytest.raises(UnsafeArchive, match=r"'\.\./canary'"):
        unpack(str(escape), str(scene.parent / "other"))
    bomb = scene.inbox / "bomb.tar.gz"
    hostile.build_bomb(bomb)
    with pytest.raises(UnsafeArchive, match="decompression bomb"):
        unpack(str(bomb), str(scene.parent / "third"))
    assert child_pids() == before


def test_a_layer_out_of_processes_decompresses_in_a_thread(
    scene: Scene, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When fork fails (RLIMIT_NPROC), the stream is decompressed by _Prefetched, with
    the same refusals."""

    def no_fork() -> int:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", no_fork)
    good = scene.inbox / "good.tar.gz"
    good.write_bytes(compress(tar_bytes([f("bin/tool", TOOL, 0o755)]), "gz"))
    unpack(str(good), str(scene.target))
    assert (scene.target / "bin/tool").read_bytes() == TOOL
    truncated = scene.inbox / "truncated.tar.gz"
    hostile.build_truncated(truncated)
    with pytest.raises(UnsafeArchive, match="'big': the archive cannot be read"):
        unpack(str(truncated), str(scene.parent / "other"))
