"""Issue 2 acceptance in system mode: real accounts, su, PAM, relocated root."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
from pathlib import Path

import pytest

from tests.support import SystemStack


def out(result: object) -> str:
    return result.stdout.decode().strip()  # type: ignore[attr-defined, no-any-return]


def err(result: object) -> str:
    return result.stderr.decode()  # type: ignore[attr-defined, no-any-return]


def test_arne_is_pseudo_root_via_su_login_shell(system: SystemStack) -> None:
    r = system.in_layer(system.arne, "id -u")
    assert r.returncode == 0, err(r)
    assert out(r) == "0"


def test_arne_file_in_store_is_owned_by_arne_on_host(system: SystemStack) -> None:
    r = system.in_layer(system.arne, "echo data > /opt/pkgs/arne-file && id -u")
    assert r.returncode == 0, err(r)
    host = system.root / "opt/pkgs/arne-file"
    assert host.read_text() == "data\n"
    assert host.stat().st_uid == pwd.getpwnam(system.arne).pw_uid
    assert host.stat().st_uid != 0


@pytest.mark.parametrize("path", ["/usr/bin/layershell-x", "/etc/layershell-x"])
def test_arne_cannot_write_core(system: SystemStack, path: str) -> None:
    r = system.in_layer(system.arne, f"echo x > {path}")
    assert r.returncode != 0
    assert not os.path.exists(path)


def test_arne_cannot_read_shadow(system: SystemStack) -> None:
    r = system.in_layer(system.arne, "cat /etc/shadow")
    assert r.returncode != 0
    assert "Permission denied" in err(r)
    assert "root:" not in out(r)


def test_arne_can_write_its_usr_local_and_home(system: SystemStack) -> None:
    r = system.in_layer(system.arne, "touch /usr/local/tool && touch ~/note && echo ok")
    assert out(r) == "ok", err(r)
    assert (system.root / "var/lib/layershell/layers/arne/usr-local/tool").exists()


def test_otto_is_itself_and_reads_but_cannot_change_layer1(system: SystemStack) -> None:
    pkgs = system.root / "opt/pkgs"
    r = system.in_layer(system.arne, "echo from-arne > /opt/pkgs/shared && echo ok")
    assert out(r) == "ok", err(r)
    r = system.in_layer(system.otto, "id -u; cat /opt/pkgs/shared")
    assert out(r).splitlines() == [str(pwd.getpwnam(system.otto).pw_uid), "from-arne"]
    r = system.in_layer(system.otto, "echo evil > /opt/pkgs/shared")
    assert r.returncode != 0
    r = system.in_layer(system.otto, "rm -f /opt/pkgs/shared")
    assert r.returncode != 0
    r = system.in_layer(system.otto, "touch /opt/pkgs/new")
    assert r.returncode != 0
    assert (pkgs / "shared").read_text() == "from-arne\n"
    assert not (pkgs / "new").exists()


def test_otto_cannot_remount_layer1_writable(system: SystemStack) -> None:
    # Even with a new user namespace of its own, otto cannot lift the read-only lock.
    r = system.in_layer(
        system.otto,
        "unshare -Urm sh -c 'mount -o remount,rw,bind /opt/pkgs && touch /opt/pkgs/x'",
    )
    assert r.returncode != 0
    assert not (system.root / "opt/pkgs/x").exists()


def test_setuid_root_copy_gives_no_root(system: SystemStack) -> None:
    target = system.root / "opt/pkgs/id-suid"
    shutil.copy("/usr/bin/id", target)
    os.chown(target, 0, 0)
    os.chmod(target, 0o4755)
    try:
        assert target.stat().st_mode & stat.S_ISUID
        r = system.in_layer(system.otto, "/opt/pkgs/id-suid -u; /opt/pkgs/id-suid -ru")
        otto_uid = str(pwd.getpwnam(system.otto).pw_uid)
        assert out(r).splitlines() == [otto_uid, otto_uid], err(r)
    finally:
        target.unlink()


CONNECT = (
    "python3 -c \"import socket,sys; s=socket.create_connection(('127.0.0.1', {port}), 3); "
    'sys.stdout.write(s.recv(5).decode())"'
)


def test_network_off_layer_cannot_reach_loopback(system: SystemStack, listener: int) -> None:
    r = system.in_layer(system.otto, CONNECT.format(port=listener))
    assert r.returncode != 0
    assert "unreachable" in err(r) or "refused" in err(r)


def test_network_on_layer_reaches_loopback(system: SystemStack, listener: int) -> None:
    r = system.in_layer(system.arne, CONNECT.format(port=listener))
    assert r.returncode == 0, err(r)
    assert out(r) == "pong"


def test_core_shell_opens_and_closes_pam_session(system: SystemStack) -> None:
    system.pam_log.unlink(missing_ok=True)
    r = system.core("shell", "--layer", "arne", "--", "id", "-u")
    assert r.returncode == 0, err(r)
    assert out(r) == "0"
    assert system.pam_log.read_text().splitlines() == [
        f"open_session {system.arne}",
        f"close_session {system.arne}",
    ]


def test_core_shell_passes_exit_status(system: SystemStack) -> None:
    r = system.core("shell", "--layer", "otto", "--", "sh", "-c", "exit 7")
    assert r.returncode == 7
    r = system.core("shell", "--layer", "otto", "--", "sh", "-c", "kill -TERM $$")
    assert r.returncode == 143


def test_core_shell_refuses_locked_account(system: SystemStack) -> None:
    import subprocess

    subprocess.run(["usermod", "--lock", "--expiredate", "1", system.otto], check=True)
    try:
        system.pam_log.unlink(missing_ok=True)
        r = system.core("shell", "--layer", "otto", "--", "id", "-u")
        assert r.returncode == 1
        assert f"account {system.otto} is refused by PAM account management" in err(r)
        assert "expired" in err(r)
        assert out(r) == ""
        assert not system.pam_log.exists()  # no session was opened
    finally:
        subprocess.run(["usermod", "--expiredate", "", system.otto], check=True)
        subprocess.run(["usermod", "-p", "!", system.otto], check=True)


def test_core_shell_without_root_says_sudo(system: SystemStack) -> None:
    import sys

    r = system.as_user(system.arne, [sys.executable, "-m", "layershell", "shell", "--", "id"])
    assert r.returncode == 1
    assert "core shell needs root" in err(r)
    # Under the stack's --root (LAYERSHELL_ROOT), which sudo would not pass on: kept.
    assert f"sudo core --root {system.root} shell --layer arne" in err(r)


def test_otto_cannot_enter_arne(system: SystemStack) -> None:
    r = system.as_user(system.otto, [system.launcher, "--layer", "arne", "--", "id", "-u"])
    assert r.returncode == 1
    assert out(r) == ""
    assert "layer arne (level 1) is more privileged" in err(r)
    assert "sudo core shell --layer arne" in err(r)


def test_arne_cannot_enter_another_accounts_layer(system: SystemStack) -> None:
    r = system.as_user(system.arne, [system.launcher, "--layer", "otto", "--", "id", "-u"])
    assert r.returncode == 1
    assert f"layer otto belongs to account {system.otto}" in err(r)


def test_init_is_idempotent(system: SystemStack) -> None:
    r = system.core("init", "--create-users")
    assert r.returncode == 0, err(r)
    assert "0 changes" in out(r)


def test_init_never_overwrites_foreign_launcher(system: SystemStack, tmp_path: Path) -> None:
    launcher = Path(system.launcher)
    original = launcher.read_bytes()
    launcher.write_text("#!/bin/sh\necho foreign\n")
    try:
        r = system.core("init")
        assert r.returncode == 0
        assert "not written by layershell" in err(r)
        assert launcher.read_text() == "#!/bin/sh\necho foreign\n"
    finally:
        launcher.write_bytes(original)


def test_store_owners_and_modes(system: SystemStack) -> None:
    arne = pwd.getpwnam(system.arne)
    state = system.root / "var/lib/layershell"
    for path, uid, mode in [
        (state / "layers/arne", arne.pw_uid, 0o755),
        (state / "layers/arne/usr-local", arne.pw_uid, 0o755),
        (state / "layers/arne/home", arne.pw_uid, 0o700),
        (system.root / "opt/pkgs", arne.pw_uid, 0o755),
        (state / "views/otto", 0, 0o755),
    ]:
        st = path.stat()
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (uid, mode), path
    assert pwd.getpwnam(system.arne).pw_shell == system.launcher


def test_init_refuses_writable_outside_layershell(system: SystemStack) -> None:
    config = system.root / "etc/layershell/layers.yaml"
    original = config.read_text()
    config.write_text(original.replace('"{store}/usr-local"', "/etc"))
    try:
        r = system.core("init")
        assert r.returncode == 2
        assert "/etc is outside layershell's directories" in err(r)
        assert os.stat("/etc").st_uid == 0
    finally:
        config.write_text(original)
        assert system.core("init").returncode == 0


def test_core_shell_layer_completion(system: SystemStack) -> None:
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "layershell"],
        env={**system.env, "_CORE_COMPLETE": "bash_complete",
             "COMP_WORDS": "core shell --layer o", "COMP_CWORD": "3"},
        capture_output=True, text=True, check=False, cwd="/",
    )  # fmt: skip
    assert "plain,otto" in r.stdout.splitlines(), r.stdout + r.stderr


def test_pwd_names_the_real_start_directory(system: SystemStack) -> None:
    r = system.core("shell", "--layer", "otto", "--", "sh", "-c", 'echo "$PWD"; pwd')
    lines = out(r).splitlines()
    assert len(lines) == 2 and lines[0] == lines[1], err(r)
