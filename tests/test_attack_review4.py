"""The fourth attack review's findings (issue 13's shims), each written as the attack
and asserting that it fails: a layer-2 program runs as its caller's uid, so whatever
the caller's host programs read code from must stay out of its reach."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from tests.support import Identity, install_package

install_pkg = install_package


# --- a server the caller keeps in /tmp (tmux, ssh-agent, an editor's) ------------------
CONNECT: dict[str, bytes | str] = {
    "bin/connect": "#!/usr/bin/python3\nimport socket, sys\ns = socket.socket(socket.AF_UNIX)\n"
    "try:\n s.connect(sys.argv[1]); s.sendall(b'run: touch ~/.bashrc'); print('connected')\n"
    "except OSError as e:\n print('refused', e.strerror)\n",
}


@pytest.mark.parametrize("profile", ["default", "nonetwork", "strict"])
def test_a_socket_the_caller_keeps_in_tmp_is_out_of_reach(
    fresh_rootless: Identity, shared_dir: Path, profile: str, tmp_path: Path
) -> None:
    """The attack: with the caller's /tmp shared, a program told the caller's tmux
    server (/tmp/tmux-UID/default) to run-shell, and wrote ~/.bashrc outside the layer;
    ssh-agent's socket (/tmp/ssh-XXXX/agent.PID) listed the caller's keys."""
    ident = fresh_rootless
    install_pkg(ident, shared_dir, "conn", CONNECT, profile)
    where = Path(tempfile.mkdtemp(prefix="layershell-srv-", dir="/tmp"))  # unique per run
    os.chown(where, ident.uid, ident.gid)
    path = str(where / "sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    os.chown(path, ident.uid, ident.gid)
    server.listen(1)
    got: list[bytes] = []

    def serve() -> None:
        server.settimeout(10)
        try:
            conn, _ = server.accept()
            got.append(conn.recv(100))
        except OSError:
            pass

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        r = ident.run(["connect", path])
        assert r.stdout.decode().startswith("refused"), r.stdout + r.stderr
    finally:
        server.close()
        thread.join()
        subprocess.run(["rm", "-rf", str(where)], check=False)
    assert got == []


# --- a program's own directories: never the host's ~/.config/NAME ---------------------
def test_programs_named_after_session_directories_write_nothing_the_host_reads(
    fresh_rootless: Identity, shared_dir: Path
) -> None:
    """The attack: shims named autostart and environment.d (or a package named tmux)
    were given ~/.config/autostart, ~/.config/environment.d (read at the next login) and
    ~/.config/tmux (read by the host's tmux, which runs its run-shell lines)."""
    ident = fresh_rootless
    files: dict[str, bytes | str] = {
        "bin/autostart": '#!/bin/sh\nd="$HOME/.config/autostart"\n'
        'printf "[Desktop Entry]\\nExec=sh -c evil\\n" > "$d/x.desktop" '
        "&& echo wrote || echo denied\n",
        "bin/environment.d": '#!/bin/sh\necho "LD_PRELOAD=/tmp/evil.so" > '
        '"$HOME/.config/environment.d/10-x.conf" && echo wrote || echo denied\n',
    }
    install_pkg(ident, shared_dir, "tmux", {**files, "bin/tmux-helper": (
        '#!/bin/sh\necho \'run-shell "echo x >> $HOME/.bashrc"\' > "$HOME/.config/tmux/tmux.conf"'
        " && echo wrote || echo denied\n")}, "default")  # fmt: skip
    for program in ("autostart", "environment.d", "tmux-helper"):
        # the program keeps its own (its native path works), but apart from the host's
        assert ident.run([program]).stdout.decode().strip() == "wrote", program
    for leaked in (".config/autostart/x.desktop", ".config/environment.d/10-x.conf",
                   ".config/tmux/tmux.conf"):  # fmt: skip
        assert not (ident.home / leaked).exists(), leaked
    kept = ident.home / ".local/share/layershell-programs"
    assert (kept / "autostart/config/x.desktop").exists()
    assert (kept / "tmux/config/tmux.conf").exists()


# --- ~/bin as a cwd: Debian's ~/.profile puts it ahead of /usr/bin ---------------------
def test_a_cwd_on_the_callers_path_stays_read_only(
    fresh_rootless: Identity, shared_dir: Path
) -> None:
    ident = fresh_rootless
    plant: dict[str, bytes | str] = {"bin/plant": '#!/bin/sh\nprintf "#!/bin/sh\\necho evil\\n"'
             " > ls 2>/dev/null && chmod +x ls && echo wrote || echo denied\n"}  # fmt: skip
    install_pkg(ident, shared_dir, "w", plant, "default")
    for name in ("bin", "tools/bin"):
        home_bin = ident.home / name
        home_bin.mkdir(parents=True)
        top = str(ident.home / name.split("/")[0])
        subprocess.run(["chown", "-R", f"{ident.uid}:{ident.gid}", top], check=True)
        path = f"{home_bin}:{ident.env['PATH']}"
        r = ident.run(["plant"], cwd=str(home_bin), env={"PATH": path})
        assert r.stdout.decode().strip() == "denied", name
        assert not (home_bin / "ls").exists()
    # ... and a directory holding one (~/tools) is not writable either.
    r = ident.run(["plant"], cwd=str(ident.home / "tools"),
                  env={"PATH": f"{ident.home}/tools/bin:{ident.env['PATH']}"})  # fmt: skip
    assert r.stdout.decode().strip() == "denied"


# --- the cwd is checked, then bound: a link swapped in between must not count -----------
FLIP: dict[str, bytes | str] = {
    # run with cwd ~/proj: swap ~/proj/sub between the real directory and a link to
    # ~/.local/bin (rootless shims) for a few seconds, in the background
    "bin/flipper": "#!/usr/bin/python3\nimport os, sys, time\n"
    "home = os.environ['HOME']\nend = time.time() + float(sys.argv[1])\n"
    "os.chdir(home + '/proj')\nlink = home + '/' + sys.argv[2]\n"
    "while time.time() < end:\n"
    "    os.rename('sub', 'sub.real')\n"
    "    os.symlink(link, 'sub')\n"
    "    time.sleep(0.0003)\n"
    "    os.unlink('sub')\n"
    "    os.rename('sub.real', 'sub')\n"
    "    time.sleep(0.0003)\n",
    "bin/writeto": '#!/bin/sh\n(echo x > "$1") 2>/dev/null && echo wrote || echo denied\n',
}


@pytest.mark.parametrize(
    ("link", "victim"),
    [
        (".local/bin", ".local/bin/planted"),  # the shims (rootless)
        (
            ".local",
            ".local/share/layershell/planted",
        ),  # layer 1 state dir (~/.local rw covers its tmpfs)
    ],
)
def test_cwd_bind_symlink_race(
    fresh_rootless: Identity, shared_dir: Path, link: str, victim: str
) -> None:
    ident = fresh_rootless
    install_pkg(ident, shared_dir, "flip", FLIP, "default")
    proj = ident.home / "proj"
    (proj / "sub").mkdir(parents=True)
    for p in (proj, proj / "sub"):
        os.chown(p, ident.uid, ident.gid)
    target = ident.home / victim
    ident.run(["writeto", str(target)], cwd=str(proj))
    assert not target.exists()  # without the race: denied, or a write into the view's tmpfs
    flipper = subprocess.Popen(ident.argv(["flipper", "20", link]), env=ident.env, cwd=str(proj))
    won = 0
    try:
        time.sleep(0.5)
        # the caller runs shims from ~/proj/sub, as it would; its cwd is the real inode
        start = time.time()
        tries = 0
        while time.time() - start < 15 and not won:
            tries += 1
            pre = 'cd "$1" 2>/dev/null || cd "$1.real" 2>/dev/null || exit 9; '
            r = ident.run(["sh", "-c", pre + f"exec writeto {target}", "x", str(proj / "sub")])
            if r.stdout.decode().strip() == "wrote" and target.exists():
                won = tries
    finally:
        flipper.kill()
        flipper.wait()
    assert not won, f"written outside the layer after {won} tries"
    assert not target.exists()
    assert tries > 50  # the race was really run


# --- strict with the manifest's 64 env: pass: names ------------------------------------
def test_strict_with_many_pass_names_still_runs(fresh_rootless: Identity, shared_dir: Path) -> None:
    ident = fresh_rootless
    names = [f"V{i}" for i in range(64)]  # the manifest's limit
    extra = f"      env: {{pass: [{', '.join(names)}]}}\n"
    install_pkg(ident, shared_dir, "many", {"bin/show": '#!/bin/sh\necho "V63=$V63"\n'},
                "strict", extra)  # fmt: skip
    r = ident.run(["show"], env={"V63": "yes"})
    assert (r.returncode, r.stdout) == (0, b"V63=yes\n"), r.stderr


def test_env_set_values_reach_the_program_verbatim(
    fresh_rootless: Identity, shared_dir: Path
) -> None:
    """Not a defect found, kept as the attack: a value is one shell word in the shim."""
    ident = fresh_rootless
    nasty = "a'b\"c $(touch /tmp/r4-pwn) `touch /tmp/r4-pwn2` ${HOME} \\\\ ;|&<>*?~#"
    extra = "      env: {set: {NASTY: '" + nasty.replace("'", "''") + "'}}\n"
    install_pkg(ident, shared_dir, "q", {"bin/show": '#!/bin/sh\nprintf "%s" "$NASTY"\n'},
                "default", extra)  # fmt: skip
    r = ident.run(["show"])
    assert r.stdout.decode() == nasty, (r.stdout, r.stderr)
    assert not Path("/tmp/r4-pwn").exists() and not Path("/tmp/r4-pwn2").exists()


# --- a manifest entry that names no profile lets the record's stricter ask stand -------
def test_an_entry_without_profile_keeps_the_records_stricter_profile(tmp_path: Path) -> None:
    from layershell.packages import grants, manifest
    from layershell.packages.state import Installed

    source = tmp_path / "composable.yaml"
    source.write_text(
        "composable:\n  default_repository: file:///srv/repo\n  packages:\n"
        "    - name: tool\n      version: '1.0'\n"
        "    - name: named\n      version: '1.0'\n      profile: default\n"
    )
    loaded = manifest.load_manifest(str(source))
    table = grants.Table({}, loaded)
    for name, expected in (("tool", "strict"), ("named", "default")):
        row = Installed(name=name, version="1.0", layer="arne", path="", sha256="", source="",
                        size=0, files=0, bytes=0, installed_at=0.0, active=True,
                        spec={"profile": "strict"})  # fmt: skip
        assert table.policy(row).profile == expected, name
