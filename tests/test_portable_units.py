"""What portable.py refuses in a package's units before root attaches them (the real
attach is in test_portable.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from layershell import portable
from layershell.state import Installed


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("ExecStart=+/bin/sh -c id", "ExecStart= with a '+' prefix"),
        ("ExecStartPre=!/bin/true", "ExecStartPre= with a '!' prefix"),
        ("ExecStopPost=-+/bin/true", "ExecStopPost= with a '+' prefix"),
        ("ExecReload=@!!/bin/true x", "ExecReload= with a '!' prefix"),
        ("PermissionsStartOnly=yes", "PermissionsStartOnly= would run commands"),
    ],
)
def test_privilege_escapes_are_refused(line: str, message: str) -> None:
    with pytest.raises(portable.PortableError) as info:
        portable.check_unit("goss.service", f"[Service]\n{line}\n")
    assert info.value.message.startswith(f"goss.service:2: {message}")


def test_ordinary_prefixes_are_fine() -> None:
    portable.check_unit("goss.service", "[Service]\nExecStart=-@/bin/sh sh -c true\n")


def row(tree: Path) -> Installed:
    return Installed("goss", "1.0", "arne", str(tree), "0" * 64, "x", 0, 0, 0, 0.0, True, {})


def test_a_unit_that_is_a_link_is_not_read(tmp_path: Path) -> None:
    units = tmp_path / "usr/lib/systemd/system"
    units.mkdir(parents=True)
    os.symlink("/etc/shadow", units / "goss.service")
    (tmp_path / "usr/lib/os-release").write_text("ID=x\n")
    with pytest.raises(portable.PortableError, match="not a regular file"):
        portable.portable_image(row(tmp_path))
    out = tmp_path / "image"
    with pytest.raises(portable.PortableError, match="not a regular file"):
        portable.generate_image(row(tmp_path), str(out), "/opt/pkgs")


def test_a_unit_dir_that_leads_out_is_not_read(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "goss.service").write_text("[Service]\nExecStart=/bin/true\n")
    (tmp_path / "tree/usr/lib/systemd").mkdir(parents=True)
    os.symlink(elsewhere, tmp_path / "tree/usr/lib/systemd/system")
    with pytest.raises(portable.PortableError, match="outside the package tree"):
        portable.portable_image(row(tmp_path / "tree"))
