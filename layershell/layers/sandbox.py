"""Turn a layer into a sandbox specification, and run it: the only module that knows
what a layer's namespaces and mounts are.

A spec is carried out by `layershell-enter` (layershell/layers/enter.c, built with
layershell, installed by `core init`), a small executor that does in C exactly what
the spec says and then execs the program in place. `layer-shell` builds a spec per
call and execs the executor (or the launcher does, from fast.py's file); a shim is a
spec rendered once, at expose time, into a script the executor reads (shims.py). The
steps and the reasons for them are in docs/design.md, "Entering a layer".

On the `layer-shell` hot path: imports only os and _signal.
"""

from __future__ import annotations

import os

from layershell.errors import SandboxError

LAYER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HELPER = "layershell-enter"

# What never passes from a caller into a layer's program, under any profile (the
# `default`, `nonetwork` and `trusted` shims pass everything else; docs/exposure.md,
# "Environment"): what changes what the loader loads or an interpreter runs before the
# program's own code. glibc's list of variables it removes for secure-execution
# programs (elf/dl-unsecvars.h, all LD_* and MALLOC_* with it) but TMPDIR, which a
# native program follows and which loads nothing; the interpreters' own; layershell's.
DENY_ENV = (
    "GCONV_PATH", "GETCONF_DIR", "GLIBC_TUNABLES", "HOSTALIASES", "LOCALDOMAIN", "LOCPATH",
    "NIS_PATH", "NLSPATH", "RESOLV_HOST_CONF", "RES_OPTIONS", "TZDIR",
    "BASH_ENV", "ENV", "SHELLOPTS", "BASHOPTS", "PS4",
    "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE", "PYTHONEXECUTABLE",
    "PYTHONPLATLIBDIR", "PYTHONBREAKPOINT", "PYTHONINSPECT",
    "PERL5LIB", "PERLLIB", "PERL5OPT", "PERL5DB", "RUBYLIB", "RUBYOPT",
    "NODE_OPTIONS", "NODE_PATH", "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "JDK_JAVA_OPTIONS",
    "LUA_INIT", "LUA_PATH", "LUA_CPATH", "TCLLIBPATH", "CLASSPATH", "GEM_PATH", "GEM_HOME",
    "PYTHONPYCACHEPREFIX",
    # libraries' plugin paths: what they name is loaded into the program
    "OPENSSL_CONF", "OPENSSL_ENGINES", "OPENSSL_MODULES", "GTK_MODULES", "GTK_PATH",
    "GIO_EXTRA_MODULES", "GIO_MODULE_DIR", "QT_PLUGIN_PATH", "QT_QPA_PLATFORM_PLUGIN_PATH",
    "GST_PLUGIN_PATH", "GST_PLUGIN_SYSTEM_PATH", "LIBGL_DRIVERS_PATH", "SASL_PATH",
)  # fmt: skip
DENY_PREFIXES = ("LD_", "MALLOC_", "BASH_FUNC_", "LUA_INIT_", "LAYERSHELL_")


def denied_env(name: str) -> bool:
    """Whether `name` is one DENY_ENV or DENY_PREFIXES keeps from every layer program."""
    return name in DENY_ENV or name.startswith(DENY_PREFIXES)


# Kinds of mount operations, as the executor's options name them.
RO_BIND, BIND, RBIND, RO_RBIND, TMPFS, DIR, SYMLINK = (
    "ro-bind", "bind", "rbind", "ro-rbind", "tmpfs", "dir", "symlink"
)  # fmt: skip
BIND_HOME = "bind-home"  # the caller's $HOME, resolved when the program starts
BIND_XDG = "bind-xdg"  # a program's own XDG directories in a read-only home (source: name)
BIND_WRITABLE = "bind-writable"  # a path of the home writable (source: relative to it)
DEV = "dev"  # a /dev of the program's own: its own devpts, none of the caller's terminals

Mount = tuple[str, str, str, int]  # (kind, destination in the view, source, mode)

# The fetching account's logins (fetch/credentials.py reads them), relative to its home: hidden
# wherever that home is bound into a layer, so package code running as the account
# (install.sh, programs in layer 1) never reads them.
CREDENTIAL_FILES = (".config/layershell/credentials", ".netrc")


class Spec:
    """Everything needed to enter a layer. Immutable.

    mounts: in order, parents first. cwd: the directory to start in if the view shows
    it ("" = the caller's cwd when the program starts). env: the whole environment, or
    None to build it when the program starts (shims): with keep_all, the caller's less
    deny_env/deny_prefixes, else only keep_env/keep_prefixes; then set_env; and with
    layer_path, PATH is it followed by the caller's entries the view has.
    """

    __slots__ = (
        "args", "argv0", "bind_cwd", "cwd", "cwd_deny", "deny_env", "deny_prefixes", "env",
        "home", "job_control", "keep_all", "keep_env", "keep_prefixes", "layer", "layer_path",
        "mounts", "network", "program", "pseudo_root", "refuse_root", "set_env", "view",
    )  # fmt: skip

    layer: str
    view: str
    mounts: tuple[Mount, ...]
    pseudo_root: bool
    network: bool
    cwd: str
    home: str
    bind_cwd: str  # "" | "ro" | "rw"
    cwd_deny: tuple[str, ...]
    program: str
    argv0: str
    args: tuple[str | bytes, ...]
    env: dict[str, str] | None
    keep_all: bool
    keep_env: tuple[str, ...]
    keep_prefixes: tuple[str, ...]
    deny_env: tuple[str, ...]
    deny_prefixes: tuple[str, ...]
    set_env: tuple[tuple[str, str], ...]
    layer_path: str
    refuse_root: bool
    job_control: bool  # may set the terminal's foreground group (an interactive shell)

    def __init__(self, **fields: object) -> None:
        defaults: dict[str, object] = {
            "cwd": "", "bind_cwd": "", "cwd_deny": (), "argv0": "", "env": None,
            "keep_env": (), "keep_prefixes": (), "set_env": (), "refuse_root": False,
            "home": "", "job_control": False, "keep_all": False, "deny_env": (),
            "deny_prefixes": (), "layer_path": "",
        }  # fmt: skip
        for key in self.__slots__:
            object.__setattr__(self, key, fields[key] if key in fields else defaults[key])

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Spec is immutable")

    def __repr__(self) -> str:
        return f"Spec(layer={self.layer!r}, program={self.program!r}, network={self.network})"


def expand(template: str, store: str, pkgs: str, state: str) -> str:
    return os.path.normpath(
        template.replace("{store}", store).replace("{pkgs}", pkgs).replace("{state}", state)
    )


TOP_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")  # a link into /usr, or not


def base_mounts() -> list[Mount]:
    """Core's read-only view: /usr and /etc, the merged-/usr links, /dev, /proc, /sys,
    and private /tmp, /run, /var."""
    mounts: list[Mount] = [(RO_BIND, "/usr", "/usr", 0)]
    for name in TOP_DIRS:
        path = "/" + name
        if os.path.islink(path):
            mounts.append((SYMLINK, path, os.readlink(path), 0))
        elif os.path.isdir(path):
            mounts.append((RO_BIND, path, path, 0))
    mounts += [
        (RO_BIND, "/etc", "/etc", 0),
        (RBIND, "/dev", "/dev", 0),
        # The host's /dev/shm is the host's RAM, shared with every account, and not
        # nosuid everywhere: a layer gets its own.
        (TMPFS, "/dev/shm", "", 0o1777),
        (RBIND, "/proc", "/proc", 0),
        (RO_RBIND, "/sys", "/sys", 0),
        (TMPFS, "/tmp", "", 0o1777),
        (TMPFS, "/run", "", 0o755),
        (TMPFS, "/var", "", 0o755),
        (DIR, "/var/tmp", "", 0o1777),
    ]
    return mounts


def own_dev(mounts: list[Mount]) -> list[Mount]:
    """`mounts` with the host's /dev replaced by one of the program's own (strict),
    which has its own /dev/shm."""
    return [
        (DEV, "/dev", "", 0) if m[:2] == (RBIND, "/dev") else m
        for m in mounts
        if m[:2] != (TMPFS, "/dev/shm")
    ]


def shared_tmp(mounts: list[Mount]) -> list[Mount]:
    """`mounts` with the caller's /tmp (read-write, nosuid, nodev) for the private one,
    as a native program shares it (the shims of every profile but strict)."""
    return [(BIND, "/tmp", "/tmp", 0) if m[:2] == (TMPFS, "/tmp") else m for m in mounts]


def _depth(mount: Mount) -> int:
    return mount[1].rstrip("/").count("/")


def layer_mounts(
    layers: tuple[tuple[str, tuple[tuple[str, str], ...]], ...],
    home: str,
    stores_dir: str,
    pkgs: str,
    state: str,
    *,
    own_writable: bool = True,
    every_mask: bool = False,
) -> list[Mount]:
    """Mounts for the layer stack above core. `layers` lists (name, writable) from level
    1 up to the layer being entered: lower layers read-only, the last one read-write
    (unless own_writable is False: a shim's layer 2 gets nothing of its own). With
    every_mask, every credentials file is masked whether it exists or not (the fast path's
    compiled file, which checks each when the program starts)."""
    mounts = base_mounts()
    for i, (name, writable) in enumerate(layers):
        own = own_writable and i == len(layers) - 1
        store = os.path.join(stores_dir, name)
        for inner, template in writable:
            mounts.append(
                (BIND if own else RO_BIND, inner, expand(template, store, pkgs, state), 0)
            )
    if home:
        mounts.append((BIND, home, home, 0))
        mounts += credential_masks(home, only_present=not every_mask)
    # Parents before children: /usr before /usr/local, /var before /var/lib/... (stable)
    mounts.sort(key=_depth)
    return mounts


def credential_masks(home: str, *, only_present: bool = True) -> list[Mount]:
    """/dev/null bound read-only (nodev: it cannot even be opened) over each credentials
    file in `home`. Only a regular file is masked: a missing one gets no mount point
    created in the host's home, and fetch refuses a link anyway."""
    masks: list[Mount] = []
    for name in CREDENTIAL_FILES:
        path = os.path.join(home, name)
        if not only_present:
            masks.append((RO_BIND, path, "/dev/null", 0))
            continue
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            continue
        if mode & 0o170000 == 0o100000:  # S_ISREG without importing stat
            masks.append((RO_BIND, path, "/dev/null", 0))
    return masks


def executor_argv(spec: Spec, executor: str, *, name: str = "layer-shell") -> list[str | bytes]:
    """The executor's command line for `spec` (enter.c documents every option)."""
    argv = executor_head(spec, executor, name)
    argv += mount_options(spec.mounts)
    argv += layer_options(spec)
    # From here on what the fast path (launcher.c) appends itself, in this order.
    if spec.job_control:
        argv.append("--job-control")
    if spec.cwd:
        argv += ["--cwd", spec.cwd]
    if spec.home:
        argv += ["--home", spec.home]
    if spec.bind_cwd:
        argv += ["--bind-cwd", spec.bind_cwd]
    for path in spec.cwd_deny:
        argv += ["--cwd-deny", path]
    if spec.env is None:
        argv += _environment_options(spec)
    if spec.argv0:
        argv += ["--argv0", spec.argv0]
    argv += ["--", spec.program, *spec.args]
    return argv


def executor_head(spec: Spec, executor: str, name: str) -> list[str | bytes]:
    return [executor, "--name", name, "--layer", spec.layer, "--view", spec.view]


def layer_options(spec: Spec) -> list[str | bytes]:
    """The options that say what kind of layer it is, after the mounts."""
    argv: list[str | bytes] = []
    if spec.pseudo_root:
        argv.append("--pseudo-root")
    if not spec.network:
        argv.append("--unshare-net")
    if spec.refuse_root:
        argv.append("--refuse-root")
    return argv


def mount_options(mounts: tuple[Mount, ...] | list[Mount]) -> list[str | bytes]:
    """executor_argv's options for `mounts`, two or three words each, in their order."""
    argv: list[str | bytes] = []
    for kind, dest, source, mode in mounts:
        if kind in (TMPFS, DIR):
            argv += [f"--{kind}", dest, f"{mode:o}"]
        elif kind == DEV:
            argv += ["--dev", dest]
        elif kind in (BIND_HOME, BIND_XDG, BIND_WRITABLE):
            argv += [f"--{kind}", source]
        else:
            argv += [f"--{kind}", source, dest]
    return argv


def _environment_options(spec: Spec) -> list[str | bytes]:
    """executor_argv's options for an environment built when the program starts (spec.env
    is None)."""
    argv: list[str | bytes] = []
    if not spec.keep_all:
        argv.append("--clearenv")
        for key in spec.keep_env:
            argv += ["--keep-env", key]
        for prefix in spec.keep_prefixes:
            argv += ["--keep-env-prefix", prefix]
    for key in spec.deny_env:
        argv += ["--deny-env", key]
    for prefix in spec.deny_prefixes:
        argv += ["--deny-env-prefix", prefix]
    for key, value in spec.set_env:
        argv += ["--setenv", key, value]
    if spec.layer_path:
        argv += ["--path", spec.layer_path]
    return argv


def enter(spec: Spec, executor: str) -> None:
    """Exec the executor on `spec`. Returns only by raising SandboxError."""
    import _signal

    if not os.access(executor, os.X_OK):
        raise SandboxError(
            f"{executor} is missing: layershell is not initialised here",
            "run: core init (rootless: core --rootless init)",
        )
    # Python ignores SIGPIPE and SIGXFSZ; ignored signals survive exec, handled ones don't.
    for sig in (_signal.SIGPIPE, _signal.SIGXFSZ):
        _signal.signal(sig, _signal.SIG_DFL)
    env = os.environ if spec.env is None else spec.env
    try:
        os.execve(executor, executor_argv(spec, executor), env)
    except OSError as exc:
        raise SandboxError(f"cannot run {executor}: {exc.strerror}") from None


def exec_program(
    program: str, argv: tuple[str | bytes, ...], env: dict[str, str], where: str
) -> None:
    """exec a program on the host itself (layer 0), as a native program would start."""
    import _signal

    for sig in (_signal.SIGPIPE, _signal.SIGXFSZ):
        _signal.signal(sig, _signal.SIG_DFL)
    try:
        os.execvpe(program, argv, env)
    except FileNotFoundError:
        raise SandboxError(
            f"{program}: command not found in layer {where}", exit_code=127
        ) from None
    except PermissionError:
        raise SandboxError(
            f"{program}: permission denied in layer {where}", exit_code=126
        ) from None
