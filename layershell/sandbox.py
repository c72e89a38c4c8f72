"""Turn a layer into a sandbox specification, and run it. The only module that knows
about namespaces.

How a layer is entered (docs/design.md explains the choice over bwrap):

1. unshare(NEWUSER | NEWNS [| NEWNET]) and map the caller's uid and gid to 0, so the
   caller may mount inside its own namespaces. No helper, no setuid bit.
2. Build the view on a tmpfs: core's /usr and /etc read-only, /dev and /proc from the
   host, private /tmp, /run and /var, the lower layers' trees read-only, this layer's
   own trees and home read-write. Every bind is nosuid,nodev.
3. pivot_root into the view and detach the old root: the host tree is gone.
4. unshare(NEWUSER | NEWNS) once more, mapping the uid the program should have (0 for
   the pseudo-root layer 1, the caller's uid for user layers) onto the caller. The copy
   of the mount table in a less privileged namespace locks every mount: the program
   cannot unmount or remount anything to see what lies beneath, even as pseudo-root.
5. no_new_privs, signal dispositions back to default, and exec.

The program replaces this process: it keeps layer-shell's pid, so signals sent to that
pid reach it, its exit status is the caller's, and a TTY and job control work unchanged.

This module is on the `layer-shell` hot path: it imports only os, ctypes and _signal.
"""

from __future__ import annotations

import ctypes
import os

from layershell.errors import SandboxError

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MS_RELATIME = 0x200000
MNT_DETACH = 0x2
PR_SET_NO_NEW_PRIVS = 38

# statvfs f_flag bits -> mount flags that must be kept when remounting a bind, because
# the kernel refuses to clear flags locked by a more privileged namespace.
_ST_TO_MS = ((0x1, MS_RDONLY), (0x2, MS_NOSUID), (0x4, MS_NODEV), (0x8, MS_NOEXEC),
             (0x400, MS_NOATIME), (0x800, MS_NODIRATIME), (0x1000, MS_RELATIME))  # fmt: skip

# pivot_root has no glibc wrapper; its number differs per architecture.
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203,
                   "ppc64": 203, "s390x": 217, "i686": 217, "armv7l": 218}  # fmt: skip

LAYER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Kinds of mount operations in a spec.
RO_BIND, BIND, RBIND, RO_RBIND, TMPFS, DIR, SYMLINK = (
    "ro-bind", "bind", "rbind", "ro-rbind", "tmpfs", "dir", "symlink"
)  # fmt: skip


class Spec:
    """Everything needed to enter a layer: computed by `layer_spec`, run by `enter`.

    mounts: (kind, destination inside the view, source or symlink target, mode), in
    order; uid/gid: what the program sees as its ids (0 = pseudo-root).
    """

    __slots__ = (
        "argv", "cwd", "env", "gid", "home", "layer", "mounts", "network", "program", "uid", "view"
    )  # fmt: skip

    layer: str
    view: str
    mounts: tuple[tuple[str, str, str, int], ...]
    uid: int
    gid: int
    network: bool
    cwd: str
    home: str
    program: str | bytes
    argv: tuple[str | bytes, ...]
    env: dict[str, str]

    def __init__(self, **fields: object) -> None:
        for key in self.__slots__:
            object.__setattr__(self, key, fields[key])

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Spec is immutable")

    def __repr__(self) -> str:
        return f"Spec(layer={self.layer!r}, uid={self.uid}, network={self.network})"


def expand(template: str, store: str, pkgs: str, state: str) -> str:
    return os.path.normpath(
        template.replace("{store}", store).replace("{pkgs}", pkgs).replace("{state}", state)
    )


def base_mounts() -> list[tuple[str, str, str, int]]:
    """Core's read-only view: /usr and /etc, the merged-/usr links, /dev, /proc, /sys,
    and private /tmp, /run, /var."""
    mounts: list[tuple[str, str, str, int]] = [("ro-bind", "/usr", "/usr", 0)]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = "/" + name
        if os.path.islink(path):
            mounts.append((SYMLINK, path, os.readlink(path), 0))
        elif os.path.isdir(path):
            mounts.append((RO_BIND, path, path, 0))
    mounts += [
        (RO_BIND, "/etc", "/etc", 0),
        (RBIND, "/dev", "/dev", 0),
        (RBIND, "/proc", "/proc", 0),
        (RO_RBIND, "/sys", "/sys", 0),
        (TMPFS, "/tmp", "", 0o1777),
        (TMPFS, "/run", "", 0o755),
        (TMPFS, "/var", "", 0o755),
        (DIR, "/var/tmp", "", 0o1777),
    ]
    return mounts


def layer_mounts(
    layers: tuple[tuple[str, tuple[tuple[str, str], ...]], ...],
    home: str,
    stores_dir: str,
    pkgs: str,
    state: str,
) -> list[tuple[str, str, str, int]]:
    """Mounts for the layer stack above core. `layers` lists (name, writable) from level
    1 up to the layer being entered: lower layers read-only, the last one read-write."""
    mounts = base_mounts()
    for i, (name, writable) in enumerate(layers):
        own = i == len(layers) - 1
        store = os.path.join(stores_dir, name)
        for inner, template in writable:
            mounts.append(
                (BIND if own else RO_BIND, inner, expand(template, store, pkgs, state), 0)
            )
    if home:
        mounts.append((BIND, home, home, 0))
    # Parents before children: /usr before /usr/local, /var before /var/lib/...
    mounts.sort(key=lambda m: m[1].rstrip("/").count("/"))
    return mounts


def layer_spec(
    *,
    layer: str,
    level: int,
    view: str,
    mounts: list[tuple[str, str, str, int]],
    network: bool,
    caller_uid: int,
    caller_gid: int,
    home: str,
    cwd: str,
    program: str | bytes,
    argv: tuple[str | bytes, ...],
    env: dict[str, str],
) -> Spec:
    pseudo_root = level == 1
    return Spec(
        layer=layer,
        view=view,
        mounts=tuple(mounts),
        uid=0 if pseudo_root else caller_uid,
        gid=0 if pseudo_root else caller_gid,
        network=network,
        cwd=cwd,
        home=home,
        program=program,
        argv=argv,
        env=env,
    )


# --- running a spec ---------------------------------------------------------------------


class _Kernel:
    """Thin ctypes access to the syscalls Python 3.10/3.11 lacks (os.unshare is 3.12+)."""

    def __init__(self) -> None:
        self.libc = ctypes.CDLL(None, use_errno=True)

    def _check(self, rc: int, what: str, hint: str = "") -> None:
        if rc != 0:
            err = ctypes.get_errno()
            raise SandboxError(f"{what}: {os.strerror(err)}", hint)

    def unshare(self, flags: int) -> None:
        self._check(
            self.libc.unshare(flags),
            "cannot create the layer's namespaces",
            "unprivileged user namespaces must be enabled "
            "(sysctl user.max_user_namespaces > 0, kernel.unprivileged_userns_clone = 1)",
        )

    def mount(self, source: str, target: str, fstype: str, flags: int, data: str = "") -> None:
        rc = self.libc.mount(
            source.encode() if source else None,
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        )
        self._check(rc, f"cannot mount {source or fstype} on {target}")

    def umount2(self, target: str, flags: int) -> None:
        self._check(self.libc.umount2(target.encode(), flags), f"cannot detach {target}")

    def pivot_root(self, new_root: str, put_old: str) -> None:
        nr = _SYS_PIVOT_ROOT.get(os.uname().machine)
        if nr is None:
            raise SandboxError(f"pivot_root: unknown architecture {os.uname().machine}")
        rc = self.libc.syscall(ctypes.c_long(nr), new_root.encode(), put_old.encode())
        self._check(rc, "cannot pivot into the layer view")

    def no_new_privs(self) -> None:
        self._check(
            self.libc.prctl(PR_SET_NO_NEW_PRIVS, ctypes.c_ulong(1), ctypes.c_ulong(0),
                            ctypes.c_ulong(0), ctypes.c_ulong(0)),
            "cannot set no_new_privs",
        )  # fmt: skip


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    except OSError as exc:
        raise SandboxError(f"cannot write {path}: {exc.strerror}") from None
    finally:
        os.close(fd)


def _map_ids(inside_uid: int, outside_uid: int, inside_gid: int, outside_gid: int) -> None:
    try:
        _write("/proc/self/setgroups", "deny")
    except SandboxError:
        pass  # a nested namespace inherits "deny" and may not write it again
    _write("/proc/self/uid_map", f"{inside_uid} {outside_uid} 1")
    _write("/proc/self/gid_map", f"{inside_gid} {outside_gid} 1")


def _kept_flags(path: str) -> int:
    f_flag = os.statvfs(path).f_flag
    return sum(ms for st, ms in _ST_TO_MS if f_flag & st)


def in_view(view: str, dest: str) -> str:
    """The host path of `dest` inside the view, following symlinks the view contains as
    the layer would: Fedora CoreOS has /usr/local -> ../var/usrlocal, /opt -> var/opt.
    A link cannot lead out of the view: ".." stops at its root, absolute targets restart
    at it."""
    parts = [p for p in dest.split("/") if p]
    resolved: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        if part == ".":
            continue
        candidate = view + "/" + "/".join([*resolved, part])
        if os.path.islink(candidate):
            hops += 1
            if hops > 40:
                raise SandboxError(f"too many symbolic links resolving {dest} in the view")
            link = os.readlink(candidate)
            if link.startswith("/"):
                resolved = []
            parts = [p for p in link.split("/") if p] + parts
            continue
        resolved.append(part)
    return view + "/" + "/".join(resolved)


def _make_mountpoint(path: str, is_dir: bool) -> None:
    try:
        if is_dir:
            os.makedirs(path, exist_ok=True)
        elif not os.path.exists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o644))
    except OSError as exc:
        raise SandboxError(
            f"cannot create mount point {path}: {exc.strerror}",
            "a layer's writable path must lie in a writable part of the view or exist in core",
        ) from None


def _build_view(k: _Kernel, spec: Spec) -> None:
    k.mount("tmpfs", spec.view, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")
    for kind, dest, source, mode in spec.mounts:
        if kind == SYMLINK:
            os.symlink(source, spec.view + dest)
            continue
        target = in_view(spec.view, dest)
        if kind in (TMPFS, DIR):
            _make_mountpoint(target, True)
            if kind == TMPFS:
                k.mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, f"mode={mode:o}")
            else:
                os.chmod(target, mode)
            continue
        if not os.path.exists(source):
            raise SandboxError(
                f"layer {spec.layer}: {source} does not exist (wanted at {dest})",
                "run `core init` to create the layer's store",
            )
        _make_mountpoint(target, os.path.isdir(source))
        recursive = MS_REC if kind in (RBIND, RO_RBIND) else 0
        k.mount(source, target, "", MS_BIND | recursive)
        # Every bind is nosuid; all but /dev (an RBIND of device nodes) are nodev too.
        ro = MS_RDONLY if kind in (RO_BIND, RO_RBIND) else 0
        nodev = 0 if kind == RBIND else MS_NODEV
        flags = MS_REMOUNT | MS_BIND | MS_NOSUID | nodev | ro | _kept_flags(target)
        k.mount("", target, "", flags)


def _same_dir(path: str, want: tuple[int, int] | None) -> bool:
    try:
        os.chdir(path)
        if want is None:
            return True
        st = os.stat(".")
        return (st.st_dev, st.st_ino) == want
    except OSError:
        return False


def enter(spec: Spec) -> None:
    """Enter the layer and exec the program. Returns only by raising SandboxError."""
    k = _Kernel()
    uid, gid = os.getuid(), os.getgid()
    try:
        st = os.stat(spec.cwd)
        cwd_id = (st.st_dev, st.st_ino)
    except OSError:
        cwd_id = None
    k.unshare(CLONE_NEWUSER | CLONE_NEWNS | (0 if spec.network else CLONE_NEWNET))
    _map_ids(0, uid, 0, gid)
    k.mount("", "/", "", MS_REC | MS_PRIVATE)
    _build_view(k, spec)
    os.chdir(spec.view)
    k.pivot_root(".", ".")
    k.umount2(".", MNT_DETACH)
    # Step 4: a namespace less privileged than the one that made the mounts locks them.
    k.unshare(CLONE_NEWUSER | CLONE_NEWNS)
    _map_ids(spec.uid, 0, spec.gid, 0)
    # The cwd is kept only if the view shows the very same directory (a bind keeps its
    # device and inode); a path that exists only as an empty mount-point parent is not it.
    if cwd_id is None or not _same_dir(spec.cwd, cwd_id):
        for where in (spec.home, "/"):
            if _same_dir(where, None):
                break
    k.no_new_privs()
    # PWD must name where the program really starts, not the caller's cwd left behind.
    env = {**spec.env, "PWD": os.getcwd()}
    exec_program(spec.program, spec.argv, env, spec.layer)


def exec_program(
    program: str | bytes, argv: tuple[str | bytes, ...], env: dict[str, str], where: str
) -> None:
    """exec with the signal dispositions a native program would have. `program` is
    looked up on env's PATH; argv[0] may differ ("-bash" for a login shell)."""
    import _signal

    name = os.fsdecode(program)

    # Python ignores SIGPIPE and SIGXFSZ; ignored signals survive exec, handled ones don't.
    for sig in (_signal.SIGPIPE, _signal.SIGXFSZ):
        _signal.signal(sig, _signal.SIG_DFL)
    try:
        os.execvpe(program, argv, env)
    except FileNotFoundError:
        raise SandboxError(f"{name}: command not found in layer {where}", exit_code=127) from None
    except PermissionError:
        raise SandboxError(f"{name}: permission denied in layer {where}", exit_code=126) from None
