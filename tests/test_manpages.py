"""Issue 13, item 5 (manual pages): a package's share/man pages are found by `man NAME`
on the host after install and gone after `core remove`; root copies them (regular files
of the layer's tree, read without following a link) and never overwrites a page it did
not write. layershell/exposure/manpages.py; docs/exposure.md, "Manual pages"."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests import support
from tests.packages import tarball
from tests.support import Identity, python_cmd

PAGE = b".TH GREP1 1\n.SH NAME\ngrep1 \\- the first grep\n.SH DESCRIPTION\nfinds things\n"
needs_man = pytest.mark.skipif(shutil.which("man") is None, reason="man-db is not installed")


def package(shared: Path, name: str, extra: dict[str, bytes | str] | None = None) -> Path:
    files: dict[str, bytes | str] = {
        f"bin/{name}": f"#!/bin/sh\necho {name}\n",
        f"share/man/man1/{name}.1.gz": gzip.compress(
            PAGE.replace(b"grep1", name.encode()).replace(b"GREP1", name.upper().encode()),
            mtime=0,
        ),
        f"share/man/man5/{name}rc.5": b".TH X 5\n.SH NAME\nx \\- config\n",
        **(extra or {}),
    }
    path = tarball(shared / f"{name}_1.0.tar.gz", files)
    shared.chmod(0o755)
    return path


def where(env: dict[str, str], name: str, section: str = "") -> subprocess.CompletedProcess[str]:
    """`man -w NAME`: the file man-db would show, searched as a user's man would."""
    argv = ["man", "-w", *([section] if section else []), name]
    return subprocess.run(argv, env=env, capture_output=True, text=True, check=False)


@needs_man
def test_rootless_pages_are_found_through_path_and_go_with_the_package(
    fresh_rootless: Identity, shared_dir: Path
) -> None:
    ident = fresh_rootless
    r = ident.run(python_cmd("install", str(package(shared_dir, "grep1"))))
    assert r.returncode == 0, r.stderr.decode()
    copy = ident.home / ".local/share/man/man1/grep1.1.gz"
    assert gzip.decompress(copy.read_bytes()).startswith(b".TH GREP1 1")
    assert not copy.is_symlink()
    found = ident.run(["man", "-w", "grep1"])
    assert found.stdout.decode().strip() == str(copy), found.stderr
    shown = ident.run(["man", "-P", "cat", "grep1"], env={"MANWIDTH": "80"})
    assert b"finds things" in shown.stdout, shown.stderr
    assert ident.run(["man", "-w", "5", "grep1rc"]).returncode == 0
    r = ident.run(python_cmd("remove", "grep1"))
    assert r.returncode == 0, r.stderr.decode()
    assert not copy.exists()
    assert ident.run(["man", "-w", "grep1"]).returncode != 0


def test_links_devices_and_odd_names_in_a_package_are_not_copied(
    fresh_rootless: Identity, shared_dir: Path
) -> None:
    """The attack: a page or a section that is a link (unpack allows one inside the
    package, which the account can later point anywhere: root would copy what it
    names) and a name that is not a page's."""
    ident = fresh_rootless
    extra: dict[str, bytes | str] = {"share/man/man1/..evil.1": b".TH E 1\n"}
    path = package(shared_dir, "grep2", extra)
    # A link among the pages, added as the tarball's own entry.
    work = shared_dir / "grep2-linked"
    subprocess.run(["mkdir", "-p", str(work)], check=True)
    subprocess.run(["tar", "-C", str(work), "-xzf", str(path)], check=True)
    os.symlink("../../../bin/grep2", work / "share/man/man1/leak.1")
    os.symlink("man1", work / "share/man/man8")
    subprocess.run(["tar", "-C", str(work), "-czf", str(path), "."], check=True)
    r = ident.run(python_cmd("install", str(path)))
    assert r.returncode == 0, r.stderr.decode()
    man = ident.home / ".local/share/man"
    assert (man / "man1/grep2.1.gz").is_file()
    assert not (man / "man1/leak.1").exists()
    assert not (man / "man8").exists()
    assert sorted(p.name for p in (man / "man1").iterdir()) == ["grep2.1.gz"]


def test_a_page_layershell_did_not_write_is_left_alone(
    fresh_rootless: Identity, shared_dir: Path
) -> None:
    ident = fresh_rootless
    mine = ident.home / ".local/share/man/man1/grep3.1.gz"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"the user's own page")
    subprocess.run(["chown", "-R", f"{ident.uid}:{ident.gid}", str(ident.home / ".local")],
                   check=True)  # fmt: skip
    r = ident.run(python_cmd("install", str(package(shared_dir, "grep3"))))
    assert r.returncode == 0, r.stderr.decode()
    assert f"{mine} exists and was not written by layershell" in r.stderr.decode()
    assert mine.read_bytes() == b"the user's own page"
    assert ident.run(python_cmd("remove", "grep3")).returncode == 0
    assert mine.read_bytes() == b"the user's own page"


@needs_man
@pytest.mark.skipif(not support.IS_ROOT, reason="needs root: system mode copies as root")
def test_system_mode_pages_land_where_man_db_always_looks(
    stack: support.SystemStack, shared_dir: Path
) -> None:
    r = stack.core("install", str(package(shared_dir, "grep4")))
    assert r.returncode == 0, r.stderr
    copy = stack.root / "usr/local/share/man/man1/grep4.1.gz"
    try:
        assert gzip.decompress(copy.read_bytes()).startswith(b".TH GREP4 1")
        st = copy.stat()
        assert (st.st_uid, oct(st.st_mode & 0o777)) == (0, "0o644")  # root's own copy
        found = where({"PATH": "/usr/bin:/bin", "MANPATH": str(stack.root / "usr/local/share/man")},
                      "grep4")  # fmt: skip
        assert found.stdout.strip() == str(copy), found.stderr
    finally:
        assert stack.core("remove", "grep4").returncode == 0
    assert not copy.exists()
