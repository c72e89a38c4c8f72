"""layer-shell behaves like the program it runs: status, signals, stdio, TTY, cwd, argv.

Rootless mode, as an ordinary identity (uid 65534 with a private HOME when run as root).
Every test runs twice: through the launcher core init writes (the fast path wherever it
decides, launcher.c) and through a copy of it that always takes the Python path.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from pathlib import Path

import pytest

from tests.support import Identity, launcher_variant


@pytest.fixture(params=["launcher", "python"])
def rootless(request: pytest.FixtureRequest, rootless: Identity) -> Identity:
    if request.param == "launcher":
        return rootless
    variant = Path(rootless.layer_shell).with_name("layer-shell-python")
    if not variant.exists():
        launcher_variant(Path(rootless.layer_shell), variant.name, fast="")
    return dataclasses.replace(rootless, launcher=variant.name)


def test_exit_status_passes_through(rootless: Identity) -> None:
    r = rootless.run([rootless.layer_shell, "-c", "exit 7"])
    assert r.returncode == 7, r.stderr


def test_death_by_signal_is_128_plus_n(rootless: Identity) -> None:
    # layer-shell has become the program, so it dies of the very signal, exactly as
    # `sh -c 'kill -TERM $$'` does, and a calling shell reports 128+15.
    r = rootless.run(["sh", "-c", f"{rootless.layer_shell} -c 'kill -TERM $$'; echo $?"])
    assert r.stdout == b"143\n"
    r = rootless.run([rootless.layer_shell, "-c", "kill -TERM $$"])
    assert r.returncode == -signal.SIGTERM


@pytest.mark.parametrize("layer", ["arne", "otto"])
def test_program_keeps_layer_shell_pid(rootless: Identity, layer: str) -> None:
    proc = rootless.popen(
        [rootless.layer_shell, "--layer", layer, "--", "sh", "-c", "echo $$"],
        stdout=__import__("subprocess").PIPE,
    )
    stdout, _ = proc.communicate(timeout=30)
    # The shell's pid inside is the one we started (same pid namespace, no monitor).
    assert int(stdout) == proc.pid


@pytest.mark.parametrize(
    ("sig", "name"), [(signal.SIGTERM, "TERM"), (signal.SIGINT, "INT"), (signal.SIGHUP, "HUP")]
)
def test_signal_to_layer_shell_runs_programs_handler(
    rootless: Identity, sig: signal.Signals, name: str
) -> None:
    import subprocess

    script = f'trap "echo trapped-{name}; exit 3" {name}; echo ready; while :; do sleep 0.05; done'
    proc = rootless.popen(
        [rootless.layer_shell, "--layer", "otto", "-c", script], stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"
    os.kill(proc.pid, sig)
    rest, _ = proc.communicate(timeout=30)
    assert rest == f"trapped-{name}\n".encode()
    assert proc.returncode == 3


def test_argv_round_trip(rootless: Identity) -> None:
    args = ["a b", "", "'q'", '"dq"', "$HOME", "*", "\\n", "ünï"]
    r = rootless.run([rootless.layer_shell, "--layer", "otto", "--", "printf", "[%s]\\n", *args])
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().splitlines() == [f"[{a}]" for a in args]


def test_sh_c_positional_arguments(rootless: Identity) -> None:
    r = rootless.run([rootless.layer_shell, "-c", 'echo "$0|$1|$2"', "zero", "one", "two words"])
    assert r.stdout == b"zero|one|two words\n"


def test_stdin_and_stdout_pass_through(rootless: Identity) -> None:
    data = os.urandom(4 * 1024 * 1024)
    r = rootless.run([rootless.layer_shell, "--layer", "otto", "--", "cat"], input=data)
    assert r.returncode == 0
    assert r.stdout == data


def test_stderr_passes_through(rootless: Identity) -> None:
    r = rootless.run([rootless.layer_shell, "-c", "echo oops >&2; exit 1"])
    assert (r.returncode, r.stdout, r.stderr) == (1, b"", b"oops\n")


def test_interactive_prompt_under_pty(rootless: Identity) -> None:
    pexpect = pytest.importorskip("pexpect")
    child = pexpect.spawn(
        rootless.argv([rootless.layer_shell, "--layer", "otto", "-c",
                       'printf "name? "; read n; echo "hello $n"; test -t 0 && echo tty'])[0],
        rootless.argv([rootless.layer_shell, "--layer", "otto", "-c",
                       'printf "name? "; read n; echo "hello $n"; test -t 0 && echo tty'])[1:],
        env=rootless.env,
        cwd=str(rootless.home),
        timeout=20,
    )  # fmt: skip
    child.expect_exact("name? ")
    child.sendline("layer")
    child.expect_exact("hello layer")
    child.expect_exact("tty")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_interactive_shell_with_job_control(rootless: Identity) -> None:
    pexpect = pytest.importorskip("pexpect")
    argv = rootless.argv([rootless.layer_shell, "--layer", "arne"])
    env = {**rootless.env, "PS1": "PROMPT> ", "TERM": "dumb"}
    child = pexpect.spawn(argv[0], argv[1:], env=env, cwd=str(rootless.home), timeout=20)
    child.sendline("export PS1='PROMPT> '; set -m; id -u")
    child.expect_exact("\r\n0\r\n")
    child.sendline("sleep 30")
    time.sleep(0.5)
    child.sendcontrol("z")  # stop the foreground job; the shell must take the terminal back
    child.expect("Stopped")
    # wait reaps it: an exit while bash still counts it stopped is refused ("There are
    # stopped jobs"), which raced with bash noticing the kill.
    child.sendline("kill %1; wait %1; echo jobs-ok")
    child.expect_exact("jobs-ok")
    child.sendline("exit 5")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 5


def test_cwd_is_kept_when_visible(rootless: Identity) -> None:
    home = rootless.home / ".local/share/layershell/layers/arne/home"
    sub = home / "work"
    r = rootless.run([rootless.layer_shell, "-c", f"mkdir -p {sub}"])
    assert r.returncode == 0, r.stderr
    r = rootless.run([rootless.layer_shell, "--", "pwd"], cwd=str(sub))
    assert r.stdout.decode().strip() == str(sub)


def test_cwd_falls_back_to_home_when_not_visible(rootless: Identity) -> None:
    # The caller's real home is not part of layer otto (only otto's own store home is).
    r = rootless.run([rootless.layer_shell, "--layer", "otto", "--", "pwd"], cwd=str(rootless.home))
    assert r.stdout.decode().strip() == str(
        rootless.home / ".local/share/layershell/layers/otto/home"
    )


def test_layer1_is_pseudo_root_and_core_is_read_only(rootless: Identity) -> None:
    r = rootless.run(
        [rootless.layer_shell, "-c",
         "id -u; touch /usr/bin/x 2>/dev/null || echo usr-ro;"
         " touch /etc/x 2>/dev/null || echo etc-ro;"
         " cat /etc/shadow >/dev/null 2>&1 || echo shadow-denied;"
         " touch /opt/pkgs/p && echo pkgs-rw"]
    )  # fmt: skip
    assert r.stdout.decode().split() == ["0", "usr-ro", "etc-ro", "shadow-denied", "pkgs-rw"]
    assert (rootless.home / ".local/share/layershell/pkgs/p").stat().st_uid == rootless.uid


def test_layer2_cannot_write_layer1_and_has_no_caps(rootless: Identity) -> None:
    r = rootless.run(
        [rootless.layer_shell, "--layer", "otto", "-c",
         "id -u; touch /opt/pkgs/q 2>/dev/null || echo pkgs-ro; "
         "grep -E '^(CapEff|NoNewPrivs)' /proc/self/status"]
    )  # fmt: skip
    lines = r.stdout.decode().split("\n")
    assert lines[0] == str(rootless.uid)
    assert lines[1] == "pkgs-ro"
    assert lines[2].split() == ["CapEff:", "0000000000000000"]
    assert lines[3].split() == ["NoNewPrivs:", "1"]


def test_layer2_cannot_see_layer1_home_or_callers_home(rootless: Identity) -> None:
    secret = rootless.home / "secret.txt"
    r = rootless.run([rootless.layer_shell, "-c", "echo s > ~/arne-secret"])
    assert r.returncode == 0
    secret.write_text("host secret")
    try:
        r = rootless.run(
            [rootless.layer_shell, "--layer", "otto", "-c",
             f"cat {secret} 2>/dev/null || echo no-host-home; "
             f"ls {rootless.home}/.local/share/layershell/layers/arne/home 2>/dev/null "
             "|| echo no-arne-home"]
        )  # fmt: skip
        assert r.stdout.decode().split() == ["no-host-home", "no-arne-home"]
    finally:
        secret.unlink()


@pytest.mark.parametrize(("network", "expect"), [(True, "pong"), (False, "no-net")])
def test_network_setting(rootless: Identity, listener: int, network: bool, expect: str) -> None:
    config = rootless.home / ".config/layershell/layers.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(
        "layers:\n  - {name: core, account: me}\n"
        "  - {name: arne, account: a, parent: core, writable: {/opt/pkgs: '{pkgs}'}}\n"
        f"  - {{name: otto, account: o, parent: arne, network: {str(network).lower()}}}\n"
    )
    os.chmod(config, 0o644)
    try:
        # The first call after an edit compiles the stack again (and the fast path's file).
        rootless.run([rootless.layer_shell, "--layer", "otto", "--", "true"])
        r = rootless.run(
            [rootless.layer_shell, "--layer", "otto", "--", "python3", "-c",
             "import socket\ntry:\n"
             f" s=socket.create_connection(('127.0.0.1', {listener}), 3)\n"
             " print(s.recv(4).decode())\nexcept OSError:\n print('no-net')"]
        )  # fmt: skip
        assert r.stdout.decode().strip() == expect, r.stderr
    finally:
        config.unlink()


def test_bad_layers_yaml_is_reported_with_position(rootless: Identity) -> None:
    config = rootless.home / ".config/layershell/layers.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text("layers:\n  - name: core\n    acount: me\n")
    os.chmod(config, 0o644)
    try:
        r = rootless.run([rootless.layer_shell, "-c", "true"])
        assert r.returncode == 2
        lines = r.stderr.decode().splitlines()
        assert f"{config}:3:5: layers.0.acount: unknown key (did you mean 'account'?)" in lines
        r = rootless.run(["python3", "-c", "print()"])  # the identity itself is fine
        assert r.returncode == 0
    finally:
        config.unlink()


def test_unknown_layer_and_usage_errors(rootless: Identity) -> None:
    r = rootless.run([rootless.layer_shell, "--layer", "nope", "--", "true"])
    assert r.returncode == 2
    assert "no layer named 'nope'" in r.stderr.decode()
    r = rootless.run([rootless.layer_shell, "--bogus"])
    assert r.returncode == 2
    r = rootless.run([rootless.layer_shell, "--", "no-such-program-xyz"])
    assert r.returncode == 127
    assert "command not found in layer arne" in r.stderr.decode()


def test_login_shell_by_argv0(rootless: Identity) -> None:
    # argv[0] "-layer-shell" is how login(1), su - and sshd start a login shell.
    r = rootless.run(
        ["python3", "-c",
         f"import os; os.execv({rootless.layer_shell!r}, ['-layer-shell', '-c', "
         "'shopt -q login_shell && echo login; echo $LAYERSHELL_LAYER; pwd'])"],
        env={"LAYERSHELL_SECRET": "x"},
    )  # fmt: skip
    lines = r.stdout.decode().split()
    assert lines[:2] == ["login", "arne"], r.stderr
    assert lines[2].endswith("layers/arne/home")


def test_help_and_completion(rootless: Identity) -> None:
    r = rootless.run([rootless.layer_shell, "--help"])
    assert r.returncode == 0
    assert "Enter a layer" in r.stdout.decode()
    r = rootless.run(
        [rootless.layer_shell],
        env={"_LAYER_SHELL_COMPLETE": "bash_complete", "COMP_WORDS": "layer-shell --layer o",
             "COMP_CWORD": "2"},
    )  # fmt: skip
    assert r.returncode == 0
    assert "plain,otto" in r.stdout.decode().splitlines()
