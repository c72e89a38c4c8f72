"""layershell.packages.repo: references, version ordering, os-release, the index (parse, render,
build from a directory of real tarballs, atomic write), and `<name>_latest` files."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import lzma
import os
import random
import stat
import tarfile
from pathlib import Path
from typing import Any

import pytest
import zstandard

from layershell.errors import ConfigError, LayershellError
from layershell.packages import repo
from layershell.packages.repo.host import parse_os_release
from layershell.packages.repo.index import INDEX_HINT, Index, IndexEntry, render_index
from layershell.packages.repo.publish import RepositoryError, build_index
from layershell.packages.repo.reference import (
    REFERENCE_FORM,
    REPOSITORY_FORM,
    BadReference,
    Protocol,
    Reference,
)
from layershell.packages.repo.versions import newest_first
from layershell.packages.verify.integrity import sha256_file

# --- references ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "file:///media/usb1/fcos/x86_64/goss_v0.0.1",
            Reference(Protocol.FILE, "file:///media/usb1/fcos", "x86_64", "goss", "v0.0.1"),
        ),
        (
            "file:/media/usb1/fcos/x86_64/goss_v0.0.1",
            Reference(Protocol.FILE, "file:///media/usb1/fcos", "x86_64", "goss", "v0.0.1"),
        ),
        (
            "file://localhost/media/usb1/fcos/x86_64/goss_v0.0.1",
            Reference(Protocol.FILE, "file:///media/usb1/fcos", "x86_64", "goss", "v0.0.1"),
        ),
        (
            "https://repo.example/fcos/x86_64/goss_latest",
            Reference(Protocol.HTTPS, "https://repo.example/fcos", "x86_64", "goss", "latest"),
        ),
        (
            "http://repo.example:8080/aarch64/node_exporter_1.7.0",
            Reference(
                Protocol.HTTP, "http://repo.example:8080", "aarch64", "node_exporter", "1.7.0"
            ),
        ),
        (
            "ftp://localhost:2121/x86_64/goss_v0.0.1",
            Reference(Protocol.FTP, "ftp://localhost:2121", "x86_64", "goss", "v0.0.1"),
        ),
        (
            "ftp://anonymous@127.0.0.1:2121/a/b/x86_64/goss_39.20240101.3.0",
            Reference(
                Protocol.FTP,
                "ftp://anonymous@127.0.0.1:2121/a/b",
                "x86_64",
                "goss",
                "39.20240101.3.0",
            ),
        ),
        (
            "HTTPS://[::1]:8443/fcos/ppc64le/goss_1.0~rc1+git2",
            Reference(Protocol.HTTPS, "https://[::1]:8443/fcos", "ppc64le", "goss", "1.0~rc1+git2"),
        ),
    ],
)
def test_parse_reference(text: str, expected: Reference) -> None:
    ref = repo.parse_reference(text)
    assert ref == expected
    assert ref.protocol == expected.protocol.value  # a str enum: compares with the word


def test_reference_url_is_the_artifact_without_extension() -> None:
    ref = repo.parse_reference("file:/media/usb1/fcos/x86_64/goss_v0.0.1")
    assert ref.url == "file:///media/usb1/fcos/x86_64/goss_v0.0.1"
    assert str(ref) == ref.url
    assert repo.parse_reference(ref.url) == ref


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "is empty"),
        ("goss_v0.0.1", "has no protocol"),
        ("/media/usb1/fcos/x86_64/goss_v1", "has no protocol"),
        ("sftp://h/fcos/x86_64/goss_v1", "unknown protocol 'sftp'"),
        ("https:/repo.example/x86_64/goss_v1", "expected '//' after 'https:'"),
        ("file://usbhost/media/x86_64/goss_v1", "names the host 'usbhost'"),
        ("https:///fcos/x86_64/goss_v1", "names no host after 'https://'"),
        ("https://repo.example:port/x86_64/goss_v1", "'repo.example:port' is not a host name"),
        ("https://repo.example/x86_64", "needs /<arch>/<name>_<version> at the end"),
        ("ftp://localhost:2121", "needs /<arch>/<name>_<version> at the end"),
        ("file:///x86_64/goss_v1", "needs a repository directory before"),
        ("https://repo.example/fcos/x86_64/goss", "'goss' is not <name>_<version>"),
        ("https://repo.example/fcos/x86_64/goss_", "'goss_' is not <name>_<version>"),
        ("https://repo.example/fcos/x86_64/_v1", "'_v1' is not <name>_<version>"),
        ("https://repo.example/fcos/x86_64/goss_v0.0.1.tar.gz", "drop .tar.gz"),
        ("https://repo.example/fcos/x86_64/goss_v0.0.1.tar.zst", "drop .tar.zst"),
        ("https://repo.example/fcos/X86-64/goss_v1", "'X86-64' is not an architecture"),
        ("https://repo.example/fcos//x86_64/goss_v1", "has an empty path segment"),
        ("https://repo.example/fcos/../x86_64/goss_v1", "has a '..' path segment"),
        ("https://repo.example/./x86_64/goss_v1", "has a '.' path segment"),
        ("https://repo.example/fcos/x86_64/goss_v1?x=1", "has a query or fragment"),
        ("https://repo.example/fcos/x86_64/goss_v1#top", "has a query or fragment"),
        ("https://repo example/x86_64/goss_v1", "contains whitespace"),
        (" https://repo.example/x86_64/goss_v1", "contains whitespace"),
        ("https://repo.example/x86_64/-goss_v1", "'-goss' is not a package name"),
        ("https://repo.example/x86_64/goss_v1:2", "'v1:2' is not a version"),
        ("https://repo.example/x86_64/goss_-1", "'-1' is not a version"),
    ],
)
def test_parse_reference_refuses(text: str, problem: str) -> None:
    with pytest.raises(BadReference) as err:
        repo.parse_reference(text)
    assert err.value.exit_code == 2
    assert err.value.message.startswith(f"reference {text!r}: ")
    assert problem in err.value.message
    assert err.value.hint == REFERENCE_FORM
    assert "<protocol>:<repository>/<arch>/<name>_<version>" in err.value.hint


@pytest.mark.parametrize(
    ("text", "normalised"),
    [
        ("file:///media/usb1/fcos", "file:///media/usb1/fcos"),
        ("file:///media/usb1/fcos/", "file:///media/usb1/fcos"),
        ("/media/usb1/fcos", "file:///media/usb1/fcos"),
        ("HTTPS://repo.example/fcos/", "https://repo.example/fcos"),
        ("ftp://localhost:2121", "ftp://localhost:2121"),
        ("ftp://localhost:2121/", "ftp://localhost:2121"),
    ],
)
def test_check_repository(text: str, normalised: str) -> None:
    assert repo.check_repository(text) == normalised


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("file:///", "names the root directory"),
        ("gopher://repo.example", "unknown protocol 'gopher'"),
        ("repo.example/fcos", "has no protocol"),
        ("https://", "names no host"),
    ],
)
def test_check_repository_refuses(text: str, problem: str) -> None:
    with pytest.raises(BadReference) as err:
        repo.check_repository(text)
    assert problem in err.value.message
    assert err.value.hint == REPOSITORY_FORM


@pytest.mark.parametrize(
    ("file_name", "parts"),
    [
        ("goss_v0.0.1.tar.gz", ("goss", "v0.0.1", ".tar.gz")),
        ("goss_1.tar", ("goss", "1", ".tar")),
        ("goss_1.tar.xz", ("goss", "1", ".tar.xz")),
        ("node_exporter_1.7.0.tar.zst", ("node_exporter", "1.7.0", ".tar.zst")),
        ("goss_latest", None),
        ("goss.tar.gz", None),
        ("goss_v1.tgz", None),
        ("goss_v1.zip", None),
        ("_v1.tar.gz", None),
        ("goss_.tar.gz", None),
    ],
)
def test_split_artifact_name(file_name: str, parts: tuple[str, str, str] | None) -> None:
    assert repo.split_artifact_name(file_name) == parts


# --- versions ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("older", "newer"),
    [
        ("1.9", "1.10"),
        ("1.0.9", "1.0.10"),
        ("9", "10"),
        ("v1.9", "v1.10"),
        ("1.2", "v1.10"),
        ("v0.9", "1.0"),
        ("1.0~rc1", "1.0"),
        ("1.0~rc1", "1.0~rc2"),
        ("1.0~rc2", "1.0~rc10"),
        ("1.0~rc1", "1.0~rc1.1"),
        ("1.0~~", "1.0~"),
        ("1.0~", "1.0~rc1"),
        ("1.0~", "1.0"),
        ("1.0", "1.0a"),
        ("1.0a", "1.0.1"),
        ("1.0", "1.0.1"),
        ("1.0", "1.0-1"),
        ("1.0-1", "1.0.1"),
        ("alpha", "beta"),
        ("38.20231201.3.0", "39.20240101.3.0"),
        ("39.20240101.3.0", "39.20240115.3.0"),
        ("39.20240101.3.0", "39.20240101.3.1"),
        ("39", "39.20240101.3.0"),
        ("3815.2.0", "3815.2.1"),
        ("1.01", "1.1"),  # equal as numbers; ordered by text so the order stays total
        ("1.0", "v1.0"),
    ],
)
def test_version_order(older: str, newer: str) -> None:
    assert repo.version_key(older) < repo.version_key(newer)
    assert repo.version_key(newer) > repo.version_key(older)


def test_version_order_is_total_and_deterministic() -> None:
    versions = [
        "1.0",
        "v1.0",
        "1.00",
        "1.0~rc1",
        "1.0~",
        "1.0a",
        "1.0.1",
        "1.10",
        "1.9",
        "1.01",
        "1.1",
        "2",
        "v",
        "vim",
        "0",
        "a",
        "~",
    ]
    expected = sorted(versions, key=repo.version_key)
    assert len({repo.version_key(v) for v in versions}) == len(versions)
    shuffled = list(versions)
    rng = random.Random(1)
    for _ in range(20):
        rng.shuffle(shuffled)
        assert sorted(shuffled, key=repo.version_key) == expected
    assert expected.index("1.0~") < expected.index("1.0~rc1") < expected.index("1.0")
    assert expected.index("1.9") < expected.index("1.10")
    assert newest_first(["1.9", "1.10", "1.0~rc1", "1.0"]) == ["1.10", "1.9", "1.0", "1.0~rc1"]


# --- the host ----------------------------------------------------------------------------


def test_host_arch_is_uname_machine() -> None:
    assert repo.host_arch() == os.uname().machine


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


FCOS_OS_RELEASE = """\
NAME="Fedora Linux"
VERSION="39.20240101.3.0 (CoreOS)"
ID=fedora
# a comment
VERSION_ID=39
OSTREE_VERSION='39.20240101.3.0'
"""


def test_os_version_prefers_ostree_version(tmp_path: Path) -> None:
    write(tmp_path / "etc/os-release", FCOS_OS_RELEASE)
    assert repo.host_os_version(root=str(tmp_path)) == "39.20240101.3.0"


def test_os_version_falls_back_to_version_id(tmp_path: Path) -> None:
    write(tmp_path / "etc/os-release", 'NAME="Debian GNU/Linux"\nVERSION_ID="12"\n')
    assert repo.host_os_version(root=str(tmp_path)) == "12"


def test_os_version_from_usr_lib_when_etc_has_none(tmp_path: Path) -> None:
    write(tmp_path / "usr/lib/os-release", "VERSION_ID=3815.2.0\n")
    assert repo.host_os_version(root=str(tmp_path)) == "3815.2.0"


def test_os_version_etc_wins_over_usr_lib(tmp_path: Path) -> None:
    write(tmp_path / "etc/os-release", "VERSION_ID=40\n")
    write(tmp_path / "usr/lib/os-release", "VERSION_ID=39\n")
    assert repo.host_os_version(root=str(tmp_path)) == "40"


def test_os_version_none_without_file_or_key(tmp_path: Path) -> None:
    assert repo.host_os_version(root=str(tmp_path)) is None
    write(tmp_path / "etc/os-release", "NAME=Arch\nVERSION_ID=\nBUILD_ID=rolling\n")
    assert repo.host_os_version(root=str(tmp_path)) is None


def test_os_version_explicit_paths(tmp_path: Path) -> None:
    release = write(tmp_path / "some/os-release", 'OSTREE_VERSION="41.1"\n')
    assert repo.host_os_version((str(release),)) == "41.1"
    assert repo.host_os_version((str(tmp_path / "missing"), str(release))) == "41.1"


def test_parse_os_release_quoting() -> None:
    values = parse_os_release(
        'A="with \\"quotes\\" and \\$x"\nB=\'single $x\'\nC=plain\nnot a line\n=x\n  D = "s" \n'
    )
    assert values == {"A": 'with "quotes" and $x', "B": "single $x", "C": "plain", "D": "s"}


# --- the index: parsing and rendering ------------------------------------------------------

SHA_A = "a" * 64
SHA_B = "b" * 64
SRC = "https://repo.example/fcos/x86_64/index.json"
HINT = f" ({INDEX_HINT})"


def entry(version: str = "v0.0.1", **over: Any) -> dict[str, Any]:
    e: dict[str, Any] = {
        "version": version,
        "file": f"goss_{version}.tar.gz",
        "sha256": SHA_A,
        "size": 10,
        "streams": ["stable", "next", "testing"],
    }
    e.update(over)
    return e


def doc(**packages: Any) -> dict[str, Any]:
    return {"format": 1, "arch": "x86_64", "packages": packages}


def dump(data: Any) -> bytes:
    return json.dumps(data).encode()


def test_parse_index() -> None:
    data = doc(
        goss=[
            entry("v0.0.1", streams=["testing", "stable", "next"], extra="ignored"),
            entry("v0.0.10", sha256=SHA_B.upper(), file="goss_v0.0.10.tar.xz", streams=[]),
            entry("v0.0.9", streams=["testing"]),
        ],
        node_exporter=[entry("1.7.0", file="node_exporter_1.7.0.tar")],
    )
    data["future_key"] = {"ignored": True}
    index = repo.parse_index(dump(data), SRC)
    assert index.arch == "x86_64"
    assert index.format == 1
    assert [e.version for e in index.entries("goss")] == ["v0.0.10", "v0.0.9", "v0.0.1"]
    assert index.entry("goss", "v0.0.10") == IndexEntry(
        "v0.0.10", "goss_v0.0.10.tar.xz", SHA_B, 10, ()
    )
    assert index.entry("goss", "v0.0.1") == IndexEntry(
        "v0.0.1", "goss_v0.0.1.tar.gz", SHA_A, 10, ("stable", "next", "testing")
    )
    assert index.entry("goss", "v0.0.2") is None
    assert index.entries("nothing") == ()
    assert index.entry("node_exporter", "1.7.0") is not None


def test_render_index_is_stable_and_round_trips() -> None:
    index = Index(
        arch="x86_64",
        packages={
            "zz": (IndexEntry("1", "zz_1.tar", SHA_A, 1, ("testing",)),),
            "goss": (
                IndexEntry("v0.0.1", "goss_v0.0.1.tar.gz", SHA_A, 5, ("testing", "stable")),
                IndexEntry("v0.0.10", "goss_v0.0.10.tar.gz", SHA_B, 6, ()),
            ),
        },
    )
    text = render_index(index)
    assert text.endswith(b"\n")
    parsed = repo.parse_index(text, "mem")
    assert render_index(parsed) == text
    raw = json.loads(text)
    assert list(raw) == ["format", "arch", "packages"]
    assert list(raw["packages"]["zz"][0]) == ["version", "file", "sha256", "size", "streams"]
    assert list(raw["packages"]) == ["goss", "zz"]
    assert [e["version"] for e in raw["packages"]["goss"]] == ["v0.0.10", "v0.0.1"]
    assert raw["packages"]["goss"][1]["streams"] == ["stable", "testing"]
    assert text.startswith(b'{\n  "format": 1,\n  "arch": "x86_64",\n')


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\xff{}", [f"{SRC}: not UTF-8 text (invalid start byte at byte 0){HINT}"]),
        (b"{", [f"{SRC}:1:2: not valid JSON: Expecting property name enclosed in double quotes"]),
        (b"[]", [f'{SRC}: must be a JSON object with "format", "arch" and "packages"{HINT}']),
        (
            dump({"arch": "x86_64", "packages": {}}),
            [f"{SRC}: format: must be the number 1, not None{HINT}"],
        ),
        (
            dump({"format": True, "arch": "x86_64", "packages": {}}),
            [f"{SRC}: format: must be the number 1, not True{HINT}"],
        ),
        (
            dump({"format": 2, "arch": "x86_64", "packages": {}}),
            [f"{SRC}: format: this layershell reads index format 1, not 2 (update layershell)"],
        ),
        (
            dump({"format": 1, "arch": "x86 64", "packages": {}}),
            [f"{SRC}: arch: must be an architecture as `uname -m` prints it, not 'x86 64'{HINT}"],
        ),
        (
            dump({"format": 1, "arch": "x86_64", "packages": []}),
            [
                f"{SRC}: packages: must be an object mapping package names to lists of versions"
                + HINT
            ],
        ),
        (
            dump(doc(goss={})),
            [f"{SRC}: packages.goss: must be a list of versions{HINT}"],
        ),
        (
            dump(doc(**{"../x": []})),
            [f"{SRC}: packages.../x: is not a package name (letters, digits, . _ + -){HINT}"],
        ),
        (
            dump(doc(goss=["v1"])),
            [
                f"{SRC}: packages.goss.0: must be an object with"
                f' "version", "file", "sha256", "size", "streams"{HINT}'
            ],
        ),
        (
            dump(doc(goss=[entry("latest")])),
            [
                f"{SRC}: packages.goss.0.version: must be a version (letters, digits, . + ~ -),"
                f" not 'latest'{HINT}"
            ],
        ),
        (
            dump(doc(goss=[entry(file="../goss_v0.0.1.tar.gz")])),
            [
                f"{SRC}: packages.goss.0.file: must be a file name"
                f" <name>_<version>.tar[.gz|.xz|.zst], not '../goss_v0.0.1.tar.gz'{HINT}"
            ],
        ),
        (
            dump(doc(goss=[entry(file="other_v0.0.1.tar.gz")])),
            [
                f"{SRC}: packages.goss.0.file: 'other_v0.0.1.tar.gz' is not the file of"
                f" goss v0.0.1{HINT}"
            ],
        ),
        (
            dump(doc(goss=[entry(sha256="abc")])),
            [f"{SRC}: packages.goss.0.sha256: must be 64 hexadecimal digits, not 'abc'{HINT}"],
        ),
        (
            dump(doc(goss=[entry(size=-1)])),
            [f"{SRC}: packages.goss.0.size: must be a size in bytes, not -1{HINT}"],
        ),
        (
            dump(doc(goss=[entry(size=True)])),
            [f"{SRC}: packages.goss.0.size: must be a size in bytes, not True{HINT}"],
        ),
        (
            dump(doc(goss=[entry(streams="stable")])),
            [
                f"{SRC}: packages.goss.0.streams: must be a list of streams"
                f" (stable, next, testing), not 'stable'{HINT}"
            ],
        ),
        (
            dump(doc(goss=[entry(streams=["beta"])])),
            [
                f"{SRC}: packages.goss.0.streams: unknown stream 'beta'"
                f" (use stable, next, testing){HINT}"
            ],
        ),
        (
            dump(doc(goss=[entry(streams=["next", "next"])])),
            [f"{SRC}: packages.goss.0.streams: lists a stream twice{HINT}"],
        ),
        (
            dump(doc(goss=[entry("v1"), entry("v1")])),
            [f"{SRC}: packages.goss.1.version: v1 is listed twice{HINT}"],
        ),
        (  # every problem at once
            dump(doc(goss=[entry(sha256=None, size="1"), entry("v2", streams=None)])),
            [
                f"{SRC}: packages.goss.0.sha256: must be 64 hexadecimal digits, not None{HINT}",
                f"{SRC}: packages.goss.0.size: must be a size in bytes, not '1'{HINT}",
                f"{SRC}: packages.goss.1.streams: must be a list of streams"
                f" (stable, next, testing), not None{HINT}",
            ],
        ),
    ],
)
def test_parse_index_refuses(data: bytes, expected: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        repo.parse_index(data, SRC)
    assert err.value.exit_code == 2
    got = [str(p) for p in err.value.problems]
    assert len(got) == len(expected)
    for line, want in zip(got, expected, strict=True):
        assert line.startswith(want), (line, want)


# --- building an index from a directory -----------------------------------------------------


def tarball(path: Path, member: str = "bin/goss", content: bytes = b"#!/bin/sh\n") -> Path:
    """A real tarball; the compression follows the name's extension."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo(member)
        info.size = len(content)
        info.mode = 0o755
        tar.addfile(info, io.BytesIO(content))
    data = raw.getvalue()
    if path.name.endswith(".gz"):
        data = gzip.compress(data)
    elif path.name.endswith(".xz"):
        data = lzma.compress(data)
    elif path.name.endswith(".zst"):
        data = zstandard.ZstdCompressor().compress(data)
    path.write_bytes(data)
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def arch_dir(tmp_path: Path) -> Path:
    d = tmp_path / "fcos" / "x86_64"
    d.mkdir(parents=True)
    tarball(d / "goss_v0.0.1.tar.gz", content=b"one")
    tarball(d / "goss_v0.0.2.tar.xz", content=b"two")
    tarball(d / "goss_v0.0.10.tar", content=b"ten")
    tarball(d / "node_exporter_1.7.0.tar.zst", member="bin/node_exporter")
    return d


ALL = ("stable", "next", "testing")


def test_build_index_hashes_every_tarball(arch_dir: Path) -> None:
    (arch_dir / "goss_latest").write_text("v0.0.2\n")
    index, warnings = build_index(str(arch_dir))
    assert warnings == []
    assert index.arch == "x86_64"
    assert sorted(index.packages) == ["goss", "node_exporter"]
    assert [e.version for e in index.entries("goss")] == ["v0.0.10", "v0.0.2", "v0.0.1"]
    for e in [*index.entries("goss"), *index.entries("node_exporter")]:
        path = arch_dir / e.file
        assert e.sha256 == digest(path)
        assert e.size == path.stat().st_size
        assert e.streams == ALL
    two = index.entry("goss", "v0.0.2")
    assert two is not None
    assert two.file == "goss_v0.0.2.tar.xz"
    with tarfile.open(arch_dir / two.file) as tar:  # a real tarball, in the format named
        member = tar.extractfile("bin/goss")
        assert member is not None
        assert member.read() == b"two"
    with tarfile.open(arch_dir / "goss_v0.0.1.tar.gz", "r:gz") as tar:
        assert tar.getnames() == ["bin/goss"]


def test_build_index_hashes_in_chunks(arch_dir: Path) -> None:
    big = arch_dir / "big_1.tar"
    big.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    assert sha256_file(str(big), chunk=4096) == (digest(big), big.stat().st_size)
    index, _ = build_index(str(arch_dir))
    assert index.entries("big")[0].sha256 == digest(big)


def test_build_index_skips_and_reports_other_files(arch_dir: Path) -> None:
    (arch_dir / "README.txt").write_text("hello")
    (arch_dir / "goss.tar.gz").write_text("no version")
    (arch_dir / "goss_latest.tar.gz").write_text("latest is not a version")
    (arch_dir / "sub_1.tar.gz").mkdir()
    (arch_dir / ".index.json.tmp").write_text("left over")
    (arch_dir / "dangling_1.tar.gz").symlink_to("missing.tar.gz")
    (arch_dir / "goss_latest").symlink_to("goss_v0.0.2.tar.xz")  # a link, not an artifact
    (arch_dir / "index.json").write_text("{}")  # the index itself is not an artifact
    index, warnings = build_index(str(arch_dir))
    assert sorted(index.packages) == ["goss", "node_exporter"]
    assert len(index.entries("goss")) == 3
    assert warnings == [
        ".index.json.tmp: skipped, not <name>_<version>.tar[.gz|.xz|.zst]",
        "README.txt: skipped, not <name>_<version>.tar[.gz|.xz|.zst]",
        "dangling_1.tar.gz: skipped, not a regular file",
        "goss.tar.gz: skipped, not <name>_<version>.tar[.gz|.xz|.zst]",
        "goss_latest.tar.gz: skipped, not <name>_<version>.tar[.gz|.xz|.zst]",
        "sub_1.tar.gz: skipped, not a regular file",
    ]


def test_build_index_follows_a_symlinked_tarball(arch_dir: Path, tmp_path: Path) -> None:
    pool = tarball(tmp_path / "pool.tar.gz", content=b"pooled")
    (arch_dir / "pooled_2.tar.gz").symlink_to(pool)
    index, warnings = build_index(str(arch_dir))
    assert warnings == []
    assert index.entries("pooled")[0].sha256 == digest(pool)


def test_build_index_warns_about_a_latest_naming_nothing(arch_dir: Path) -> None:
    (arch_dir / "goss_latest").write_text("v9\n")
    (arch_dir / "node_exporter_latest").symlink_to("other_1.tar.gz")
    _, warnings = build_index(str(arch_dir))
    assert warnings == [
        "goss_latest: names goss v9, which is not in this directory",
        "node_exporter_latest: node_exporter_latest names another package: 'other_1.tar.gz'",
    ]


def test_streams_yaml_narrows_streams(arch_dir: Path) -> None:
    (arch_dir / "streams.yaml").write_text(
        "goss:\n  v0.0.10: [testing]\n  v0.0.2: [next, testing]\n  v0.0.1: []\n"
    )
    index, warnings = build_index(str(arch_dir))
    assert warnings == []
    streams = {e.version: e.streams for e in index.entries("goss")}
    assert streams == {"v0.0.10": ("testing",), "v0.0.2": ("next", "testing"), "v0.0.1": ()}
    assert index.entries("node_exporter")[0].streams == ALL


def test_streams_yaml_versions_are_text(tmp_path: Path) -> None:
    d = tmp_path / "x86_64"
    d.mkdir()
    tarball(d / "tool_1.10.tar.gz")
    tarball(d / "tool_1.1.tar.gz")
    (d / "streams.yaml").write_text("tool:\n  1.10: [testing]\n")  # not the number 1.1
    index, warnings = build_index(str(d))
    assert warnings == []
    assert {e.version: e.streams for e in index.entries("tool")} == {
        "1.10": ("testing",),
        "1.1": ALL,
    }


def test_streams_json_and_an_explicit_streams_file(arch_dir: Path, tmp_path: Path) -> None:
    (arch_dir / "streams.json").write_text('{"goss": {"v0.0.10": ["testing", "next"]}}')
    index, _ = build_index(str(arch_dir))
    assert index.entry("goss", "v0.0.10").streams == ("next", "testing")  # type: ignore[union-attr]
    other = write(tmp_path / "elsewhere.yaml", "goss: {v0.0.10: [testing]}\n")
    index, _ = build_index(str(arch_dir), streams_file=str(other))
    assert index.entry("goss", "v0.0.10").streams == ("testing",)  # type: ignore[union-attr]


def test_streams_file_warnings(arch_dir: Path) -> None:
    (arch_dir / "streams.yaml").write_text(
        "goss:\n  v0.0.10: [stable]\n  v0.0.3: [testing]\nnothing:\n  '1': [next, testing]\n"
    )
    index, warnings = build_index(str(arch_dir))
    path = str(arch_dir / "streams.yaml")
    assert warnings == [
        f"{path}: goss v0.0.3 has streams but no tarball here",
        f"{path}: nothing 1 has streams but no tarball here",
        "goss v0.0.10 is on stable but not on next, testing:"
        " a version normally reaches testing, then next, then stable",
    ]
    assert index.entry("goss", "v0.0.10").streams == ("stable",)  # type: ignore[union-attr]


def test_streams_file_problems_have_positions(arch_dir: Path) -> None:
    (arch_dir / "streams.yaml").write_text(
        "goss:\n  v0.0.1: [stable, beta]\n  v0.0.2: testing\n  ../x: [next]\nbad name: {}\n"
    )
    path = str(arch_dir / "streams.yaml")
    with pytest.raises(ConfigError) as err:
        build_index(str(arch_dir))
    hint = "write {package: {version: [stable, next, testing]}}; see docs/repository.md"
    assert [str(p) for p in err.value.problems] == [
        f"{path}:2:11: goss.v0.0.1: unknown stream 'beta' (use stable, next, testing)",
        f"{path}:3:11: goss.v0.0.2: must be a list of streams ({hint})",
        f"{path}:4:3: goss.../x: is not a version ({hint})",
        f"{path}:5:1: bad name: is not a package name ({hint})",
    ]


def test_both_streams_files_is_an_error(arch_dir: Path) -> None:
    (arch_dir / "streams.yaml").write_text("{}\n")
    (arch_dir / "streams.json").write_text("{}\n")
    with pytest.raises(RepositoryError, match=r"has both streams\.yaml and streams\.json"):
        build_index(str(arch_dir))


def test_two_files_for_one_version_is_an_error(arch_dir: Path) -> None:
    tarball(arch_dir / "goss_v0.0.1.tar.zst")
    with pytest.raises(RepositoryError) as err:
        build_index(str(arch_dir))
    assert "goss_v0.0.1.tar.gz and goss_v0.0.1.tar.zst are both goss v0.0.1" in err.value.message
    assert err.value.hint == "keep one file per version"


def test_build_index_arch(tmp_path: Path) -> None:
    d = tmp_path / "packages"
    d.mkdir()
    tarball(d / "goss_1.tar.gz")
    with pytest.raises(RepositoryError) as err:
        build_index(str(d))
    assert "cannot tell the architecture from the directory name 'packages'" in err.value.message
    assert "<repository>/<arch>/" in err.value.hint
    index, warnings = build_index(str(d), arch="aarch64")
    assert index.arch == "aarch64"
    assert warnings == [
        "the directory is named 'packages', not 'aarch64':"
        " clients look for <repository>/aarch64/index.json"
    ]
    with pytest.raises(RepositoryError, match="'x86 64' is not an architecture"):
        build_index(str(d), arch="x86 64")
    with pytest.raises(RepositoryError, match="not a directory"):
        build_index(str(tmp_path / "missing"))


def test_empty_directory_gives_an_empty_index(tmp_path: Path) -> None:
    d = tmp_path / "x86_64"
    d.mkdir()
    index, warnings = build_index(str(d))
    assert (index.packages, warnings) == ({}, [])
    assert json.loads(render_index(index)) == {"format": 1, "arch": "x86_64", "packages": {}}


def test_write_index(arch_dir: Path) -> None:
    (arch_dir / "streams.yaml").write_text("goss: {v0.0.10: [testing]}\n")
    index, _ = repo.write_index(str(arch_dir))
    written = (arch_dir / "index.json").read_bytes()
    assert written == render_index(index)
    assert repo.parse_index(written, "x") == index
    assert stat.S_IMODE((arch_dir / "index.json").stat().st_mode) == 0o644
    # A second run indexes the same artifacts (it takes neither index.json nor SHA256SUMS
    # for one), as the next generation.
    again, warnings = repo.write_index(str(arch_dir))
    assert warnings == []
    assert again.packages == index.packages and again.latest == index.latest
    assert (index.generation, again.generation) == (1, 2)
    sums = (arch_dir / repo.SUMS_NAME).read_text()
    assert f"  {repo.INDEX_NAME}\n" in sums and "goss_v0.0.1.tar.gz" in sums
    assert sorted(p.name for p in arch_dir.iterdir() if p.name.startswith(".")) == []


def test_write_index_is_atomic(arch_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo.write_index(str(arch_dir))
    before = (arch_dir / "index.json").read_bytes()
    tarball(arch_dir / "goss_v0.0.3.tar.gz")

    def crash(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)  # what write_atomic renames with
    with pytest.raises(OSError, match="No space left"):
        repo.write_index(str(arch_dir))
    monkeypatch.undo()
    assert (arch_dir / "index.json").read_bytes() == before  # the old index, whole
    assert [p.name for p in arch_dir.iterdir() if p.name.startswith(".")] == []
    index, _ = repo.write_index(str(arch_dir))
    assert index.entry("goss", "v0.0.3") is not None


# --- <name>_latest --------------------------------------------------------------------------


def test_read_latest(tmp_path: Path) -> None:
    (tmp_path / "goss_latest").write_text("v0.0.2\n")
    (tmp_path / "node_latest").symlink_to("node_1.0.tar.gz")
    assert repo.read_latest(str(tmp_path / "goss_latest")) == b"v0.0.2\n"
    assert repo.read_latest(str(tmp_path / "node_latest")) == b"node_1.0.tar.gz"
    assert repo.read_latest(str(tmp_path / "none_latest")) is None


@pytest.mark.parametrize(
    ("content", "version"),
    [
        (b"v0.0.2\n", "v0.0.2"),
        (b"  1.0~rc1  \n", "1.0~rc1"),
        (b"goss_v0.0.2", "v0.0.2"),
        (b"goss_v0.0.2.tar.gz", "v0.0.2"),
        (b"../pool/goss_39.20240101.3.0.tar.zst", "39.20240101.3.0"),
    ],
)
def test_latest_version(content: bytes, version: str) -> None:
    assert repo.latest_version("goss", content) == version


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "goss_latest does not hold a version: ''"),
        (b"latest", "goss_latest does not hold a version: 'latest'"),
        (b"v1 v2", "goss_latest does not hold a version: 'v1 v2'"),
        (b"\xff\xfe", "goss_latest is not text"),
        (b"other_v1.tar.gz", "goss_latest names another package: 'other_v1.tar.gz'"),
        (b"1" * 5000, "goss_latest is 5000 bytes, too long to be a version"),
    ],
)
def test_latest_version_refuses(content: bytes, problem: str) -> None:
    with pytest.raises(LayershellError) as err:
        repo.latest_version("goss", content)
    assert err.value.message == problem
    assert "goss_latest" in err.value.hint


def test_build_index_records_latest_files(tmp_path: Path) -> None:
    import io
    import tarfile

    arch_dir = tmp_path / "x86_64"
    arch_dir.mkdir()
    for version in ("v1", "v2"):
        with tarfile.open(arch_dir / f"goss_{version}.tar.gz", "w:gz") as tar:
            info = tarfile.TarInfo("bin/goss")
            info.size = 2
            tar.addfile(info, io.BytesIO(b"#!"))
    os.symlink("goss_v1.tar.gz", arch_dir / "goss_latest")
    index, _ = repo.write_index(str(arch_dir))
    assert index.latest == {"goss": "v1"}
    parsed = repo.parse_index((arch_dir / "index.json").read_bytes(), "index.json")
    assert parsed.latest == {"goss": "v1"}
