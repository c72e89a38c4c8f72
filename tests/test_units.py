"""Unit tests of pure pieces: path detection, view path resolution, argument parsing,
access rules. The same paths run for real in test_fidelity and test_layers_system."""

from __future__ import annotations

import os

import pytest

from layershell import paths
from layershell.errors import PermissionRefused
from layershell.layers import access, launch, main, sandbox
from layershell.layers.model import Layer, LayerStack

STACK = LayerStack(
    (
        Layer("core", 0, "root"),
        Layer("arne", 1, "arne", "core", "{store}/home", (("/opt/pkgs", "{pkgs}"),)),
        Layer("otto", 2, "otto", "arne"),
    ),
    "layers.yaml",
)


@pytest.mark.parametrize(
    ("kwargs", "env", "uid", "mode", "root"),
    [
        ({}, {}, 0, "system", "/"),
        ({"root": "/x"}, {}, 1000, "system", "/x"),
        ({}, {"LAYERSHELL_ROOT": "/y"}, 1000, "system", "/y"),
        ({"rootless": True}, {}, 1000, "rootless", "/h"),
        ({"rootless": False}, {}, 1000, "system", "/"),
        ({}, {"LAYERSHELL_MODE": "system"}, 1000, "system", "/"),
        ({}, {"LAYERSHELL_MODE": "rootless", "LAYERSHELL_ROOT": "/y"}, 1000, "rootless", "/h"),
    ],
)
def test_detect(
    kwargs: dict[str, object], env: dict[str, str], uid: int, mode: str, root: str
) -> None:
    got = paths.detect(env=env, uid=uid, home="/h", **kwargs)  # type: ignore[arg-type]
    assert (got.mode, got.root) == (mode, root)


def test_rootless_paths_follow_xdg() -> None:
    got = paths.Paths.rootless("/h", {"XDG_DATA_HOME": "/d", "XDG_CONFIG_HOME": "/c"})
    assert got.state_dir == "/d/layershell"
    assert got.layers_file == "/c/layershell/layers.yaml"
    assert got.bin_dir == "/h/.local/bin"


def test_layer_mounts_order_and_modes() -> None:
    mounts = sandbox.layer_mounts(
        (("arne", (("/opt/pkgs", "{pkgs}"), ("/usr/local", "{store}/usr-local"))),
         ("otto", ())),
        "/home/otto", "/s/layers", "/opt/pkgs", "/s",
    )  # fmt: skip
    by_dest = {m[1]: m for m in mounts}
    assert by_dest["/opt/pkgs"][0] == sandbox.RO_BIND  # lower layer: read-only
    assert by_dest["/usr/local"] == (sandbox.RO_BIND, "/usr/local", "/s/layers/arne/usr-local", 0)
    assert by_dest["/home/otto"][0] == sandbox.BIND
    depths = [m[1].rstrip("/").count("/") for m in mounts]
    assert depths == sorted(depths)  # parents before children
    assert mounts.index(by_dest["/usr"]) < mounts.index(by_dest["/usr/local"])


@pytest.mark.parametrize(
    ("argv", "layer", "command", "program", "login"),
    [
        (["layer-shell"], None, None, (), False),
        (["-layer-shell"], None, None, (), True),
        (["layer-shell", "-l"], None, None, (), True),
        (["layer-shell", "--layer", "otto", "--", "a", "-c"], "otto", None, ("a", "-c"), False),
        (["layer-shell", "--layer=otto", "-c", "x", "y"], "otto", "x", (), False),
        (["layer-shell", "-lc", "x"], None, "x", (), True),
        (["layer-shell", "prog", "--layer"], None, None, ("prog", "--layer"), False),
    ],
)
def test_parse(
    argv: list[str], layer: str | None, command: str | None, program: tuple[str, ...], login: bool
) -> None:
    name, request = main.parse(argv)
    assert (name, request.command, request.program, request.login) == (
        layer, command, program, login,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["layer-shell", "--layer"], "--layer needs a layer name"),
        (["layer-shell", "-c"], "-c needs a command"),
        (["layer-shell", "--"], "-- needs a program to run"),
        (["layer-shell", "--frob"], "unknown option --frob"),
    ],
)
def test_parse_errors(argv: list[str], message: str) -> None:
    with pytest.raises(main.UsageError) as info:
        main.parse(argv)
    assert info.value.message == message
    assert info.value.exit_code == 2


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["layer-shell", "--help"], True),
        (["layer-shell", "--layer", "otto", "--help"], True),
        (["layer-shell", "-c", "--help"], False),
        (["layer-shell", "--", "prog", "--help"], False),
        (["layer-shell", "prog", "--help"], False),
    ],
)
def test_wants_help(argv: list[str], expected: bool) -> None:
    assert main.wants_help(argv) is expected


def test_login_program_argv() -> None:
    otto = STACK.layers[2]
    shell = launch.shell_for(otto)
    login = launch.Request(command="id", login=True)
    assert launch.program_argv(otto, login) == (shell, ("-" + os.path.basename(shell), "-c", "id"))


def test_login_environment_is_clean() -> None:
    req = launch.Request(login=True)
    env = launch.environment(
        STACK.layers[2], req, home="/home/otto", user="otto", shell="/bin/bash",
        base={"TERM": "xterm", "LC_ALL": "C", "SECRET": "x", "TMPDIR": "/t"},
    )  # fmt: skip
    assert env == {
        "TERM": "xterm", "LC_ALL": "C", "HOME": "/home/otto", "USER": "otto",
        "LOGNAME": "otto", "SHELL": "/bin/bash", "PATH": sandbox.LAYER_PATH,
        "LAYERSHELL_LAYER": "otto",
    }  # fmt: skip
    passthrough = launch.environment(
        STACK.layers[2], launch.Request(), home="/h", user="u", shell="/bin/sh",
        base={"SECRET": "x", "TMPDIR": "/t"},
    )  # fmt: skip
    assert passthrough["SECRET"] == "x" and "TMPDIR" not in passthrough


@pytest.mark.parametrize(
    ("uid", "account", "target", "refused"),
    [
        (0, "root", "arne", None),
        (1001, "arne", "arne", None),
        (1002, "otto", "otto", None),
        (1002, "otto", "arne", "is more privileged"),
        (1001, "arne", "otto", "belongs to account otto"),
        (1003, "eve", "otto", "has no layer"),
    ],
)
def test_access(uid: int, account: str, target: str, refused: str | None) -> None:
    layer = access.find(STACK, target)
    if refused is None:
        access.check_entry(STACK, "system", uid, account, layer)
    else:
        with pytest.raises(PermissionRefused, match=refused):
            access.check_entry(STACK, "system", uid, account, layer)


def test_default_layers() -> None:
    assert access.default_layer(STACK, "rootless", 1000, "me").name == "arne"
    assert access.default_layer(STACK, "system", 0, "root").name == "core"
    assert access.default_layer(STACK, "system", 1002, "otto").name == "otto"
