"""Package trees on disk: remove one, and neutralise and measure one, without recursion.

A package tree is made by someone we do not trust (the archive, then install.sh), so
everything here:
- iterates, never recurses (a tree may be deeper than Python's recursion limit, and a
  leftover from an older layershell, or from an install.sh, may be 10,000 deep);
- works through directory file descriptors (openat), so a path longer than PATH_MAX
  still works and a symbolic link is never followed: every entry is lstat'ed;
- holds a bounded number of descriptors: `remove` two at a time, `neutralise` one per
  level down to the depth limit it enforces.

`neutral_mode` is the one rule for "what mode may a package file keep", shared with
unpack/writing.py, which applies it to archive members before they are written.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Collection
from dataclasses import dataclass

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_PATH_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC

# xattrs a package may not keep: file capabilities (v2, or v3 "namespaced" ones set by
# the layer's pseudo-root), and POSIX ACLs, which can grant what the mode bits do not.
CAPABILITY_XATTR = "security.capability"
ACL_XATTRS = ("system.posix_acl_access", "system.posix_acl_default")


def neutral_mode(mode: int) -> tuple[int, list[str]]:
    """The permission bits a package file may keep (at most 0755: no setuid, setgid or
    sticky bit, no group or world write) and what was taken away."""
    what = []
    for bit, word in ((stat.S_ISUID, "setuid"), (stat.S_ISGID, "setgid"), (stat.S_ISVTX, "sticky")):
        if mode & bit:
            what.append(f"{word} bit stripped")
    writers = [w for bit, w in ((0o020, "group"), (0o002, "world")) if mode & bit]
    if writers:
        what.append(f"{' and '.join(writers)} write removed")
    return mode & 0o755, what


# --- removal ---------------------------------------------------------------------------


def _first_subdir(fd: int) -> str | None:
    """Unlink every non-directory in fd; return the name of a subdirectory, if any."""
    with os.scandir(fd) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                return entry.name
            try:
                os.unlink(entry.name, dir_fd=fd)
            except FileNotFoundError:
                pass
    return None


def _open_dir(name: str, parent_fd: int) -> int:
    """parent_fd/name as a directory fd; a directory its owner made unreadable (0000, by
    install.sh or an old archive) is given owner rwx first, so it can be emptied."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except PermissionError:
        path_fd = os.open(name, _PATH_FLAGS, dir_fd=parent_fd)
        try:
            if not stat.S_ISDIR(os.fstat(path_fd).st_mode):
                raise
            mode = stat.S_IMODE(os.fstat(path_fd).st_mode)
            os.chmod(f"/proc/self/fd/{path_fd}", mode | 0o700)
        finally:
            os.close(path_fd)
        return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)


def _make_writable(fd: int) -> None:
    """Owner rwx on an open directory, so its entries can be unlinked."""
    st = os.fstat(fd)
    if st.st_mode & 0o700 != 0o700:
        os.fchmod(fd, stat.S_IMODE(st.st_mode) | 0o700)


def remove_at(parent_fd: int, name: str) -> None:
    """rm -rf parent_fd/name, never following a link, iteratively and with two fds open
    at most (deeper than the fd limit, too): going up is openat("..") checked against
    the identity recorded going down, so a directory moved meanwhile stops the removal
    instead of misdirecting it. A non-directory is simply unlinked."""
    try:
        st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=parent_fd)
        return
    fd = _open_dir(name, parent_fd)
    above: list[tuple[str, int, int]] = []  # (child name, parent's st_dev, st_ino)
    try:
        while True:
            _make_writable(fd)
            child = _first_subdir(fd)
            if child is not None:
                st = os.fstat(fd)
                child_fd = _open_dir(child, fd)
                os.close(fd)
                fd = child_fd
                above.append((child, st.st_dev, st.st_ino))
                continue
            if not above:
                break
            child, dev, ino = above.pop()
            up = os.open("..", _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = up
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != (dev, ino):
                raise OSError(errno.EBUSY, f"{name} was moved while it was being removed")
            os.rmdir(child, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=parent_fd)


def remove(path: str) -> None:
    """rm -rf path (nothing if it does not exist), without recursion or following links."""
    parent, name = os.path.split(os.path.abspath(path))
    if name in ("", ".", ".."):
        raise ValueError(f"refusing to remove {path!r}")
    try:
        parent_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        remove_at(parent_fd, name)
    finally:
        os.close(parent_fd)


def empty(path: str) -> list[tuple[str, OSError]]:
    """Remove every entry of the directory path (which stays); returns what failed."""
    failed: list[tuple[str, OSError]] = []
    try:
        fd = os.open(path, _DIR_FLAGS)
    except FileNotFoundError:
        return failed
    try:
        for name in os.listdir(fd):
            try:
                remove_at(fd, name)
            except OSError as exc:
                failed.append((os.path.join(path, name), exc))
    finally:
        os.close(fd)
    return failed


# --- neutralising and measuring a finished tree ----------------------------------------


class TreeRefused(Exception):
    """The tree cannot be made safe (too deep, an entry owned by someone else, an xattr
    that would not go): the package must not become visible."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}" if where else reason)
        self.where, self.reason = where, reason


@dataclass(frozen=True)
class TreeReport:
    """files: regular files (each name of a hard link); disk_bytes: space the tree takes on disk
    (allocated blocks, each inode once: a sparse file counts what it uses, a
    fallocate'd one what it reserves); stripped: (entry, what was neutralised)."""

    files: int
    directories: int
    disk_bytes: int
    stripped: tuple[tuple[str, str], ...]


def _xattrs(dir_fd: int, name: str) -> list[str]:
    try:
        return os.listxattr(f"/proc/self/fd/{dir_fd}/{name}", follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.ENODATA):
            return []
        raise


def _drop_capability(path_fd: int, st: os.stat_result) -> None:
    """Remove security.capability. The layer's pseudo-root sets a v3 (namespaced)
    capability that the account cannot remove from the host side (EPERM: it has no
    CAP_SETFCAP there); the kernel removes it, as it removes setuid bits, whenever
    the file is written or truncated, so truncate it to its own size (contents and
    times stay)."""
    proc = f"/proc/self/fd/{path_fd}"
    try:
        os.removexattr(proc, CAPABILITY_XATTR)
        return
    except OSError as exc:
        if exc.errno == errno.ENODATA:
            return
        if exc.errno != errno.EPERM:
            raise
    if not stat.S_ISREG(st.st_mode):
        raise TreeRefused("", "a file capability on a non-regular file cannot be removed")
    os.chmod(proc, 0o600)  # owner write, so it can be opened for writing
    fd = os.open(proc, os.O_WRONLY | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        os.ftruncate(fd, st.st_size)
        os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))
    finally:
        os.close(fd)


def _fix(dir_fd: int, name: str, st: os.stat_result, mode: int | None, drop: list[str]) -> None:
    """Apply a new mode and/or drop xattrs on dir_fd/name, through an O_PATH fd checked
    to be the entry that was lstat'ed (no link is followed, no other file is touched)."""
    path_fd = os.open(name, _PATH_FLAGS, dir_fd=dir_fd)
    try:
        now = os.fstat(path_fd)
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            raise TreeRefused("", "the entry changed while it was checked")
        proc = f"/proc/self/fd/{path_fd}"
        for key in drop:
            if key == CAPABILITY_XATTR:
                _drop_capability(path_fd, st)
            else:
                try:
                    os.removexattr(proc, key)
                except OSError as exc:
                    if exc.errno != errno.ENODATA:
                        raise
        if mode is not None or CAPABILITY_XATTR in drop:
            os.chmod(proc, stat.S_IMODE(st.st_mode) if mode is None else mode)
        if CAPABILITY_XATTR in drop and CAPABILITY_XATTR in _xattrs(dir_fd, name):
            raise TreeRefused("", "its file capability could not be removed")
    finally:
        os.close(path_fd)


class _Walk:
    """State of one neutralise() walk."""

    def __init__(self, owner: int, max_depth: int) -> None:
        self.owner, self.max_depth = owner, max_depth
        self.stripped: list[tuple[str, str]] = []
        self.seen: set[tuple[int, int]] = set()
        self.files = self.directories = self.disk = 0

    def visit(self, fd: int, name: str, key: str, depth: int) -> int | None:
        """Check, neutralise and count fd/name; a directory's new fd, to walk it next."""
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        kind = st.st_mode
        shown = key or "the package directory"
        if st.st_uid != self.owner:
            raise TreeRefused(
                shown,
                f"owned by uid {st.st_uid}, not by the layer's account (uid {self.owner}): "
                "a hard link to a file from outside the package?",
            )
        if stat.S_ISCHR(kind) or stat.S_ISBLK(kind):
            os.unlink(name, dir_fd=fd)
            self.stripped.append((shown, "device node removed"))
            return None
        if st.st_nlink > 1 and not stat.S_ISDIR(kind):
            inode = (st.st_dev, st.st_ino)
            if inode in self.seen:
                self.files += 1
                return None
            self.seen.add(inode)
        self.disk += st.st_blocks * 512
        if not (stat.S_ISREG(kind) or stat.S_ISDIR(kind)):
            return None  # a symbolic link, FIFO or socket: nothing to strip
        if stat.S_ISDIR(kind) and depth > self.max_depth:
            raise TreeRefused(
                shown, f"the tree is more than {self.max_depth} directories deep, the limit"
            )
        mode = stat.S_IMODE(kind)
        safe, what = neutral_mode(mode)
        if stat.S_ISDIR(kind):
            safe |= 0o700  # owner rwx: the package stays removable
        drop = [x for x in _xattrs(fd, name) if x == CAPABILITY_XATTR or x in ACL_XATTRS]
        if CAPABILITY_XATTR in drop:
            what.append("file capability removed")
        if any(x in ACL_XATTRS for x in drop):
            what.append("ACL removed")
        if safe != mode or drop:
            try:
                _fix(fd, name, st, safe if safe != mode else None, drop)
            except TreeRefused as exc:
                raise TreeRefused(shown, exc.reason) from None
            self.stripped.extend((shown, w) for w in what)
        if not stat.S_ISDIR(kind):
            self.files += 1
            return None
        self.directories += 1
        return os.open(name, _DIR_FLAGS, dir_fd=fd)


def neutralise(root: str, *, owner: int, max_depth: int) -> TreeReport:
    """Make the finished tree at root safe to expose, and measure it, in one walk.

    Strips setuid, setgid and sticky bits and group/world write (neutral_mode), file
    capabilities and POSIX ACLs, and removes device nodes (only a whiteout can be made
    in a user namespace; none belongs in a package). Refuses (TreeRefused) a tree
    deeper than max_depth directories, a root that is no longer a directory, and an
    entry not owned by `owner`: the layer can only create files as its own account,
    so a foreign owner means a hard link to a file from outside the package. FIFOs
    and sockets are harmless and stay. Holds one fd per level (at most max_depth + 2)."""
    parent, name = os.path.split(os.path.abspath(root))
    walk = _Walk(owner, max_depth)
    parent_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    # (fd, relative path, names still to visit); an entry's depth is len(stack)
    stack: list[tuple[int, str, list[str]]] = []
    try:
        st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        if not stat.S_ISDIR(st.st_mode):
            raise TreeRefused("the package directory", "it is no longer a directory")
        root_fd = walk.visit(parent_fd, name, "", 0)
        assert root_fd is not None
        stack.append((root_fd, "", []))
        stack[-1][2].extend(sorted(os.listdir(root_fd), reverse=True))  # popped in order
        while stack:
            fd, rel, names = stack[-1]
            if not names:
                os.close(stack.pop()[0])
                continue
            entry = names.pop()
            key = f"{rel}/{entry}" if rel else entry
            child = walk.visit(fd, entry, key, len(stack))
            if child is not None:
                stack.append((child, key, []))
                stack[-1][2].extend(sorted(os.listdir(child), reverse=True))
    finally:
        for fd, _, _ in stack:
            os.close(fd)
        os.close(parent_fd)
    return TreeReport(walk.files, walk.directories, walk.disk, tuple(walk.stripped))


def _strip_file(fd: int, name: str, st: os.stat_result, root: str, key: str) -> list[str]:
    """Remove setuid and setgid bits and a file capability from the regular file fd/name,
    which was lstat'ed as st (strip_privileges; `key` is its path under root); what was
    stripped. fd stays open: it is the caller's."""
    mode = stat.S_IMODE(st.st_mode)
    what = [
        f"{word} bit stripped"
        for bit, word in ((stat.S_ISUID, "setuid"), (stat.S_ISGID, "setgid"))
        if mode & bit
    ]
    drop = [x for x in _xattrs(fd, name) if x == CAPABILITY_XATTR]
    if drop:
        what.append("file capability removed")
    if what:
        try:
            _fix(fd, name, st, mode & ~0o6000 if mode & 0o6000 else None, drop)
        except TreeRefused as exc:
            raise OSError(errno.EPERM, f"{root}/{key}: {exc.reason}") from None
    return what


def strip_privileges(root: str, *, owner: int, skip: Collection[str] = ()) -> list[tuple[str, str]]:
    """Remove setuid and setgid bits and file capabilities from every regular file of
    `owner` under root (except the top-level names in skip), at any depth, never
    following a link and holding two fds at most (going up is openat("..") checked
    against the identity recorded going down). For the trees of a layer outside the
    package being installed: install.sh can write there too. A directory of the owner's
    it cannot read is given owner rwx and entered: execute permission alone (0111) lets
    anyone reach a file in it by name, so skipping it would skip what it hides."""
    stripped: list[tuple[str, str]] = []
    try:
        parent = os.open(os.path.dirname(root) or "/", _DIR_FLAGS)
        try:
            fd = _open_dir(os.path.basename(root), parent)
        finally:
            os.close(parent)
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return stripped
    st = os.fstat(fd)
    top = sorted(set(os.listdir(fd)) - set(skip), reverse=True)
    levels: list[tuple[str, list[str], int, int]] = [("", top, st.st_dev, st.st_ino)]
    try:
        while levels:
            rel, names, _, _ = levels[-1]
            if not names:
                levels.pop()
                if not levels:
                    break
                up = os.open("..", _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = up
                st = os.fstat(fd)
                if (st.st_dev, st.st_ino) != levels[-1][2:]:
                    raise OSError(errno.EBUSY, f"{root} changed while it was checked")
                continue
            name = names.pop()
            key = f"{rel}/{name}" if rel else name
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if st.st_uid != owner:
                continue
            if stat.S_ISDIR(st.st_mode):
                try:
                    child = _open_dir(name, fd)
                except FileNotFoundError:
                    continue
                now = os.fstat(child)
                if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                    os.close(child)
                    continue
                os.close(fd)
                fd = child
                levels.append((key, sorted(os.listdir(fd), reverse=True), st.st_dev, st.st_ino))
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            stripped.extend((key, w) for w in _strip_file(fd, name, st, root, key))
    finally:
        os.close(fd)
    return stripped
