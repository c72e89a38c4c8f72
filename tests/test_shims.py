"""Issue 4 acceptance, shims: a package's programs on PATH behave like native programs
while running in layer otto, under the package's profile. Rootless, as an ordinary
identity; the shim is called exactly as a user would call it, by its name on PATH."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from layershell.exposure import shims
from layershell.frozen import replace
from layershell.packages.state import Installed
from tests.packages import Repository, tarball
from tests.support import IS_ROOT, Identity, python_cmd

PROGRAMS: dict[str, bytes | str] = {
    "bin/echoargs": '#!/bin/sh\nfor a in "$@"; do printf "[%s]\\n" "$a"; done\n',
    "bin/exiter": '#!/bin/sh\nexit "$1"\n',
    "bin/selfkill": '#!/bin/sh\nkill -"$1" $$\n',
    "bin/trapper": '#!/bin/sh\ntrap "echo handled-$1; exit 3" "$1"\necho ready\n'
    "while :; do sleep 0.05; done\n",
    "bin/catter": "#!/bin/sh\nexec cat\n",
    "bin/asker": '#!/bin/sh\nprintf "name? "; read n; echo "hi $n"; test -t 0 && echo tty\n',
    "bin/where": '#!/bin/sh\npwd; echo "$HOME"\n',
    "bin/selfwrite": "#!/bin/sh\ntouch /opt/pkgs/fid/bin/x 2>&1; echo > /opt/pkgs/fid/bin/catter\n",
    "bin/connect": "#!/usr/bin/python3\nimport socket, sys\ntry:\n"
    " s = socket.create_connection(('127.0.0.1', int(sys.argv[1])), 3)\n"
    " print(s.recv(4).decode())\nexcept OSError as e:\n print('no-net', e)\n",
    "bin/peek": '#!/bin/sh\ncat "$1" 2>/dev/null || echo invisible\n',
    "bin/writeto": '#!/bin/sh\n(echo x > "$1") 2>/dev/null && echo wrote || echo denied\n',
}


def core(ident: Identity, *args: str) -> subprocess.CompletedProcess[bytes]:
    return ident.run(python_cmd(*args), timeout=120)


def install(ident: Identity, shared: Path, profile: str, name: str = "fid") -> None:
    config = ident.home / f"{name}-{profile}.yaml"
    repo = Repository(shared / f"repo-{name}-{profile}")
    repo.add(name, "1.0", PROGRAMS)
    repo.index()
    config.write_text(
        f"composable:\n  default_repository: {repo.file_url}\n  packages:\n"
        f"    - name: {name}\n      version: '1.0'\n      profile: {profile}\n"
    )
    config.chmod(0o644)
    r = core(ident, "install", "--config", str(config))
    assert r.returncode == 0, r.stderr.decode()


@pytest.fixture
def shimmed(fresh_rootless: Identity, shared_dir: Path) -> Identity:
    install(fresh_rootless, shared_dir, "default")
    return fresh_rootless


def shim(ident: Identity, name: str) -> str:
    return str(ident.home / ".local/bin" / name)


def test_argv_round_trip(shimmed: Identity) -> None:
    args: list[str | bytes] = ["a b", "", "'q'", '"dq"', "$HOME", "*", "-n", "ünï", b"\xff\xfe"]
    r = subprocess.run(
        shimmed.argv(["echoargs", *args]),  # type: ignore[list-item]
        env=shimmed.env, capture_output=True, check=False, cwd=str(shimmed.home),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    expected = b"".join(b"[" + (a if isinstance(a, bytes) else a.encode()) + b"]\n" for a in args)
    assert r.stdout == expected


@pytest.mark.parametrize("code", [0, 1, 7, 255])
def test_exit_status(shimmed: Identity, code: int) -> None:
    assert shimmed.run(["exiter", str(code)]).returncode == code


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_death_by_signal(shimmed: Identity, sig: signal.Signals) -> None:
    assert shimmed.run(["selfkill", str(int(sig))]).returncode == -sig
    r = shimmed.run(["sh", "-c", f"selfkill {int(sig)}; echo $?"])
    assert r.stdout.decode().strip() == str(128 + sig)


@pytest.mark.parametrize(
    "sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGWINCH, signal.SIGUSR1]
)
def test_signal_to_shim_pid_runs_handler(shimmed: Identity, sig: signal.Signals) -> None:
    name = signal.Signals(sig).name[3:]
    proc = shimmed.popen(["trapper", name], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"
    os.kill(proc.pid, sig)
    rest, _ = proc.communicate(timeout=30)
    assert rest == f"handled-{name}\n".encode()
    assert proc.returncode == 3


def test_ten_megabytes_through_stdin(shimmed: Identity) -> None:
    data = os.urandom(10 * 1024 * 1024)
    r = shimmed.run(["catter"], input=data)
    assert r.returncode == 0
    assert r.stdout == data


def test_pty_prompt(shimmed: Identity) -> None:
    pexpect = pytest.importorskip("pexpect")
    argv = shimmed.argv(["asker"])
    child = pexpect.spawn(argv[0], argv[1:], env=shimmed.env, cwd=str(shimmed.home), timeout=20)
    child.expect_exact("name? ")
    child.sendline("otto")
    child.expect_exact("hi otto")
    child.expect_exact("tty")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_cwd_is_kept(shimmed: Identity, shared_dir: Path) -> None:
    work = shared_dir / "project"
    work.mkdir()
    os.chown(work, shimmed.uid, shimmed.gid)
    r = shimmed.run(["where"], cwd=str(work))
    assert r.stdout.decode().splitlines() == [str(work), str(shimmed.home)]


def test_program_cannot_write_its_package(shimmed: Identity) -> None:
    shimmed.run(["selfwrite"])
    tree = shimmed.home / ".local/share/layershell/pkgs/fid_1.0/bin"
    assert not (tree / "x").exists()
    assert (tree / "catter").read_text() == PROGRAMS["bin/catter"]


def test_shims_carry_a_marker_and_show_in_list(shimmed: Identity) -> None:
    text = Path(shim(shimmed, "echoargs")).read_text()
    assert "# Managed by layershell: shim for echoargs of package fid" in text
    rows = json.loads(core(shimmed, "list", "--json").stdout)
    assert rows[0]["exposes"] == sorted(n.split("/")[1] for n in PROGRAMS)


def test_foreign_file_is_left_alone_and_reported(
    fresh_rootless: Identity, shared_dir: Path
) -> None:
    bin_dir = fresh_rootless.home / ".local/bin"
    foreign = bin_dir / "exiter"
    foreign.write_bytes(b"#!/bin/sh\necho mine\n")
    os.chown(foreign, fresh_rootless.uid, fresh_rootless.gid)
    config = fresh_rootless.home / "c.yaml"
    repo = Repository(shared_dir / "r")
    repo.add("fid", "1.0", PROGRAMS)
    repo.index()
    config.write_text(
        f"composable:\n  default_repository: {repo.file_url}\n  packages:\n"
        "    - name: fid\n      version: '1.0'\n"
    )
    r = core(fresh_rootless, "install", "--config", str(config))
    assert r.returncode == 0
    assert f"{foreign} exists and was not written by layershell: left alone" in r.stderr.decode()
    assert foreign.read_bytes() == b"#!/bin/sh\necho mine\n"
    assert (bin_dir / "echoargs").exists()


def test_remove_and_unexpose_change_only_their_own_shims(
    fresh_rootless: Identity, shared_dir: Path
) -> None:
    install(fresh_rootless, shared_dir, "default")
    other = tarball(shared_dir / "other_2.0.tar.gz", {"bin/othertool": "#!/bin/sh\necho o\n"})
    assert core(fresh_rootless, "install", str(other)).returncode == 0
    bin_dir = fresh_rootless.home / ".local/bin"
    r = core(fresh_rootless, "unexpose", "fid", "--bin", "exiter")
    assert r.returncode == 0, r.stderr.decode()
    assert not (bin_dir / "exiter").exists() and (bin_dir / "echoargs").exists()
    r = core(fresh_rootless, "expose", "fid")
    assert (bin_dir / "exiter").exists()
    assert core(fresh_rootless, "remove", "fid").returncode == 0
    assert not any((bin_dir / n.split("/")[1]).exists() for n in PROGRAMS)
    assert (bin_dir / "othertool").exists()
    assert (bin_dir / "layer-shell").exists()


def test_shadowing_a_host_program_needs_the_manifest(
    fresh_rootless: Identity, shared_dir: Path
) -> None:
    files: dict[str, bytes | str] = {"bin/true": "#!/bin/sh\nexit 0\n", "bin/mine": "x\n"}
    pkg = tarball(shared_dir / "shadow_1.0.tar.gz", files)
    r = core(fresh_rootless, "install", str(pkg))
    assert r.returncode == 0, r.stderr.decode()
    bin_dir = fresh_rootless.home / ".local/bin"
    assert not (bin_dir / "true").exists() and (bin_dir / "mine").exists()
    assert "true: shadow may not shadow the host's /usr/bin/true on PATH" in r.stderr.decode()
    assert "expose_over: [true] for shadow" in r.stderr.decode()
    # The manifest's word: the shim is written, with the old warning.
    repo = Repository(shared_dir / "repo")
    repo.add("shadow", "2.0", files)
    repo.index()
    config = fresh_rootless.home / "over.yaml"
    config.write_text(
        f"composable:\n  default_repository: {repo.file_url}\n  packages:\n"
        "    - name: shadow\n      version: '2.0'\n      expose: ['true', mine]\n"
        "      expose_over: ['true']\n"
    )
    r = core(fresh_rootless, "install", "--config", str(config))
    assert r.returncode == 0, r.stderr.decode()
    assert (bin_dir / "true").exists()
    assert "shadows /usr/bin/true" in r.stderr.decode()
    # A plain reinstall by file is root's (here: the caller's) new word: refused again.
    assert core(fresh_rootless, "install", str(pkg)).returncode == 0
    assert not (bin_dir / "true").exists()


IDENTITY_TOOLS = ["sudo", "sudoedit", "su", "run0", "pkexec", "pkttyagent", "machinectl",
                  "systemd-run", "ksu", "setpriv", "unshare", "nsenter", "chroot", "busctl",
                  "loginctl", "homectl", "userdbctl", "ssh-keygen", "gpg2", "pinentry-tty",
                  "polkit-agent-helper-1", "doas"]  # fmt: skip


@pytest.mark.parametrize("name", IDENTITY_TOOLS)
def test_identity_tools_are_refused_even_with_expose_over(tmp_path: Path, name: str) -> None:
    from layershell.exposure import shims
    from layershell.packages import grants

    policy = grants.Table({}, None).policy(
        Installed("pkg", "1", "arne", "/x", "", "", 0, 0, 0, 0.0, True, {})
    )
    allowed = replace(policy, expose_over=(name,))
    why = shims.refusal(shims.Shim(name, "pkg", "1", "/p", "default"), allowed, str(tmp_path))
    assert why.startswith(f"{name}: pkg may not put a command of that name on PATH")
    assert "asks for passwords or changes identity" in why


def test_a_host_program_is_found_outside_the_shim_directory_only(tmp_path: Path) -> None:
    from layershell.exposure import shims

    assert shims.host_program("ls", str(tmp_path)) in ("/usr/bin/ls", "/bin/ls")
    assert shims.host_program("no-such-program-here", str(tmp_path)) is None
    # The shim directory itself does not count (its own shims, a foreign file there is a
    # collision instead).
    assert shims.host_program("ls", "/usr/bin") in (None, "/bin/ls")


@pytest.mark.parametrize(
    ("profile", "reachable"),
    [("default", True), ("trusted", True), ("nonetwork", False), ("strict", False)],
)
def test_profiles_and_network(
    fresh_rootless: Identity, shared_dir: Path, listener: int, profile: str, reachable: bool
) -> None:
    install(fresh_rootless, shared_dir, profile)
    r = fresh_rootless.run(["connect", str(listener)])
    out = r.stdout.decode().strip()
    assert (out == "pong") is reachable, out + r.stderr.decode()


@pytest.mark.parametrize(
    ("profile", "sees_home", "home_writable"),
    [("trusted", True, True), ("default", True, False), ("strict", False, False)],
)
def test_profiles_and_home(
    fresh_rootless: Identity, shared_dir: Path, profile: str, sees_home: bool, home_writable: bool
) -> None:
    install(fresh_rootless, shared_dir, profile)
    secret = fresh_rootless.home / "secret.txt"
    secret.write_text("s3cret\n")
    os.chown(secret, fresh_rootless.uid, fresh_rootless.gid)
    elsewhere = shared_dir / "elsewhere"  # a cwd outside the home: strict binds the cwd
    elsewhere.mkdir()
    r = fresh_rootless.run(["peek", str(secret)], cwd=str(elsewhere))
    assert (r.stdout.decode() == "s3cret\n") is sees_home, r.stdout
    r = fresh_rootless.run(["writeto", str(fresh_rootless.home / "new")], cwd=str(elsewhere))
    assert r.stdout.decode().strip() == ("wrote" if home_writable else "denied")
    assert (fresh_rootless.home / "new").exists() is home_writable


def test_strict_cwd_is_read_only(fresh_rootless: Identity, shared_dir: Path) -> None:
    install(fresh_rootless, shared_dir, "strict")
    work = shared_dir / "work"
    work.mkdir()
    os.chown(work, fresh_rootless.uid, fresh_rootless.gid)
    r = fresh_rootless.run(["writeto", "here"], cwd=str(work))
    assert r.stdout.decode().strip() == "denied"
    r = fresh_rootless.run(["where"], cwd=str(work))
    assert r.stdout.decode().splitlines()[0] == str(work)


def test_rootless_stores_are_hidden_from_shims(shimmed: Identity) -> None:
    # Even with the caller's home bound, layer 1's store and packages under it are not
    # reachable (the program would be able to write them through the home).
    arne_home = shimmed.home / ".local/share/layershell/layers/arne/home"
    (arne_home / "note").write_text("layer 1 private\n")
    r = shimmed.run(["peek", str(arne_home / "note")])
    assert r.stdout.decode() == "invisible\n"
    pkg_file = shimmed.home / ".local/share/layershell/pkgs/fid_1.0/bin/catter"
    r = shimmed.run(["writeto", str(pkg_file)])
    assert r.stdout.decode().strip() == "denied"
    assert pkg_file.read_text() == PROGRAMS["bin/catter"]


@pytest.mark.skipif(not IS_ROOT, reason="needs root: checks that shims refuse root")
def test_root_cannot_run_a_shim(shimmed: Identity) -> None:
    r = subprocess.run([shim(shimmed, "exiter"), "0"], capture_output=True, check=False)
    assert r.returncode == 1
    assert b"refusing to run a layer program as root" in r.stderr


def test_a_parent_cwd_cannot_uncover_protected_trees(shimmed: Identity) -> None:
    # The caller stands above its home: binding that directory would cover, from above,
    # the mounts that hide layer 1's store and keep ~/.local/bin read-only.
    parent = str(shimmed.home.parent)
    planted = shimmed.home / ".local/bin/planted"
    pkg_file = shimmed.home / ".local/share/layershell/pkgs/fid_1.0/bin/catter"
    for target in (planted, pkg_file, shimmed.home / ".profile"):
        r = shimmed.run(["writeto", str(target)], cwd=parent)
        assert r.stdout.decode().strip() == "denied", (target, r.stderr)
    assert not planted.exists()
    assert pkg_file.read_text() == PROGRAMS["bin/catter"]
    r = shimmed.run(["where"], cwd=parent)
    assert r.stdout.decode().splitlines()[0] == "/"  # not kept: the program starts in /


def test_a_shim_starts_the_executor_itself(shimmed: Identity) -> None:
    """No sh in between: the kernel runs the executor on the shim, which reads the exec
    line; sh, given the same file, runs the same command."""
    path = shim(shimmed, "echoargs")
    executor = shimmed.home / ".local/share/layershell/libexec/layershell-enter"
    assert Path(path).read_text().splitlines()[0] == f"#!{executor} --shim"
    args = ["a b", "", "$HOME", "'q'"]
    direct = shimmed.run([path, *args])
    through_sh = shimmed.run(["sh", path, *args])
    assert direct.returncode == 0, direct.stderr
    assert (direct.stdout, direct.stderr) == (through_sh.stdout, through_sh.stderr)


def test_an_executor_path_hash_bang_cannot_carry_gets_sh(tmp_path: Path) -> None:
    from layershell.layers import stack as stack_module
    from layershell.paths import Paths

    for root, first in ((str(tmp_path), "--shim"), (str(tmp_path / ("x" * 200)), "#!/bin/sh"),
                        (str(tmp_path / "a b"), "#!/bin/sh")):  # fmt: skip
        paths = Paths.system(root)
        layers = stack_module.load(paths)
        text = shims.render(
            paths, layers, shims.Shim("t", "t", "1", "/opt/pkgs/t/bin/t", "default")
        )
        assert text.splitlines()[0].endswith(first), root


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ('exec {x} --name t $(touch {pwn}) -- /bin/true "$@"', "not a line core expose wrote"),
        ('exec {x} --name t `touch {pwn}` -- /bin/true "$@"', "not a line core expose wrote"),
        ('exec {x} --name t "$(touch {pwn})" -- /bin/true "$@"', "not a line core expose wrote"),
        ("exec {x} --name t -- /bin/true; touch {pwn}", "not a line core expose wrote"),
        ("exec {x} --name t -- /bin/true", "does not end in"),
        ('exec {x} --name \'t -- /bin/true "$@"', "unterminated quote"),
        ('exec /bin/sh -c "touch {pwn}" "$@"', "written for /bin/sh"),
        ('exec /usr/bin/touch {pwn} "$@"', "written for /usr/bin/touch"),
        ("echo no exec line here", "no exec line"),
    ],
)
def test_a_hostile_shim_line_is_refused(
    rootless: Identity, shared_dir: Path, tmp_path: Path, line: str, why: str
) -> None:
    executor = rootless.home / ".local/share/layershell/libexec/layershell-enter"
    pwn = shared_dir / f"pwned-{abs(hash(line))}"
    bad = shared_dir / f"bad-shim-{abs(hash(line))}"
    bad.write_text(f"#!{executor} --shim\n# x\n" + line.format(x=executor, pwn=pwn) + "\n")
    bad.chmod(0o755)
    r = rootless.run([str(bad)])
    assert r.returncode == 2, r.stderr
    assert why in r.stderr.decode(), r.stderr
    assert not pwn.exists()


def test_a_shim_that_is_no_regular_file_is_refused(rootless: Identity, shared_dir: Path) -> None:
    executor = rootless.home / ".local/share/layershell/libexec/layershell-enter"
    fifo = shared_dir / "shim-fifo"
    os.mkfifo(fifo, 0o666)
    try:
        r = rootless.run([str(executor), "--shim", str(fifo)], timeout=20)  # no hang
        assert r.returncode == 2 and b"not a regular file" in r.stderr, r.stderr
    finally:
        fifo.unlink()


def test_a_shim_line_with_runs_of_blanks_splits_as_sh_splits(
    shimmed: Identity, shared_dir: Path
) -> None:
    text = Path(shim(shimmed, "echoargs")).read_text()
    first, marker, line = text.splitlines()
    spaced = shared_dir / "echoargs-spaced"
    spaced.write_text(
        f"{first}\n{marker}\n" + line.replace(" ", "   ").replace("exec   ", "exec  ") + "\n"
    )
    spaced.chmod(0o755)
    direct = shimmed.run([str(spaced), "x", "y"])
    assert direct.returncode == 0, direct.stderr
    assert direct.stdout == shimmed.run(["sh", str(spaced), "x", "y"]).stdout
