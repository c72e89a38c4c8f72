"""Directories opened without following a link anyone else could have planted.

Root changes things inside trees a layer account can write (its store, /opt/pkgs, its
home) and inside trees only root can write (/var/lib/layershell, /opt/inbox). A path
string names different things from one moment to the next where someone else can write:
arne swaps `usr-local` for a link to root's libexec and `chown usr-local` hands over the
executor. So root never acts on such a path by name. It walks it one component at a
time from "/", each directory opened with O_NOFOLLOW relative to the one before, and
acts on the descriptor it ends with (fchown, fchmod, mkdirat, renameat, openat).

A symbolic link is followed only where nobody but root (or the caller itself) could have
made it: in a directory that is *trusted*. A directory is trusted when its owner is root
or the caller, nobody else can write it (group/other write bits; a sticky directory such
as /tmp protects only the entries owned by root or the caller), and the directory holding
it is trusted too. So /opt -> var/opt on Fedora CoreOS is followed, a link in arne's store
never is: it is refused with an error naming the path and what to do.

An ordinary caller (rootless mode) trusts its own group-writable directories too (user
private groups, umask 002): nobody there is more privileged than the layers themselves.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from layershell.errors import LayershellError

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
DEFAULT_HINT = "remove it, then run the command again"
MAX_LINKS = 40  # as the kernel's own limit on following links in one lookup


class UnsafePath(LayershellError):
    """A path root was to act on is not what it must be (a link, a file, missing)."""


class MissingPath(UnsafePath):
    """A component of the path does not exist (and was not to be created)."""


def _trusted_uids() -> frozenset[int]:
    return frozenset({0, os.geteuid()})


def _others_can_write(st: os.stat_result) -> int:
    """The write bits that let someone other than the owner change the directory."""
    return st.st_mode & (0o002 if os.geteuid() != 0 else 0o022)


def _kind(mode: int) -> str:
    for test, word in (
        (stat.S_ISLNK, "a symbolic link"), (stat.S_ISREG, "a file"), (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"),
    ):  # fmt: skip
        if test(mode):
            return word
    return "something else"


def who(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def why_untrusted(st: os.stat_result, *, sticky_ok: bool = True) -> str:
    """'' when a directory or file with this stat is root's (or the caller's) alone to
    change, else why not ("owned by arne", "writable by its group")."""
    if st.st_uid not in _trusted_uids():
        return f"owned by {who(st.st_uid)}"
    bits = _others_can_write(st)
    sticky = sticky_ok and stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX
    if bits and not sticky:
        return "writable by others" if bits & 0o002 else "writable by its group"
    return ""


def _entry_stable(parent: Dir, child: os.stat_result) -> bool:
    """Whether nobody untrusted can replace the entry `child` in `parent`."""
    if not parent.trusted:
        return False
    if _others_can_write(parent.st):  # sticky (else parent would not be trusted)
        return child.st_uid in _trusted_uids()
    return True


@dataclass
class Dir:
    """An open directory: its descriptor, the path walked to it, its stat, and whether
    it is trusted (nobody but root or the caller can change its entries)."""

    fd: int
    path: str
    st: os.stat_result
    trusted: bool
    created: bool = False  # made by this walk

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Dir:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def child(self, name: str, *, hint: str = "", create: int | None = None) -> Dir:
        """The subdirectory `name`, opened without following a link; with `create` (a
        mode), made first when missing. Raises UnsafePath for a link, a non-directory
        or (without create) a missing entry."""
        return _step(self, name, hint=hint or DEFAULT_HINT, create=create)

    def lstat(self, name: str) -> os.stat_result | None:
        try:
            return os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None


def _open_root() -> Dir:
    fd = os.open("/", DIR_FLAGS)
    st = os.fstat(fd)
    return Dir(fd, "/", st, not why_untrusted(st))


def _step(parent: Dir, name: str, *, hint: str, create: int | None) -> Dir:
    """Open parent/name as a directory (made first if missing and `create` is a mode).
    A link is refused here; following trusted links is the walk's business."""
    path = os.path.join(parent.path, name)
    hint = hint or DEFAULT_HINT
    created = False
    for _ in range(3):  # a missing entry created by someone else meanwhile: look again
        st = parent.lstat(name)
        if st is None:
            if create is None:
                raise MissingPath(f"{path} does not exist", hint)
            try:
                os.mkdir(name, create, dir_fd=parent.fd)
                created = True
            except FileExistsError:
                continue
            st = parent.lstat(name)
            if st is None:
                continue
        if not stat.S_ISDIR(st.st_mode):
            raise UnsafePath(f"{path}: {_kind(st.st_mode)} where a directory was expected", hint)
        try:
            fd = os.open(name, DIR_FLAGS, dir_fd=parent.fd)
        except FileNotFoundError:
            continue
        except OSError as exc:  # ELOOP, ENOTDIR: swapped since the lstat
            raise UnsafePath(
                f"{path}: changed while it was opened ({exc.strerror})", hint
            ) from None
        opened = os.fstat(fd)
        trusted = _entry_stable(parent, opened) and not why_untrusted(opened)
        return Dir(fd, path, opened, trusted, created)
    raise UnsafePath(f"{path} keeps changing while it is opened", hint)


def walk(
    path: str, *, hint: str = "", create: int | None = None, created: list[str] | None = None
) -> Dir:
    """Open the directory `path` (absolute) component by component from "/", following
    a symbolic link only where it lies in a trusted directory and is owned by root or
    the caller. With `create` (a mode), missing directories are made (owned by the
    caller, like makedirs) and their paths appended to `created`. The caller closes the
    returned Dir."""
    if not os.path.isabs(path):
        raise ValueError(f"not an absolute path: {path}")
    hint = hint or DEFAULT_HINT
    pending = [p for p in path.split("/") if p not in ("", ".")]
    stack = [_open_root()]
    links = 0
    try:
        while pending:
            name = pending.pop(0)
            here = stack[-1]
            if name == "..":
                if len(stack) > 1:
                    stack.pop().close()
                continue
            st = here.lstat(name)
            if st is not None and stat.S_ISLNK(st.st_mode):
                where = os.path.join(here.path, name)
                if not _entry_stable(here, st):
                    owner = who(st.st_uid)
                    why = why_untrusted(here.st) or "not root's"
                    raise UnsafePath(
                        f"{where}: a symbolic link where a directory was expected "
                        f"(made by {owner} in a directory {why}); it is not followed",
                        hint,
                    )
                links += 1
                if links > MAX_LINKS:
                    raise UnsafePath(f"{where}: too many levels of symbolic links", hint)
                target = os.readlink(name, dir_fd=here.fd)
                parts = [p for p in target.split("/") if p not in ("", ".")]
                if target.startswith("/"):
                    while len(stack) > 1:
                        stack.pop().close()
                pending[:0] = parts
                continue
            child = _step(here, name, hint=hint, create=create)
            if child.created and created is not None:
                created.append(child.path)
            stack.append(child)
        result = stack.pop()
        # Keep the lexical path the caller asked for: messages name what it knows.
        result.path = os.path.normpath(path)
        return result
    finally:
        for d in stack:
            d.close()


def probe(path: str, *, hint: str = "") -> None:
    """Walk `path` as ensure_dir would, changing nothing: UnsafePath for a link or a
    non-directory on the way, nothing when a component is simply missing yet."""
    try:
        walk(path, hint=hint).close()
    except MissingPath:
        pass


def ensure_dir(
    path: str, mode: int, owner: tuple[int, int] | None, *, hint: str = ""
) -> tuple[bool, bool]:
    """mkdir -p, then chown/chmod, all through descriptors: (created, changed)."""
    with walk(path, hint=hint, create=0o755) as d:
        changed = False
        if owner is not None and (d.st.st_uid, d.st.st_gid) != owner:
            os.fchown(d.fd, *owner)
            changed = True
        if stat.S_IMODE(d.st.st_mode) != mode or changed:
            # after fchown, which may clear set-id bits
            os.fchmod(d.fd, mode)
            changed = changed or stat.S_IMODE(d.st.st_mode) != mode
        return d.created, changed


def trusted_dir(path: str, *, hint: str = "", create: bool = False) -> Dir:
    """Open `path` and refuse it unless it is trusted: root (or the caller) alone can
    change what it holds. For root's own directories before writing into them."""
    d = walk(path, hint=hint, create=0o755 if create else None)
    why = why_untrusted(d.st, sticky_ok=False)
    if why or not d.trusted:
        d.close()
        raise UnsafePath(
            f"{path} is not root's own ({why or 'a directory above it is not'})",
            hint
            or "make it and every directory above it owned by root and not writable "
            "by group or others",
        )
    return d


def read_file(d: Dir, name: str) -> bytes | None:
    """The bytes of the regular file d/name, None when it is missing; a link or a
    non-file raises UnsafePath."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=d.fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        st = d.lstat(name)
        kind = _kind(st.st_mode) if st else exc.strerror
        raise UnsafePath(
            f"{os.path.join(d.path, name)}: {kind} where a file was expected",
            DEFAULT_HINT,
        ) from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePath(
                f"{os.path.join(d.path, name)}: {_kind(st.st_mode)} where a file was expected",
                DEFAULT_HINT,
            )
        return f.read()


def write_file(
    d: Dir, name: str, data: bytes, *, mode: int = 0o644, owner: tuple[int, int] | None = None
) -> None:
    """Atomically replace d/name: a new file made beside it (O_EXCL, O_NOFOLLOW), fsync,
    rename within the directory, fsync the directory."""
    tmp = f".{name}.{os.getpid()}.tmp"
    fd = os.open(
        tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
        dir_fd=d.fd,
    )  # fmt: skip
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if owner is not None:
                os.fchown(f.fileno(), *owner)
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, name, src_dir_fd=d.fd, dst_dir_fd=d.fd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=d.fd)
        except FileNotFoundError:
            pass
        raise
    os.fsync(d.fd)
