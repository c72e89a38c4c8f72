"""The fifth attack review's attacks on the shim fixes (commit 0727a69), each asserting
that it fails: a cwd the view does not show at the same inode, a PATH directory as the
cwd wherever it is, ~/bin before it is on PATH, a program's kept directory swapped for a
link, and writes through /proc into the caller's processes."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support import Identity
from tests.test_attack_review4 import install_pkg

PROC: dict[str, bytes | str] = {
    # any process of the caller outside the view (here: the shell that started us)
    "bin/procwrite": "#!/usr/bin/python3\nimport os, sys\n"
    "target = sys.argv[1]\n"
    "me = os.readlink('/proc/self/root')\n"
    "for pid in [os.getppid()] + [int(p) for p in os.listdir('/proc') if p.isdigit()]:\n"
    "    try:\n"
    "        with open(f'/proc/{pid}/root' + target, 'a') as f: f.write('echo pwned\\n')\n"
    "        print('wrote via', pid); break\n"
    "    except OSError as e: last = e\n"
    "else: print('denied', last)\n",
}


@pytest.mark.parametrize("profile", ["default", "strict"])
def test_proc_pid_root_escape(fresh_rootless: Identity, shared_dir: Path, profile: str) -> None:
    ident = fresh_rootless
    install_pkg(ident, shared_dir, "procw", PROC, profile)
    victim = ident.home / ".bashrc"
    victim.write_text("# rc\n")
    os.chown(victim, ident.uid, ident.gid)
    r = ident.run(["sh", "-c", f"procwrite {victim}; true"])
    print(r.stdout, r.stderr)
    assert "pwned" not in victim.read_text(), r.stdout


XDGCWD: dict[str, bytes | str] = {
    "bin/tmux-helper": "#!/bin/sh\necho 'run-shell \"echo x >> ~/.bashrc\"' > tmux.conf"
    " 2>/dev/null && echo wrote || echo denied\n",
}


@pytest.mark.parametrize("sub", ["", "/plugins"])
def test_cwd_in_the_hosts_own_xdg_dir(fresh_rootless: Identity, shared_dir: Path, sub: str) -> None:
    ident = fresh_rootless
    install_pkg(ident, shared_dir, "tmux", XDGCWD, "default")
    host = ident.home / ".config/tmux"
    ident.run(["tmux-helper"])  # first run: makes the empty mount point
    (host / sub.lstrip("/")).mkdir(parents=True, exist_ok=True)
    subprocess.run(["chown", "-R", f"{ident.uid}:{ident.gid}", str(host)], check=True)
    r = ident.run(["tmux-helper"], cwd=str(host) + sub)
    print(r.stdout, r.stderr)
    assert not (Path(str(host) + sub) / "tmux.conf").exists(), r.stdout


PLANT: dict[str, bytes | str] = {
    "bin/plant": '#!/bin/sh\nprintf "#!/bin/sh\\necho evil\\n"'
    " > ls 2>/dev/null && chmod +x ls && echo wrote || echo denied\n"
}


def test_cwd_on_a_separate_mount_inside_the_home(
    fresh_rootless: Identity, shared_dir: Path
) -> None:
    """~/.config on its own filesystem (a tmpfs here; a bind-mounted dotfiles dir, a
    FUSE or ecryptfs mount in life): the non-recursive home bind does not show it, so
    the cwd counts as 'not in the view' and is bound rw without writable_in_home."""
    ident = fresh_rootless
    install_pkg(ident, shared_dir, "w", PLANT, "default")
    conf = ident.home / ".config2"
    conf.mkdir()
    subprocess.run(
        [
            "mount",
            "-t",
            "tmpfs",
            "-o",
            f"mode=0755,uid={ident.uid},gid={ident.gid}",
            "tmpfs",
            str(conf),
        ],
        check=True,
    )
    try:
        (conf / "autostart").mkdir()
        os.chown(conf / "autostart", ident.uid, ident.gid)
        r = ident.run(["plant"], cwd=str(conf / "autostart"))
        print(r.stdout, r.stderr)
        assert not (conf / "autostart/ls").exists(), r.stdout
    finally:
        subprocess.run(["umount", "-l", str(conf)], check=False)


def test_cwd_a_path_dir_outside_the_home(fresh_rootless: Identity, shared_dir: Path) -> None:
    """Linuxbrew-like: /home/linuxbrew/.linuxbrew/bin, owned by the caller, on PATH."""
    ident = fresh_rootless
    install_pkg(ident, shared_dir, "w", PLANT, "default")
    tools = shared_dir / "brew/bin"
    tools.mkdir(parents=True)
    subprocess.run(
        ["chown", "-R", f"{ident.uid}:{ident.gid}", str(shared_dir / "brew")], check=True
    )
    r = ident.run(["plant"], cwd=str(tools), env={"PATH": f"{tools}:{ident.env['PATH']}"})
    print(r.stdout, r.stderr)
    assert not (tools / "ls").exists(), r.stdout


def test_home_bin_not_yet_on_path(fresh_rootless: Identity, shared_dir: Path) -> None:
    """Debian's ~/.profile adds ~/bin at the next login if it exists."""
    ident = fresh_rootless
    install_pkg(ident, shared_dir, "w", PLANT, "default")
    b = ident.home / "bin"
    b.mkdir()
    os.chown(b, ident.uid, ident.gid)
    r = ident.run(["plant"], cwd=str(b))
    print(r.stdout, r.stderr)
    assert not (b / "ls").exists(), r.stdout


LP: dict[str, bytes | str] = {
    "bin/lpw": "#!/bin/sh\n"
    'if [ "$1" = swap ]; then mv config config.old && ln -s "$HOME/.config/autostart" config'
    " && echo swapped || echo noswap; exit; fi\n"
    'printf "[Desktop Entry]\\nExec=evil\\n" > "$HOME/.config/lpw/evil.desktop" 2>/dev/null'
    " && echo wrote || echo denied\n",
}


def test_kept_dir_replaced_by_a_link(fresh_rootless: Identity, shared_dir: Path) -> None:
    """A package named layershell-programs covers the view's layershell-programs dir,
    so a cwd in the host's ~/.local/share/layershell-programs/lpw is bound rw; the
    program swaps its kept config/ for a link, which the next run's checks accept."""
    ident = fresh_rootless
    install_pkg(ident, shared_dir, "layershell-programs", LP, "default")
    auto = ident.home / ".config/autostart"
    auto.mkdir(parents=True, exist_ok=True)
    os.chown(auto, ident.uid, ident.gid)
    print(ident.run(["lpw"]).stdout)  # makes the kept dirs
    kept = ident.home / ".local/share/layershell-programs/lpw"
    r = ident.run(["lpw", "swap"], cwd=str(kept))
    print(r.stdout, r.stderr)
    r = ident.run(["lpw"])
    print(r.stdout, r.stderr)
    assert not (auto / "evil.desktop").exists(), r.stdout


PROC2: dict[str, bytes | str] = {
    "bin/proccwd": "#!/usr/bin/python3\nimport os, sys\npid = os.getppid()\n"
    "for p in (f'/proc/{pid}/cwd/x', f'/proc/{pid}/root/tmp/x', '/proc/self/cwd/x'):\n"
    "    try:\n        open(p, 'a').write('x'); print('wrote', p)\n"
    "    except OSError as e: print('denied', p, e.strerror)\n",
}


def test_proc_ppid_cwd(fresh_rootless: Identity, shared_dir: Path) -> None:
    ident = fresh_rootless
    install_pkg(ident, shared_dir, "procc", PROC2, "default")
    r = ident.run(["sh", "-c", "cd ~ && proccwd; true"])
    print(r.stdout, r.stderr)
    assert not (ident.home / "x").exists(), r.stdout


# --- the sixth review: a cwd holding the caller's sockets, and completions' names ------
KNOCK: dict[str, bytes | str] = {
    "bin/knock": "#!/usr/bin/python3\nimport socket\ns = socket.socket(socket.AF_UNIX)\n"
    "try:\n s.connect('s'); s.sendall(b'pwned'); print('connected')\n"
    "except OSError as e:\n print('denied', e)\n",
}


@pytest.mark.parametrize("profile", ["default", "strict", "nonetwork"])
@pytest.mark.parametrize("where", ["tmp", "runtime"])
def test_a_cwd_holding_the_callers_socket_is_not_shown(
    fresh_rootless: Identity, shared_dir: Path, profile: str, where: str
) -> None:
    """The attack: run from /tmp/tmux-UID or $XDG_RUNTIME_DIR (the session bus), the
    cwd was bound read-only, and connect() needs no write access: the program reached
    the caller's server."""
    import socket
    import tempfile
    import threading

    ident = fresh_rootless
    install_pkg(ident, shared_dir, "knock", KNOCK, profile)
    d = Path(tempfile.mkdtemp(prefix="layershell-r6-", dir="/tmp"))
    os.chown(d, ident.uid, ident.gid)
    env = {"XDG_RUNTIME_DIR": str(d)} if where == "runtime" else {}
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(d / "s"))
    os.chown(d / "s", ident.uid, ident.gid)
    server.listen(1)
    server.settimeout(10)
    got: list[bytes] = []

    def accept() -> None:
        try:
            conn, _ = server.accept()
            got.append(conn.recv(10))
        except OSError:
            pass

    thread = threading.Thread(target=accept)
    thread.start()
    try:
        r = ident.run(["knock"], cwd=str(d), env=env)
    finally:
        server.close()
        thread.join()
        subprocess.run(["rm", "-rf", str(d)], check=False)
    assert got == [] and "connected" not in r.stdout.decode(), r.stdout


def test_no_completion_registration_hides_another_commands(
    fresh_rootless: Identity, shared_dir: Path
) -> None:
    """bash-completion also loads <cmd>.bash and _<cmd>: a program git.bash would have
    hidden git's completion for every user."""
    ident = fresh_rootless
    files: dict[str, bytes | str] = {
        "bin/git.bash": "#!/bin/sh\necho x\n",
        "share/bash-completion/completions/git.bash": (
            "_g(){ COMPREPLY=(x); }\ncomplete -F _g git.bash\n"
        ),
    }
    install_pkg(ident, shared_dir, "gb", files, "default")
    assert (ident.home / ".local/bin/git.bash").exists()
    assert not (ident.home / ".local/share/bash-completion/completions/git.bash").exists()
