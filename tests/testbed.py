"""A real systemd 252 (Debian bookworm) booted in systemd-nspawn, for end-to-end tests.

The host needs no systemd as PID 1: nspawn runs with `--register=no --keep-unit` (no
machined, no scope to create) and `--console=passive` (no TTY). Each `Testbed` unpacks a
fresh rootfs from a cached mmdebstrap tarball, boots it in the background, and runs
commands in all of the container's namespaces with `nsenter` and a clean environment.
Only the processes it started are ever signalled, by PID. See docs/testbed.md.

    with Testbed(prepare=lambda root: ...) as tb:
        tb.exec("portablectl", "list", check=True)
        tb.reboot()

`python -m tests.testbed build` fills the cache; `python -m tests.testbed clean` stops
instances a killed test run left behind (from their PID files).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import TracebackType

import pytest

SUITE = "bookworm"
CACHE_ENV = "LAYERSHELL_TESTBED_CACHE"
WORK_ENV = "LAYERSHELL_TESTBED_WORK"
MIRROR_ENV = "LAYERSHELL_TESTBED_MIRROR"
KEEP_ENV = "LAYERSHELL_TESTBED_KEEP"
TMPFS_ENV = "LAYERSHELL_TESTBED_TMPFS"
DEFAULT_CACHE = Path("/var/cache/layershell-testbed")
DEFAULT_WORK = Path("/var/tmp/layershell-testbed")

INCLUDE = (
    "systemd", "systemd-sysv", "dbus", "systemd-container", "python3", "iproute2", "procps",
    "curl", "squashfs-tools", "ca-certificates", "util-linux", "passwd", "login",
    "libpam-modules", "gpg", "gpgv",
)  # fmt: skip
# A root like Fedora CoreOS's as far as layershell can tell: no python3 and no C compiler
# (minbase has none, and nothing here depends on one), for the system extension's boot.
BARE_INCLUDE = tuple(p for p in INCLUDE if p != "python3")
# Docs, man pages and translations are a third of the tarball and of every unpack.
DPKG_EXCLUDES = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/locale/*")
CUSTOMIZE_HOOKS = (
    'echo layershell-testbed > "$1/etc/hostname"',
    # Empty (not "uninitialized"): systemd derives a transient id and this is no first
    # boot, so presets are not applied behind the tests' back.
    'rm -f "$1/etc/machine-id"; : > "$1/etc/machine-id"',
    'mkdir -p -m 0700 "$1/var/lib/portables"',
)

CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CONTAINER_ENV = {
    "PATH": CONTAINER_PATH,
    "TERM": "dumb",
    "LANG": "C.UTF-8",
    "HOME": "/root",
    "SYSTEMD_PAGER": "cat",
    "SYSTEMD_COLORS": "0",
}
LOOP_NODES = 32
BOOTED_STATES = ("running", "degraded")
LOG_TAIL_LINES = 40


class TestbedError(Exception):
    """The testbed could not be built, booted, driven or stopped; the message says why."""

    __test__ = False  # not a test class, whatever pytest thinks of the name


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def work_dir() -> Path:
    return Path(os.environ.get(WORK_ENV) or DEFAULT_WORK)


def _mmdebstrap_args(output: Path, include: Sequence[str] = INCLUDE) -> list[str]:
    args = [
        "mmdebstrap",
        "--quiet",
        "--variant=minbase",
        "--format=tar",  # explicit: the format is otherwise guessed from the (temp) name
        "--include=" + ",".join(include),
        *(f"--dpkgopt=path-exclude={p}" for p in DPKG_EXCLUDES),
        *(f"--customize-hook={hook}" for hook in CUSTOMIZE_HOOKS),
        SUITE,
        str(output),
    ]
    mirror = os.environ.get(MIRROR_ENV)
    return [*args, mirror] if mirror else args


def tarball_path(include: Sequence[str] = INCLUDE) -> Path:
    """The cached rootfs; its name changes whenever the recipe does."""
    recipe = "\0".join(_mmdebstrap_args(Path("-"), include)).encode()
    return cache_dir() / f"rootfs-{SUITE}-{hashlib.sha256(recipe).hexdigest()[:12]}.tar"


def build(include: Sequence[str] = INCLUDE) -> Path:
    """The rootfs tarball: built once with mmdebstrap (needs the Debian mirror), then
    cached. A lock keeps parallel test runs from building it twice."""
    final = tarball_path(include)
    if final.is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(final.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if final.is_file():
            return final
        if shutil.which("mmdebstrap") is None:
            raise TestbedError(
                f"no {final} and no mmdebstrap to build it: apt-get install mmdebstrap"
            )
        tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
        result = subprocess.run(
            _mmdebstrap_args(tmp, include), capture_output=True, text=True, check=False
        )  # fmt: skip
        if result.returncode != 0 or not tmp.is_file():
            tmp.unlink(missing_ok=True)
            raise TestbedError(
                f"mmdebstrap failed (rc {result.returncode}): {_tail(result.stderr)}\n"
                f"set {MIRROR_ENV} if deb.debian.org is unreachable"
            )
        tmp.rename(final)
    return final


# Prerequisites ------------------------------------------------------------------------


def missing_prerequisites() -> str | None:
    """Why the testbed cannot run here, or None."""
    if os.getuid() != 0:
        return "testbed needs root (systemd-nspawn, mknod); CI runs as root"
    tools = ["systemd-nspawn", "nsenter", "setsid", "tar"]
    if not tarball_path().is_file():
        tools.append("mmdebstrap")
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        return f"testbed needs {', '.join(missing)}: apt-get install systemd-container mmdebstrap"
    return None


def require_testbed() -> None:
    """Skip the calling test, with the reason, when the testbed cannot run here."""
    reason = missing_prerequisites()
    if reason is not None:
        pytest.skip(reason)


needs_testbed = pytest.mark.skipif(
    missing_prerequisites() is not None, reason=str(missing_prerequisites())
)


# Processes ----------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            found += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
        except OSError:
            continue
    return found


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def find_init(nspawn_pid: int) -> int | None:
    """The host PID of the container's systemd: nspawn's child whose comm is systemd."""
    for child in _children(nspawn_pid):
        if _comm(child) == "systemd":
            return child
    return None


def namespace_of(pid: int, kind: str = "pid") -> str | None:
    """The namespace `kind` of a process as "pid:[inode]", or None when it is gone."""
    try:
        return os.readlink(f"/proc/{pid}/ns/{kind}")
    except OSError:
        return None


def pids_in_namespace(namespace: str, kind: str = "pid") -> list[int]:
    """Host PIDs of the processes in `namespace` (as namespace_of returns it). A
    container's processes cannot be found by their root: /proc/PID/root of a process in
    another mount namespace reads "/"."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and namespace_of(int(entry), kind) == namespace:
            found.append(int(entry))
    return found


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below `path` in this mount namespace."""
    prefix = str(path).rstrip("/")
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        # Mount points escape space, tab, newline and backslash as octal.
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), line.split()[4])
        if point == prefix or point.startswith(prefix + "/"):
            found.append(point)
    return found


def _terminate(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM nspawn (it halts the container's systemd cleanly); when that hangs, SIGKILL
    the container's init (it takes the whole PID namespace along), then nspawn. Killing only
    nspawn would orphan the container."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
        return
    except subprocess.TimeoutExpired:
        pass
    init = find_init(proc.pid)  # looked up now: only a live child of our nspawn
    if init is not None:
        try:
            os.kill(init, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _kill_group(pgid: int, spare: int) -> None:
    """SIGKILL every process in process group `pgid` except `spare`."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == spare:
            continue
        try:
            # Fields after the ")" that ends comm: state, ppid, pgrp.
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:
                os.kill(int(entry), signal.SIGKILL)
        except (OSError, IndexError, ValueError):
            continue


def _start_time(pid: int) -> str | None:
    """A process's start time in clock ticks: with the PID, it names one process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _abandon(
    proc: subprocess.Popen[bytes],
    timeout: float,
    loops: list[_LoopNode],
    instance_dir: Path,
    remove: bool,
) -> None:
    """Finalizer: the test process ends and never stopped this testbed."""
    _terminate(proc, timeout)
    _restore_host_loop_nodes(loops)
    if remove:
        try:
            _remove_tree(instance_dir / "root")
            _run_host(["rm", "-rf", "--one-file-system", str(instance_dir)])
        except TestbedError:
            pass  # python -m tests.testbed clean, later


def _tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


# Host loop devices --------------------------------------------------------------------


@dataclass(frozen=True)
class _LoopNode:
    path: str
    mode: int
    uid: int
    gid: int
    rdev: int


def _host_loop_nodes() -> list[_LoopNode]:
    nodes = []
    for name in os.listdir("/dev"):
        if re.fullmatch(r"loop[0-9]+", name):
            st = os.stat(f"/dev/{name}")
            if stat.S_ISBLK(st.st_mode):
                nodes.append(
                    _LoopNode(f"/dev/{name}", st.st_mode, st.st_uid, st.st_gid, st.st_rdev)
                )
    return nodes


def _restore_host_loop_nodes(nodes: Iterable[_LoopNode]) -> None:
    """The container's systemd does LOOP_CTL_REMOVE after using a loop device, which
    deletes the kernel device and its host devtmpfs node. Put the nodes back, and open
    each one: opening a loop node re-creates its kernel device."""
    for node in nodes:
        if not os.path.exists(node.path):
            os.mknod(node.path, node.mode, node.rdev)
            os.chown(node.path, node.uid, node.gid)
        try:
            os.close(os.open(node.path, os.O_RDONLY | os.O_CLOEXEC))
        except OSError:
            pass


# The testbed --------------------------------------------------------------------------

Prepare = Callable[[Path], object]


class Testbed:
    """One container: a rootfs under the work directory, a machine name, and the nspawn
    process booting it. Start, drive and stop it, or use it as a context manager."""

    __test__ = False

    def __init__(
        self,
        *,
        prepare: Prepare | None = None,
        name: str | None = None,
        boot_timeout: float = 90.0,
        stop_timeout: float = 30.0,
        private_network: bool = True,
        loop_devices: bool = True,
        nspawn_args: Sequence[str] = (),
        keep: bool | None = None,
        tmpfs: bool | None = None,
        include: Sequence[str] = INCLUDE,
    ) -> None:
        self.name = name or f"lstb-{secrets.token_hex(4)}"
        self.prepare = prepare
        self.boot_timeout = boot_timeout
        self.stop_timeout = stop_timeout
        self.private_network = private_network
        self.loop_devices = loop_devices
        self.nspawn_args = tuple(nspawn_args)
        self.include = tuple(include)  # the packages of its rootfs (BARE_INCLUDE: no python3)
        self.keep = os.environ.get(KEEP_ENV) == "1" if keep is None else keep
        # Unpacking onto a tmpfs takes 0.2 s where ext4 on the CI VM took 5-8 s. Its own
        # mount, not /dev/shm: that one is nosuid,nodev, and su must work inside.
        self.tmpfs = os.environ.get(TMPFS_ENV) != "0" if tmpfs is None else tmpfs
        self.instance_dir = work_dir() / self.name
        self._proc: subprocess.Popen[bytes] | None = None
        self._host_loops: list[_LoopNode] = []
        self._pid_namespace: str | None = None
        self._finalizer: weakref.finalize[..., Testbed] | None = None

    # Paths and state ------------------------------------------------------------------

    @property
    def root(self) -> Path:
        """The container's rootfs on the host."""
        return self.instance_dir / "root"

    @property
    def log_path(self) -> Path:
        """nspawn's output: the container's console (boot messages) and nspawn's own."""
        return self.instance_dir / "nspawn.log"

    @property
    def pid_file(self) -> Path:
        return self.instance_dir / "nspawn.pid"

    @property
    def nspawn_pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def init_pid(self) -> int | None:
        """The host PID of the container's systemd (PID 1 inside)."""
        if self._proc is None or self._proc.poll() is not None:
            return None
        return find_init(self._proc.pid)

    def processes(self) -> list[int]:
        """Host PIDs of every process in the container's PID namespace (recorded at boot,
        so this also finds processes that outlived the container's init)."""
        if self._pid_namespace is None:
            return []
        return pids_in_namespace(self._pid_namespace)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            return _tail(self.log_path.read_text(errors="replace"), lines)
        except OSError:
            return "(no log)"

    def host_path(self, path: str) -> Path:
        """Where the container's `path` is on the host, following symlinks the way the
        container would: an absolute link target stays inside the root."""
        todo = [p for p in PurePosixPath(path).parts if p != "/"]
        done: list[str] = []
        hops = 0
        while todo:
            part = todo.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                if done:
                    done.pop()
                continue
            candidate = self.root.joinpath(*done, part)
            if candidate.is_symlink():
                hops += 1
                if hops > 40:
                    raise TestbedError(f"too many symlinks resolving {path} in {self.root}")
                target = os.readlink(candidate)
                if target.startswith("/"):
                    done = []
                todo = [p for p in PurePosixPath(target).parts if p != "/"] + todo
                continue
            done.append(part)
        return self.root.joinpath(*done)

    # Lifecycle ------------------------------------------------------------------------

    def build(self) -> Path:
        return build(self.include)

    def start(self, fresh: bool = True, prepare: Prepare | None = None) -> None:
        """Boot the container and wait until systemd says running or degraded. `fresh`
        unpacks a new rootfs (any old one is removed); `prepare(root)` runs before boot."""
        if self.running:
            raise TestbedError(f"testbed {self.name} is already running")
        tarball = self.build()
        self.instance_dir.mkdir(parents=True, exist_ok=True)
        owner = os.getpid()  # clean_stale() leaves the instances of live owners alone
        (self.instance_dir / "owner").write_text(f"{owner} {_start_time(owner)}\n")
        if fresh or not (self.root / "usr/lib/systemd/systemd").exists():
            self._remove_root()
            self.root.mkdir()
            if self.tmpfs:
                _run_host(["mount", "-t", "tmpfs", "-o", "mode=0755", "lstb-root", str(self.root)])
            # --numeric-owner: the container's ids, not the host's names for them.
            _run_host(["tar", "-C", str(self.root), "--numeric-owner", "-xf", str(tarball)])
        args = [
            "systemd-nspawn", "-D", str(self.root), "-M", self.name,
            "--register=no", "--keep-unit", "--console=passive", "-b",
            "--setenv=SYSTEMD_COLORS=0",  # a readable console log for error messages
        ]  # fmt: skip
        if self.private_network:
            args.append("--private-network")  # only lo: no port clashes with host or peers
        if self.loop_devices:
            args.append("--bind=/dev/loop-control")
            self._write_loop_tmpfiles()
        args += self.nspawn_args
        prepare = prepare or (self.prepare if fresh else None)
        if prepare is not None:
            prepare(self.root)
        self._host_loops = _host_loop_nodes() if self.loop_devices else []
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # setsid: no terminal signals, killed by PID only
            )
        self.pid_file.write_text(f"{self._proc.pid}\n")
        # Stop the container even when the test process ends without calling stop().
        self._finalizer = weakref.finalize(
            self, _abandon, self._proc, self.stop_timeout, self._host_loops,
            self.instance_dir, not self.keep,
        )  # fmt: skip
        try:
            self._wait_booted()
        except BaseException:
            self._kill()
            raise

    def _write_loop_tmpfiles(self) -> None:
        """nspawn's /dev has no loop nodes. Binding the host's goes stale (systemd removes
        loop devices after use), so only loop-control is bound and the container makes its
        own nodes at boot: it keeps CAP_MKNOD and, unregistered, has no device policy."""
        conf = self.root / "etc/tmpfiles.d/layershell-testbed-loop.conf"
        conf.parent.mkdir(parents=True, exist_ok=True)
        conf.write_text(
            "".join(f"b /dev/loop{i} 0660 root disk - 7:{i}\n" for i in range(LOOP_NODES))
        )

    def _wait_booted(self) -> None:
        deadline = time.monotonic() + self.boot_timeout
        state = "(no init yet)"
        while True:
            if not self.running:
                raise TestbedError(
                    f"systemd-nspawn for {self.name} exited during boot; log:\n{self.log_tail()}"
                )
            init = self.init_pid
            if init is not None:
                self._pid_namespace = namespace_of(init)
                left = max(1, min(5, int(deadline - time.monotonic())))
                result = self.exec(
                    "timeout", str(left), "systemctl", "is-system-running", "--wait",
                    timeout=left + 10,
                )  # fmt: skip
                state = result.stdout.strip() or result.stderr.strip()
                if state in BOOTED_STATES:
                    return
            if time.monotonic() > deadline:
                if self.init_pid is not None:  # a timed-out --wait printed nothing
                    state = self.exec("systemctl", "is-system-running").stdout.strip() or state
                raise TestbedError(
                    f"{self.name} did not boot within {self.boot_timeout:.0f} s "
                    f"(state: {state}); log:\n{self.log_tail()}"
                )
            time.sleep(0.2)

    def _kill(self) -> None:
        if self._proc is not None:
            _terminate(self._proc, self.stop_timeout)
            self._proc = None
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        self.pid_file.unlink(missing_ok=True)
        _restore_host_loop_nodes(self._host_loops)
        self._host_loops = []

    def stop(self, keep: bool | None = None) -> None:
        """Halt the container, restore the host's loop nodes, and remove the instance
        (rootfs and log) unless `keep` (default: the constructor's, which defaults to
        LAYERSHELL_TESTBED_KEEP=1)."""
        self._kill()
        if not (self.keep if keep is None else keep):
            self._remove_root()
            shutil.rmtree(self.instance_dir, ignore_errors=True)

    def reboot(self) -> None:
        """`systemctl reboot` makes nspawn 252 exit here instead of restarting, so a reboot
        is a clean halt and a new boot of the same rootfs."""
        self.stop(keep=True)
        self.start(fresh=False)

    def _remove_root(self) -> None:
        if not self.root.exists():
            return
        live = self.processes()
        if live:
            raise TestbedError(f"processes {live} still run in {self.root}; not removing it")
        _remove_tree(self.root)

    def __enter__(self) -> Testbed:
        try:
            self.start(fresh=True)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # Running things -------------------------------------------------------------------

    def exec(
        self,
        *argv: str,
        check: bool = False,
        timeout: float = 120.0,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run argv in all of the container's namespaces with a clean environment. The
        process stays in the host's cgroup (fine for systemctl, portablectl); use
        run_unit() for a process the container's systemd manages."""
        init = self.init_pid
        if init is None:
            raise TestbedError(f"testbed {self.name} is not running")
        environment = {**CONTAINER_ENV, **(env or {})}
        command = [
            "nsenter", "-t", str(init), "-a",
            "env", "-i", *(f"{k}={v}" for k, v in environment.items()), *argv,
        ]  # fmt: skip
        with subprocess.Popen(
            command,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own group, so a timeout kills all of it
        ) as proc:
            try:
                out, err = proc.communicate(input, timeout=timeout)
            except subprocess.TimeoutExpired:
                # Kill the command but let nsenter reap its child: killed together, the
                # child would be left to the host's init, which may never reap it (this
                # CI's does not), and systemd's halt waits 10 s for that zombie.
                _kill_group(proc.pid, spare=proc.pid)
                try:
                    out, err = proc.communicate(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    out, err = proc.communicate()
                raise TestbedError(
                    f"{' '.join(argv)} timed out after {timeout:.0f} s in {self.name}\n"
                    f"stdout: {_tail(out)}\nstderr: {_tail(err)}"
                ) from None
        result = subprocess.CompletedProcess(list(argv), proc.returncode, out, err)
        if check and result.returncode != 0:
            raise TestbedError(
                f"{' '.join(argv)} failed with rc {result.returncode} in {self.name}\n"
                f"stdout: {_tail(out)}\nstderr: {_tail(err)}"
            )
        return result

    def run_unit(
        self,
        *argv: str,
        properties: Sequence[str] = (),
        check: bool = False,
        timeout: float = 120.0,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run argv as a transient service of the container's systemd (its own cgroup,
        the unit's sandboxing `properties` such as "DynamicUser=yes"); the exit code and
        output come back."""
        return self.exec(
            "systemd-run", "--quiet", "--wait", "--pipe", "--collect", "--service-type=exec",
            *(f"--property={p}" for p in properties), "--", *argv,
            check=check, timeout=timeout, input=input,
        )  # fmt: skip

    def copy_in(self, src: Path | str, dst: str) -> Path:
        """Copy a host file or directory (with modes, owners, links) to the container's
        path `dst`; a directory's contents merge into an existing `dst`. Returns the host
        path of the copy."""
        dst_path = PurePosixPath(dst)
        target = self.host_path(str(dst_path.parent)) / dst_path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        _run_host(["cp", "-a", "-T", str(src), str(target)])
        return target

    def write(self, dst: str, data: str | bytes, mode: int = 0o644) -> Path:
        """Write a file at the container's path `dst`; returns its host path."""
        dst_path = PurePosixPath(dst)
        target = self.host_path(str(dst_path.parent)) / dst_path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data.encode() if isinstance(data, str) else data)
        target.chmod(mode)
        return target


def _remove_tree(path: Path) -> None:
    """Unmount `path` if it is our tmpfs and remove it, but never through a mount below
    it: a stray bind mount there could lead into the host's files."""
    below = [m for m in mounts_under(path) if m != str(path)]
    if below:
        raise TestbedError(f"{', '.join(below)} still mounted; not removing {path}")
    while os.path.ismount(path):
        _run_host(["umount", str(path)])
    _run_host(["rm", "-rf", "--one-file-system", str(path)])


def _run_host(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise TestbedError(f"{' '.join(argv)} failed (rc {result.returncode}): {result.stderr}")


# Stale instances ----------------------------------------------------------------------


def clean_stale(base: Path | None = None) -> list[str]:
    """Stop the containers of instances under the work directory whose test process died
    without stopping them (their PID file names a live systemd-nspawn on that root), and
    remove the instances. Instances of a live test process are left alone. Returns the
    names cleaned."""
    base = base or work_dir()
    cleaned = []
    for instance in sorted(base.glob("lstb-*")) if base.is_dir() else []:
        root = instance / "root"
        try:
            owner, started = (instance / "owner").read_text().split()
            if _start_time(int(owner)) == started:
                continue  # its test process still runs and will stop it
        except (OSError, ValueError):
            pass
        try:
            pid = int((instance / "nspawn.pid").read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            pid = 0
            cmdline = []
        if cmdline[:1] == [b"systemd-nspawn"] and str(root).encode() in cmdline:
            init = find_init(pid)
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 30
            while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
                time.sleep(0.2)
            if os.path.exists(f"/proc/{pid}"):
                if init is not None and find_init(pid) == init:
                    os.kill(init, signal.SIGKILL)
                    time.sleep(2)
                os.kill(pid, signal.SIGKILL)
        if os.path.exists(f"/proc/{pid}"):
            continue  # would not die: leave it for a human
        try:
            _remove_tree(root)
        except TestbedError:
            continue  # something is mounted below it: leave it for a human
        _run_host(["rm", "-rf", "--one-file-system", str(instance)])
        cleaned.append(instance.name)
    return cleaned


# layershell inside the container ------------------------------------------------------


def install_layershell(tb: Testbed, venv: Path | None = None) -> None:
    """Make the host's installed layershell usable in the container: its venv at the
    same path (the venv's python links to /usr/bin/python3.11, which bookworm has),
    `core` and `layer-shell` in /usr/local/bin. The container has no compiler and needs
    none: core init installs the executor and the launcher the venv's layershell was
    built with."""
    venv = venv or Path(sys.prefix)
    if venv == Path(sys.base_prefix) and not (venv / "pyvenv.cfg").exists():
        raise TestbedError(f"{venv} is not a venv: install layershell with ./dev.sh first")
    python = venv / "bin" / "python3"
    interpreter = os.path.realpath(python)
    if not tb.host_path(interpreter).exists():
        raise TestbedError(f"the container has no {interpreter}, which {python} runs")
    copy = tb.copy_in(venv, str(venv))
    _run_host(["chmod", "-R", "a+rX", str(copy)])
    for command in ("core", "layer-shell"):
        link = tb.host_path("/usr/local/bin") / command
        link.parent.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to(venv / "bin" / command)
    # The host trusts the key the suite signs its repositories with (tests/signing.py).
    from tests import signing

    tb.write(f"/etc/layershell/keys/{signing.TEST_KEY_FILE}", signing.key().public)


def publish(tb: Testbed, directory: str) -> None:
    """`core repo index DIRECTORY` in the container, then SHA256SUMS signed by hand on
    the host with the real gpg and the suite's key (no layershell involved in signing),
    as a publisher whose key lives on another machine would."""
    from tests import signing

    tb.exec("core", "repo", "index", directory, check=True)
    key = signing.key()
    sums = tb.host_path(f"{directory}/SHA256SUMS")
    signature = sums.with_name("SHA256SUMS.gpg")
    key.gpg("--local-user", key.fingerprint, "--detach-sign", "--output", str(signature),
            str(sums))  # fmt: skip
    signature.chmod(0o644)


@contextmanager
def with_layershell() -> Iterator[tuple[Testbed, str]]:
    """A booted testbed with the image builder, this host's layershell and `core init
    --create-users` done; yields it and its architecture (`uname -m`), stops it after."""
    require_testbed()
    tb = Testbed(prepare=add_portable_builder)
    tb.start()
    try:
        install_layershell(tb)
        tb.exec("core", "init", "--create-users", check=True)
        yield tb, tb.exec("uname", "-m", check=True).stdout.strip()
    finally:
        tb.stop()


# Portable service images --------------------------------------------------------------

# The image builder lives in tests/data/mk-portable-package.sh (shared with
# tests/test_portable.py): a directory image made from the container's own binaries.
MAKE_PORTABLE = Path(__file__).resolve().parent / "data" / "mk-portable-package.sh"


def add_portable_builder(root: Path) -> None:
    """Put the image builder in a container's root as /usr/local/sbin/mk-portable-package
    (a Testbed `prepare` step)."""
    target = root / "usr/local/sbin/mk-portable-package"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(MAKE_PORTABLE.read_bytes())
    target.chmod(0o755)


def make_portable(tb: Testbed, directory: str, name: str, version: str) -> None:
    """Build a directory portable image at the container's `directory` whose unit
    `<name>.service` runs a shell then sleeps. Name the directory `<name>_<version>`
    (the part before `_` must match the unit names)."""
    script = MAKE_PORTABLE.read_text()
    tb.exec("sh", "-c", script, "mk-portable-package", directory, name, version, check=True)


def main(argv: Sequence[str]) -> int:
    if argv[:1] == ["build"]:
        print(build())
        return 0
    if argv[:1] == ["clean"]:
        for name in clean_stale():
            print(f"cleaned {name}")
        return 0
    print("usage: python -m tests.testbed build|clean", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
