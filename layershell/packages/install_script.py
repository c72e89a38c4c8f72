"""A package's install.sh, run inside its layer as the layer's pseudo-root and contained
(step 4 of install.py's order): its own pid namespace, so that everything it started
dies when it exits; a time limit, a memory limit, a file-size limit and a watch on free
space; how it ended, at the end of its install log."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable

from layershell.errors import LayershellError
from layershell.layers import launch
from layershell.packages.limits import InstallLimits, free_inodes, free_space, human
from layershell.packages.source import Source
from layershell.packages.target import Target

INSTALL_SCRIPT = "install.sh"
WATCH_INTERVAL = 0.5  # s between checks of free space while install.sh runs


class InstallScriptFailed(LayershellError):
    exit_code = 1


UTIL_DIRS = ("/usr/bin", "/bin", "/usr/sbin", "/sbin")
# install.sh's command line, in front of layer-shell, all util-linux:
# - setpriv --pdeathsig KILL: when `core install` dies, so does the sandbox below;
# - prlimit: the memory limit (RLIMIT_AS, per process) and the file-size limit
#   (RLIMIT_FSIZE: no one file beyond the disk budget left), inherited by every process;
# - unshare: a user namespace of its own (the account mapped to itself, so the executor
#   nests its namespaces below it as usual), a pid namespace whose init is install.sh's
#   shell, and a /proc of that namespace, which the view binds. When the shell exits,
#   the kernel kills every process left in the namespace (setsid, double forks, nohup
#   included) and unshare returns only once they are gone. --kill-child: unshare's death
#   (SIGKILL, or its pdeathsig) kills the namespace's init, and with it the namespace.
CONTAIN = ("--user", "--map-current-user", "--pid", "--fork", "--kill-child", "--mount-proc")


def _util(name: str) -> str:
    for directory in UTIL_DIRS:
        path = os.path.join(directory, name)
        if os.access(path, os.X_OK):
            return path
    raise InstallScriptFailed(
        f"install.sh cannot be contained: util-linux {name} is missing",
        "install util-linux; nothing was installed",
    )


def contain_options() -> tuple[str, ...]:
    """CONTAIN, probed once: a kernel that refuses a new /proc in a user namespace
    (some container runtimes lock overmounts on /proc) still gets the pid namespace,
    whose death kills everything it holds; only /proc then shows the host's pids.
    Without user or pid namespaces at all, install.sh is refused: it cannot be
    contained."""
    unshare = _util("unshare")
    failure = ""
    for options in (CONTAIN, tuple(o for o in CONTAIN if o != "--mount-proc")):
        probe = subprocess.run(
            [unshare, *options, "--", "true"], capture_output=True, check=False, timeout=30
        )
        if probe.returncode == 0:
            return options
        failure = failure or probe.stderr.decode(errors="replace").strip()
    raise InstallScriptFailed(
        f"install.sh cannot be contained: {unshare} {' '.join(CONTAIN)} failed: {failure}",
        "install.sh needs unprivileged user and pid namespaces; nothing was installed",
    )


# RLIMIT_NPROC counts every process of the layer account: enough for any build step,
# far below the host's pid_max (a fork bomb in install.sh must not stop the host forking).
SCRIPT_PROCESSES = 1024


def sandbox_argv(inner: list[str], *, memory: int, file_size: int) -> list[str]:
    """The command that runs `inner` (a layer-shell command line) contained."""
    return [
        _util("setpriv"), "--pdeathsig", "KILL", "--",
        _util("prlimit"), f"--as={memory}", f"--fsize={file_size}",
        f"--nproc={SCRIPT_PROCESSES}", "--",
        _util("unshare"), *contain_options(), "--", *inner,
    ]  # fmt: skip


def _kill_contained(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the namespace's init (unshare's child; setpriv and prlimit exec'ed into
    unshare, so proc is unshare): the kernel then kills the rest,
    and unshare's wait returns once they are all gone; then unshare itself."""
    try:
        with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
            children = [int(pid) for pid in f.read().split()]
    except OSError:
        children = []
    for pid in children:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _status_words(status: int) -> str:
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = f"signal {-status}"
        return f"was killed by {name}"
    return f"exited with status {status}"


LOG_TAIL_BYTES = 64 * 1024  # what is read back of a log: its last lines, never all of it
LOG_MAX_BYTES = 16 * 1024 * 1024  # a longer log keeps its last LOG_TAIL_BYTES


def run_install_script(
    target: Target,
    src: Source,
    *,
    timeout: float,
    log: Callable[[str], None],
    lock_fd: int | None = None,
    limits: InstallLimits | None = None,
    file_size: int | None = None,
) -> None:
    """install.sh, inside the layer, as its pseudo-root, contained (CONTAIN), with a time
    limit, a memory and file-size limit, a free-space watch and a log file that ends
    with how it ended. file_size: the disk budget left (no one file may exceed it)."""
    limits = limits or InstallLimits()
    inner = target.inner_dir(src.name, src.version)
    os.makedirs(target.log_dir, exist_ok=True)
    log_path = os.path.join(target.log_dir, f"{src.name}_{src.version}.install.log")
    shell = launch.layer_shell_argv(
        target.layer.name,
        # The package directory has another path inside the layer: start the script there.
        launch.Request(
            command=f'cd "$PKG_DIR" && exec /bin/sh -e ./{INSTALL_SCRIPT}',
            writable_only=inner,  # its own tree: not other packages, /usr/local, the home
        ),
    )
    size_limit = file_size if file_size is not None and file_size > 0 else 1 << 62
    argv = sandbox_argv(shell, memory=limits.script_memory, file_size=size_limit)
    env = dict(os.environ)
    env.update(PKG_NAME=src.name, PKG_VERSION=src.version, PKG_DIR=inner)
    log(f"running {src.name}'s install.sh in layer {target.layer.name} (log: {log_path})")
    watched = list(dict.fromkeys((target.pkgs_dir, target.store)))
    floors = {path: limits.floor(free_space(path)[1]) for path in watched}
    inode_floors = {path: free_inodes(path)[1] for path in watched}
    killed = ""
    started = time.monotonic()

    def below_floor() -> str:
        for path in watched:
            free = free_space(path)[0]
            if free < floors[path]:
                return (
                    f"left only {human(free)} free on the filesystem of {path}, below the "
                    f"floor of {human(floors[path])}"
                )
            inodes = free_inodes(path)[0]
            if inodes < inode_floors[path]:
                return (
                    f"left only {inodes} inodes free on the filesystem of {path}, below "
                    f"the floor of {inode_floors[path]}"
                )
        return ""

    # O_APPEND: every write lands at the end, so the script cannot seek its stdout far
    # out and make a sparse log of gigabytes that root's tail would then read.
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
    with os.fdopen(fd, "wb") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=target.package_dir(src.name, src.version),
            env=env,
            start_new_session=True,  # the caller's terminal and signals are not its
            # The script holds the layer's lock too, while it lives.
            pass_fds=(lock_fd,) if lock_fd is not None else (),
        )
        while True:
            left = started + timeout - time.monotonic()
            try:
                status = proc.wait(timeout=max(min(WATCH_INTERVAL, left), 0.01))
                break
            except subprocess.TimeoutExpired:
                pass
            if time.monotonic() >= started + timeout:
                killed = f"ran longer than {timeout:g} s (the time limit) and was killed"
            elif floor := below_floor():
                killed = f"{floor}, and was killed"
            if killed:
                _kill_contained(proc)
                status = proc.returncode
                break
        if not killed and (floor := below_floor()):  # since the last look, before its end
            killed = f"{floor} by the time it ended"
    elapsed = time.monotonic() - started
    with open(log_path, "rb") as back:
        size = os.fstat(back.fileno()).st_size
        back.seek(max(size - LOG_TAIL_BYTES, 0))
        last = back.read(LOG_TAIL_BYTES)
    tail = last.decode(errors="replace").splitlines()[-15:]
    if size > LOG_MAX_BYTES:  # ftruncate() can still make it sparse and huge: keep the end
        with open(log_path, "wb") as out:
            out.write(f"--- layershell: the log was {size} bytes; its last part:\n".encode())
            out.write(last)
    ending = killed or _status_words(status)
    with open(log_path, "ab") as f:
        f.write(
            f"\n--- layershell: install.sh {ending} after {elapsed:.1f} s; every process it "
            "started ended with it\n".encode()
        )
    if killed:
        raise InstallScriptFailed(
            f"{src.name} {src.version}: install.sh {killed}, with every process it "
            "started; the install was rolled back",
            f"see {log_path}",
        )
    if status != 0:
        shown = "\n".join("    " + line for line in tail)
        how = f"failed with exit status {status}" if status > 0 else _status_words(status)
        raise InstallScriptFailed(
            f"{src.name} {src.version}: install.sh {how}; the install was rolled back. "
            f"Its last lines:\n{shown}",
            f"full log: {log_path}",
        )
