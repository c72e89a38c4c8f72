"""Issue 13, item 2: files as natively as the profile allows (docs/exposure.md, "What a
shim's program sees"). Under `default` and `nonetwork` the cwd is writable wherever it
is, the home too, but the home itself and its hidden directories stay read-only; the
caller's /tmp is the program's. `strict` keeps a private /tmp and a read-only cwd."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support import Identity
from tests.test_shims import install


def mine(ident: Identity, path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, ident.uid, ident.gid)
    return path


def writes(ident: Identity, target: str, cwd: Path) -> str:
    return ident.run(["writeto", target], cwd=str(cwd)).stdout.decode().strip()


@pytest.mark.parametrize("profile", ["default", "nonetwork"])
def test_a_cwd_in_the_home_is_writable_the_rest_of_the_home_is_not(
    fresh_rootless: Identity, shared_dir: Path, profile: str
) -> None:
    ident = fresh_rootless
    install(ident, shared_dir, profile)
    project = mine(ident, ident.home / "proj" / "data")
    assert writes(ident, "out.json", project) == "wrote"
    assert (project / "out.json").read_text() == "x\n"
    # ... while the home around it stays read-only: the host runs ~/.bashrc at login.
    assert writes(ident, str(ident.home / ".bashrc"), project) == "denied"
    assert writes(ident, str(ident.home / "proj" / "beside"), project) == "denied"
    assert not (ident.home / ".bashrc").exists()


@pytest.mark.parametrize("where", [".", ".config/autostart", ".local/bin"])
def test_the_home_itself_and_its_hidden_directories_stay_read_only_as_a_cwd(
    fresh_rootless: Identity, shared_dir: Path, where: str
) -> None:
    """The attack: `cd ~ && tool` (or from ~/.config/autostart) would hand a default
    shim's program the files the host runs at login."""
    ident = fresh_rootless
    install(ident, shared_dir, "default")
    cwd = mine(ident, ident.home / where) if where != "." else ident.home
    assert writes(ident, "planted", cwd) == "denied"
    assert not (cwd / "planted").exists()


@pytest.mark.parametrize(("profile", "shared"), [("default", True), ("nonetwork", True),
                                                 ("trusted", True), ("strict", False)])  # fmt: skip
def test_tmp_is_the_callers_but_under_strict(
    fresh_rootless: Identity, shared_dir: Path, profile: str, shared: bool
) -> None:
    ident = fresh_rootless
    install(ident, shared_dir, profile)
    name = f"layershell-test-{os.getpid()}-{profile}"
    given = Path("/tmp") / f"{name}.json"
    given.write_text('{"a": 1}\n')
    left = Path("/tmp") / f"{name}.out"
    try:
        seen = ident.run(["peek", str(given)], cwd="/").stdout.decode()
        assert (seen == '{"a": 1}\n') is shared, seen
        said = ident.run(["writeto", str(left)], cwd="/").stdout.decode().strip()
        assert said == "wrote"  # strict: into its own /tmp, gone when it exits
        assert left.exists() is shared
    finally:
        given.unlink(missing_ok=True)
        left.unlink(missing_ok=True)
