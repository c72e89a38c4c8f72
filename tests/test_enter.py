"""layershell-enter, the executor (layershell/layers/enter.c), driven directly: what no layer
config of ours exercises on this host (links inside the view as on Fedora CoreOS), and
its options for shims (cwd binding, environment allow-list, refusing root)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from layershell.layers import sandbox
from tests.support import IS_ROOT, Identity


def helper(ident: Identity) -> str:
    return str(ident.home / ".local/share/layershell/libexec/layershell-enter")


def view(ident: Identity) -> str:
    return str(ident.home / ".local/share/layershell/views/otto")


def base(ident: Identity) -> list[str]:
    argv: list[str] = [helper(ident), "--layer", "t", "--view", view(ident)]
    for kind, dest, source, mode in sandbox.base_mounts():
        if kind in (sandbox.TMPFS, sandbox.DIR):
            argv += [f"--{kind}", dest, f"{mode:o}"]
        else:
            argv += [f"--{kind}", source, dest]
    return argv


def test_links_inside_the_view_are_followed_within_it(
    fresh_rootless: Identity, shared_dir: Path
) -> None:
    # A tree like Fedora CoreOS's: /data/local -> ../state/usrlocal, /data/abs -> /data2
    tree = shared_dir / "tree"
    (tree / "state/usrlocal").mkdir(parents=True)
    os.symlink("../state/usrlocal", tree / "local")
    payload = shared_dir / "payload"
    payload.mkdir()
    (payload / "f").write_text("through the link\n")
    for p in (tree, tree / "state", tree / "state/usrlocal", payload):
        p.chmod(0o755)
    (payload / "f").chmod(0o644)
    r = fresh_rootless.run(
        [*base(fresh_rootless), "--tmpfs", "/data", "755", "--dir", "/data/state", "755",
         "--symlink", "state/usrlocal", "/data/local", "--ro-bind", str(payload), "/data/local",
         "--", "cat", "/data/state/usrlocal/f"]
    )  # fmt: skip
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout == b"through the link\n"


def test_bind_cwd_and_its_deny_list(fresh_rootless: Identity, shared_dir: Path) -> None:
    work = shared_dir / "work"
    work.mkdir()
    os.chown(work, fresh_rootless.uid, fresh_rootless.gid)
    cmd = ["--", "sh", "-c", "pwd; touch here && echo wrote"]
    r = fresh_rootless.run([*base(fresh_rootless), "--bind-cwd", "rw", *cmd], cwd=str(work))
    assert r.stdout.decode().split() == [str(work), "wrote"], r.stderr.decode()
    r = fresh_rootless.run([*base(fresh_rootless), "--bind-cwd", "ro", *cmd], cwd=str(work))
    assert r.stdout.decode().split() == [str(work)]
    assert "Read-only file system" in r.stderr.decode()
    r = fresh_rootless.run(
        [*base(fresh_rootless), "--home", "/tmp", "--bind-cwd", "rw",
         "--cwd-deny", str(shared_dir), *cmd],
        cwd=str(work),
    )  # fmt: skip
    assert r.stdout.decode().split() == ["/tmp", "wrote"]  # denied: not bound, home instead


def test_environment_allow_list(fresh_rootless: Identity) -> None:
    r = fresh_rootless.run(
        [*base(fresh_rootless), "--clearenv", "--keep-env", "KEEPME", "--keep-env-prefix",
         "LC_", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "KEEPME", "overridden",
         "--", "env"],
        env={"KEEPME": "x", "LC_TIME": "C", "SECRET": "s"},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr.decode()
    # The caller's cwd (its real home) is not in this view, so the program starts in /.
    assert sorted(r.stdout.decode().splitlines()) == [
        "KEEPME=overridden", "LC_TIME=C", "PATH=/usr/bin:/bin", "PWD=/",
    ]  # fmt: skip


def test_bind_home_never_binds_the_root_directory(fresh_rootless: Identity) -> None:
    r = fresh_rootless.run([*base(fresh_rootless), "--bind-home", "rw", "--", "ls", "/"],
                           env={"HOME": "/"})  # fmt: skip
    # The view's / holds only what the spec put there; HOME=/ was not bound over it.
    assert r.returncode == 0, r.stderr.decode()
    names = set(r.stdout.decode().split())
    assert {"usr", "etc", "tmp"} <= names
    assert not names & {"root", "home", "srv", "opt", "boot"}


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--frobnicate"], 2, "unknown option --frobnicate"),
        (["--bind-cwd", "maybe"], 2, "--bind-cwd takes ro or rw"),
        ([], 2, "no program to run"),
        (["--", "no-such-program-xyz"], 127, "no-such-program-xyz: command not found in layer t"),
    ],
)
def test_usage_errors(fresh_rootless: Identity, args: list[str], code: int, message: str) -> None:
    r = fresh_rootless.run([*base(fresh_rootless), *args])
    assert r.returncode == code
    assert message in r.stderr.decode()


@pytest.mark.skipif(not IS_ROOT, reason="needs root: checks that the executor refuses root")
def test_refuses_root_when_asked(rootless: Identity) -> None:
    import subprocess

    r = subprocess.run(
        [*base(rootless), "--refuse-root", "--", "id", "-u"], capture_output=True, check=False
    )
    assert r.returncode == 1
    assert b"refusing to run a layer program as root" in r.stderr


def test_too_many_variables_is_refused_not_cut(fresh_rootless: Identity) -> None:
    # Past the executor's table the --setenv entries (PATH, strict's HOME) would be lost.
    many = {f"LC_X{i}": "1" for i in range(600)}
    r = fresh_rootless.run(
        [*base(fresh_rootless), "--clearenv", "--keep-env-prefix", "LC_", "--setenv", "HOME",
         "/tmp", "--", "true"],
        env=many,
    )  # fmt: skip
    assert r.returncode == 1
    assert b"too many environment variables" in r.stderr
