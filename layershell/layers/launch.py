"""What runs when a layer is entered: the program, its argv, its environment, its home.

`layer-shell` follows sh: `-c CMD [ARG0 [ARGS]]`, `-l` (or an argv[0] starting with
"-") for a login shell, `-- PROG ARGS` to run a program directly, nothing for an
interactive shell. A login session starts from a clean environment, like login(1);
otherwise the caller's environment passes through with the layer's identity on top.

On the `layer-shell` hot path: imports only os.
"""

from __future__ import annotations

import os

from layershell.layers import sandbox
from layershell.layers.model import Layer, LayerStack
from layershell.paths import ROOTLESS, Paths

# Kept in a login session, and by a shim (docs/layers.md, "Environment").
LOGIN_KEEP = ("TERM", "COLORTERM", "NO_COLOR", "LANG", "LANGUAGE", "TZ",
              "SSH_CONNECTION", "SSH_CLIENT", "SSH_TTY")  # fmt: skip
# Dropped from a passed-through environment: they name host paths the layer cannot see.
DROP = ("TMPDIR", "XDG_RUNTIME_DIR", "DBUS_SESSION_BUS_ADDRESS", "LAYERSHELL_ROOT",
        "LAYERSHELL_MODE", "OLDPWD")  # fmt: skip


class Request:
    """What the caller asked for: a command string, a program, or an interactive shell."""

    __slots__ = ("command", "command_args", "login", "program", "writable_only")

    def __init__(
        self,
        command: str | None = None,
        command_args: tuple[str, ...] = (),
        program: tuple[str, ...] = (),
        login: bool = False,
        writable_only: str = "",
    ) -> None:
        self.command = command
        self.command_args = command_args
        self.program = program
        self.login = login
        # A directory inside one of the layer's writable trees (as the layer sees it):
        # the only place the program may write; the rest of the layer read-only. What an
        # install.sh gets: its own package directory, not the other packages, /usr/local
        # or the layer's home, where it could plant code others then run.
        self.writable_only = writable_only


def caller_environment() -> dict[str, str]:
    """The environment this process was started with, as a native program gets it: without
    the LC_CTYPE=C.UTF-8 Python sets itself when the locale is C (PEP 538), and without a
    variable of no name, which exec cannot pass on. The fast path (launcher.c) starts no
    Python and so never saw either."""
    env = {k: v for k, v in os.environ.items() if k}
    if "LC_CTYPE" in env:
        try:
            with open("/proc/self/environ", "rb") as f:
                given = f.read(1 << 20).split(b"\0")
        except OSError:
            return env
        first = [x for x in given if x.startswith(b"LC_CTYPE=")][:1]
        if not first:
            del env["LC_CTYPE"]
        else:
            env["LC_CTYPE"] = os.fsdecode(first[0][len(b"LC_CTYPE=") :])
    return env


def this_python(call: str) -> list[str]:
    """argv running `call` (Python) through this very interpreter with this process's
    sys.path, so another account's process (after a handover, an install.sh run) finds
    the same layershell whatever its PATH and before any launcher exists."""
    import sys

    code = f"import sys; sys.path[:0] = {[p for p in sys.path if p]!r}; {call}"
    return [sys.executable, "-I", "-S", "-c", code]


def layer_shell_argv(layer: str, request: Request) -> list[str]:
    """A `layer-shell` command line for another process."""
    args = this_python(
        "from layershell.layers.main import main; main(['layer-shell', *sys.argv[1:]])"
    )
    args += ["--layer", layer]
    if request.writable_only:
        args += ["--writable-only", request.writable_only]
    if request.login:
        args.append("-l")
    if request.command is not None:
        args += ["-c", request.command, *request.command_args]
    elif request.program:
        args += ["--", *request.program]
    return args


def shell_for(layer: Layer) -> str:
    return layer.shell if os.path.exists(layer.shell) else "/bin/sh"


def program_argv(layer: Layer, request: Request) -> tuple[str, tuple[str, ...]]:
    """(program to exec, its argv)."""
    if request.program:
        return request.program[0], request.program
    shell = shell_for(layer)
    arg0 = ("-" + os.path.basename(shell)) if request.login else shell
    if request.command is not None:
        return shell, (arg0, "-c", request.command, *request.command_args)
    return shell, (arg0,)


def home_of(layer: Layer, paths: Paths, passwd_home: str) -> str:
    """A layer's home: its template, else (rootless) its store, else the account's."""
    template = layer.home
    if not template and paths.mode == ROOTLESS:
        template = "{store}/home"
    if not template:
        return passwd_home
    return sandbox.expand(template, paths.store(layer.name), paths.pkgs_dir, paths.state_dir)


def environment(
    layer: Layer,
    request: Request,
    *,
    home: str,
    user: str,
    shell: str,
    base: dict[str, str],
) -> dict[str, str]:
    if request.login:
        env = {k: v for k, v in base.items() if k in LOGIN_KEEP or k.startswith("LC_")}
    else:
        env = {k: v for k, v in base.items() if k not in DROP}
    env.update(
        HOME=home,
        USER=user,
        LOGNAME=user,
        SHELL=shell,
        PATH=sandbox.LAYER_PATH,
        LAYERSHELL_LAYER=layer.name,
    )
    return env


def host_dirs(stack: LayerStack, layer: Layer, paths: Paths, home: str) -> list[str]:
    """The host directories entering `layer` binds: its stack's trees and its home."""
    dirs = [paths.view(layer.name)]
    for x in (*stack.ancestors(layer), layer):
        store = paths.store(x.name)
        dirs += [sandbox.expand(t, store, paths.pkgs_dir, paths.state_dir) for _, t in x.writable]
    dirs.append(home)
    return dirs


def ensure_rootless_dirs(dirs: list[str]) -> None:
    """Rootless mode creates what it needs on first use, as toolbox does."""
    for d in dirs:
        os.makedirs(d, mode=0o755, exist_ok=True)


def writable_only(
    mounts: list[sandbox.Mount], layer: Layer, paths: Paths, inner: str
) -> list[sandbox.Mount]:
    """`mounts` with every read-write bind made read-only, and `inner` (a directory
    below one of the layer's writable trees, as the layer sees it) bound read-write."""
    from layershell.errors import SandboxError

    inner = os.path.normpath(inner)
    store = paths.store(layer.name)
    for dest, template in layer.writable:
        top = dest.rstrip("/") + "/"
        if inner.startswith(top) and ".." not in inner.split("/"):
            host = sandbox.expand(template, store, paths.pkgs_dir, paths.state_dir)
            source = host
            # Each component a directory, never a link: the executor binds the source as
            # the host resolves it, so a link planted in the tree (/opt/pkgs/x -> /tmp)
            # would bind a host directory read-write into the view.
            for part in inner[len(top) :].split("/"):
                source = os.path.join(source, part)
                try:
                    mode = os.lstat(source).st_mode
                except OSError as exc:
                    raise SandboxError(f"--writable-only {inner}: {exc.strerror}") from None
                if mode & 0o170000 != 0o040000:  # S_ISDIR without importing stat
                    raise SandboxError(f"--writable-only {inner}: not a directory (a link?)")
            ro = [(sandbox.RO_BIND, *m[1:]) if m[0] == sandbox.BIND else m for m in mounts]
            return [*ro, (sandbox.BIND, inner, source, 0)]
    raise SandboxError(
        f"--writable-only {inner}: not a directory below a writable tree of layer {layer.name}"
    )


def spec_for(
    stack: LayerStack,
    layer: Layer,
    paths: Paths,
    request: Request,
    *,
    user: str,
    passwd_home: str,
    cwd: str,
    base_env: dict[str, str],
) -> sandbox.Spec:
    home = home_of(layer, paths, passwd_home)
    if paths.mode == ROOTLESS:
        ensure_rootless_dirs(host_dirs(stack, layer, paths, home))
    chain = tuple((x.name, x.writable) for x in (*stack.ancestors(layer), layer))
    mounts = sandbox.layer_mounts(chain, home, paths.stores_dir, paths.pkgs_dir, paths.state_dir)
    if request.writable_only:
        mounts = writable_only(mounts, layer, paths, request.writable_only)
    program, argv = program_argv(layer, request)
    env = environment(layer, request, home=home, user=user, shell=shell_for(layer), base=base_env)
    return sandbox.Spec(
        layer=layer.name,
        view=paths.view(layer.name),
        mounts=tuple(mounts),
        pseudo_root=layer.level == 1,
        network=layer.network,
        cwd=cwd,
        home=home,
        program=program,
        argv0=argv[0] if argv[0] != program else "",
        args=argv[1:],
        env=env,
        # An interactive shell runs jobs: it must set the terminal's foreground group.
        # `-c ''` is a command, not one (launcher.c agrees): no job control for it.
        job_control=request.command is None and not request.program,
    )
