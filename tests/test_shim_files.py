"""Issue 13, items 2-3: files as natively as the profile allows (docs/exposure.md, "What
a shim's program sees"). Under `default` and `nonetwork` the cwd is writable wherever
it is, the home too, but the home itself, its hidden directories and what is on PATH
stay read-only, and each program keeps its settings at their native paths. /tmp is the
program's own but under `trusted` (tests/test_attack_review4.py says why)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support import Identity, install_package
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


@pytest.mark.parametrize(("profile", "shared"), [("default", False), ("nonetwork", False),
                                                 ("trusted", True), ("strict", False)])  # fmt: skip
def test_tmp_is_the_callers_only_under_trusted(
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
        assert said == "wrote"  # a private /tmp: into its own, gone when it exits
        assert left.exists() is shared
    finally:
        given.unlink(missing_ok=True)
        left.unlink(missing_ok=True)


# A program that keeps its settings as htop does: ~/.config/<name>/<name>rc, read back.
SETTINGS: dict[str, bytes | str] = {
    "bin/keeper": '#!/bin/sh\nd="${XDG_CONFIG_HOME:-$HOME/.config}/keeper"\n'
    'if [ "$1" = save ]; then echo "colour=$2" > "$d/keeperrc" && echo saved; '
    'else cat "$d/keeperrc"; fi\n'
    'for f in "$HOME/.local/share/keeper/db" "$HOME/.local/state/keeper/log" '
    '"$HOME/.cache/keeper/c"; do : > "$f" || echo "cannot write $f"; done\n',
    "bin/writeto": '#!/bin/sh\n(echo x > "$1") 2>/dev/null && echo wrote || echo denied\n',
}


def install_keeper(ident: Identity, shared: Path, profile: str, name: str = "keeper") -> None:
    install_package(ident, shared, name, SETTINGS, profile)


@pytest.mark.parametrize("profile", ["default", "nonetwork"])
def test_a_program_keeps_its_settings_in_its_own_xdg_directories(
    fresh_rootless: Identity, shared_dir: Path, profile: str
) -> None:
    ident = fresh_rootless
    install_keeper(ident, shared_dir, profile)
    r = ident.run(["keeper", "save", "blue"])
    assert r.stdout.decode().splitlines() == ["saved"], r.stdout + r.stderr
    # Kept apart from the host's own ~/.config/keeper, which stays empty.
    kept = ident.home / ".local/share/layershell-programs/keeper"
    assert (kept / "config/keeperrc").read_text() == "colour=blue\n"
    assert not (ident.home / ".config/keeper/keeperrc").exists()
    for made in ("data/db", "state/log", "cache/c"):
        assert (kept / made).exists(), made
    assert kept.stat().st_uid == ident.uid
    r = ident.run(["keeper"])  # a new run reads it back
    assert r.stdout.decode().splitlines() == ["colour=blue"], r.stderr
    # ... and nothing else of the home became writable.
    for other in (".bashrc", ".config/other/rc", ".config/keeper-not"):
        assert ident.run(["writeto", str(ident.home / other)]).stdout.decode().strip() == "denied"


def test_a_package_named_after_layershell_gets_no_writable_layershell_directories(
    fresh_rootless: Identity, shared_dir: Path
) -> None:
    """The attack (rootless): a package called `layershell` would be given
    ~/.config/layershell and ~/.local/share/layershell writable, layershell's own
    config and state (layers.yaml, the stores): the executor refuses what would cover
    or lie inside a protected tree."""
    ident = fresh_rootless
    install_keeper(ident, shared_dir, "default", name="layershell")
    config = ident.home / ".config/layershell/layers.yaml"
    assert ident.run(["writeto", str(config)]).stdout.decode().strip() == "denied"
    # The state directory is an empty tmpfs in the view: a write lands there, never in
    # the real one.
    state = ident.home / ".local/share/layershell/planted"
    ident.run(["writeto", str(state)])
    assert not state.exists()
    assert ident.run(["writeto", str(ident.home / ".local/bin/core")]).stdout.decode().strip() == (
        "denied"
    )


def install_writable(ident: Identity, shared: Path, extra: str) -> None:
    files: dict[str, bytes | str] = {"bin/writeto": SETTINGS["bin/writeto"]}
    install_package(ident, shared, "writer", files, "default", extra)


def test_writable_names_more_paths_of_the_home(fresh_rootless: Identity, shared_dir: Path) -> None:
    ident = fresh_rootless
    rc = ident.home / ".writerrc"
    rc.write_text("")
    notes = mine(ident, ident.home / "notes")
    os.chown(rc, ident.uid, ident.gid)
    install_writable(ident, shared_dir, "      writable: [~/.writerrc, ~/notes, ~/.missing]\n")
    assert writes(ident, str(rc), ident.home) == "wrote"
    assert rc.read_text() == "x\n"
    assert writes(ident, str(notes / "n1"), ident.home) == "wrote"
    assert writes(ident, str(ident.home / ".bashrc"), ident.home) == "denied"
    # A path that does not exist is not made: the home stays as the host has it.
    assert writes(ident, str(ident.home / ".missing"), ident.home) == "denied"


def test_a_writable_path_that_is_a_link_is_not_bound(
    fresh_rootless: Identity, shared_dir: Path
) -> None:
    """The attack: a program that can write next to a writable: path (its cwd, say)
    swaps it for a link to ~/.bashrc, to be given that at the next run."""
    ident = fresh_rootless
    bashrc = ident.home / ".bashrc"
    bashrc.write_text("# mine\n")
    os.chown(bashrc, ident.uid, ident.gid)
    proj = mine(ident, ident.home / "proj")
    (proj / "out").symlink_to(bashrc)
    os.lchown(proj / "out", ident.uid, ident.gid)
    install_writable(ident, shared_dir, "      writable: [~/proj/out]\n")
    assert writes(ident, str(proj / "out"), ident.home) == "denied"
    assert bashrc.read_text() == "# mine\n"


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("/etc/passwd", "is not a path below the home"),
        ("~/../etc", "has an empty, '.' or '..' part"),
        ("~", "is not a path below the home"),
        ("~/.local/bin", "is or holds one of layershell's own trees"),
        ("~/.config/layershell/layers.yaml", "is or holds one of layershell's own trees"),
        ("~/.local", "is or holds one of layershell's own trees"),
    ],
)
def test_bad_writable_paths_are_refused_with_their_line(
    tmp_path: Path, path: str, words: str
) -> None:
    import subprocess

    from tests.support import python_cmd

    manifest = tmp_path / "composable.yaml"
    manifest.write_text(
        "composable:\n  default_repository: file:///srv/repo\n  packages:\n"
        f"    - name: writer\n      version: '1.0'\n      writable: ['{path}']\n"
    )
    r = subprocess.run(python_cmd("check", str(manifest)), capture_output=True, text=True)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "composable.yaml:6:" in r.stdout + r.stderr and words in r.stdout + r.stderr
