"""Root hands a layer to its account: `core shell --layer NAME` (and `layer-shell` run
as root). Like su: a PAM session is opened as root, a child drops to the account and
starts `layer-shell` as it, the parent waits, forwards TERM and HUP, and closes the
session when the child is gone. Nothing of the layer ever runs as host root, and
nothing of it gets root's terminal: the child runs in a session of its own, on a pty
root's process relays when stdin is a terminal (terminal.py; `su --pty` does the same).
"""

from __future__ import annotations

import os
import pwd
import signal

from layershell.errors import LayershellError, PermissionRefused
from layershell.layers import launch, pam, terminal
from layershell.layers.launch import LOGIN_KEEP, Request
from layershell.layers.model import Layer, LayerStack
from layershell.paths import SYSTEM, Paths

FORWARDED = (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT,
             signal.SIGQUIT)  # fmt: skip


def account(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise LayershellError(
            f"account {name!r} does not exist",
            "create the layer accounts with: core init --create-users",
        ) from None


def child_env(paths: Paths, pw: pwd.struct_passwd, pam_env: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in launch.caller_environment().items()
           if k in LOGIN_KEEP or k.startswith("LC_")}  # fmt: skip
    env.update(pam_env)
    env.update(HOME=pw.pw_dir, USER=pw.pw_name, LOGNAME=pw.pw_name, SHELL=pw.pw_shell)
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
    # The account must find the same stack root: the handed-over layer-shell runs as it.
    if paths.root != "/":
        env["LAYERSHELL_ROOT"] = paths.root
    env["LAYERSHELL_MODE"] = SYSTEM
    return env


def wait_status(status: int) -> int:
    """Exit status as a shell reports it: 128+N for death by signal N."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def run(paths: Paths, stack: LayerStack, layer: Layer, request: Request) -> int:
    if os.getuid() != 0:
        raise PermissionRefused(
            "core shell needs root to open a session for a layer account",
            f"run it with sudo: sudo core shell --layer {layer.name}",
        )
    if paths.mode != SYSTEM:
        raise LayershellError("core shell works in system mode only")
    if layer.level == 0:  # the host itself: root's own shell, as layer-shell runs it
        program, argv = launch.program_argv(layer, request)
        os.execvp(program, argv)
    pw = account(layer.account)
    if pw.pw_uid == 0:
        raise PermissionRefused(
            f"layer {layer.name}'s account {layer.account} is root",
            "a layer above core needs an ordinary account; fix layers.yaml",
        )
    with pam.session(pw.pw_name) as pam_env:
        child_argv = launch.layer_shell_argv(layer.name, request)
        env = child_env(paths, pw, pam_env)
        pty = terminal.prepare()
        pid = os.fork()
        if pid == 0:  # child: become the account, then start layer-shell as it
            try:
                terminal.child_side(pty)
                os.initgroups(pw.pw_name, pw.pw_gid)
                os.setgid(pw.pw_gid)
                os.setuid(pw.pw_uid)
                try:
                    os.chdir(pw.pw_dir)
                except OSError:
                    os.chdir("/")
                os.execve(child_argv[0], child_argv, env)
            except BaseException as exc:  # never return into the parent's code as a child
                os.write(2, f"core shell: cannot start the session: {exc}\n".encode())
            finally:
                os._exit(127)
        # Parent: the child is not in root's foreground process group any more (keys
        # reach it through its own pty), so every signal root's process gets that
        # should end or tell the session is passed on, INT and QUIT too.
        for sig in FORWARDED:
            signal.signal(sig, lambda signum, _frame: os.kill(pid, signum))
        status = terminal.relay(pty, pid) if pty else terminal.wait(pid)
        for sig in FORWARDED:
            signal.signal(sig, signal.SIG_DFL)
    return wait_status(status)
