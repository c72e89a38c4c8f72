"""The image portablectl attaches, built by root from a package, never the package tree
as it is (portable.py calls this; units.py says which units pass).

The package tree (/opt/pkgs/<name>_<version>) belongs to the layer account, which may
change it while root reads it. So root opens the package directory itself with
O_NOFOLLOW, walks from that fd (openat, O_NOFOLLOW everywhere, iteratively: no recursion,
a depth bound), reads only regular files, copies links as links, skips device nodes,
FIFOs and sockets, and drops setuid/setgid/sticky bits, group/world write, file
capabilities and owners (everything is root's). Every unit search path of the package is
left out, and the units that passed the check are written into usr/lib/systemd/system:
from the bytes that were checked, not read again.

After attaching, `verify_attached` compares what systemd has in
/etc/systemd/system.attached with those bytes; portable.py detaches on any difference.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from layershell.errors import LayershellError
from layershell.exposure import units

MAX_DEPTH = 256
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
KEEP_MODE = 0o755  # no setuid/setgid/sticky, no group or world write

# Mount points the portable profiles bind onto (TESTBED.md A.3: missing ones fail).
SKELETON_DIRS = ("usr/lib", "proc", "sys", "dev", "run", "tmp", "var/tmp", "etc")
SKELETON_FILES = ("etc/machine-id", "etc/resolv.conf")
MERGED_USR = (("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib"), ("lib64", "usr/lib64"))


class ImageError(LayershellError):
    exit_code = 1


@dataclass(frozen=True)
class Generated:
    """A code package's image: core's /usr and /etc, its tree at <pkgs_inner>/<dir>."""

    name: str
    version: str
    pkgs_inner: str = "/opt/pkgs"

    @property
    def tree(self) -> str:
        return f"{self.pkgs_inner}/{self.name}_{self.version}"

    def binds(self) -> bytes:
        return (
            b"\n[Service]\n"
            b"# Added by layershell: this image shares core's /usr and /etc, read-only; its\n"
            b"# package is a copy inside the image, where shims see it.\n"
            b"BindReadOnlyPaths=/usr /etc/passwd /etc/group /etc/nsswitch.conf /etc/ld.so.cache\n"
        )


def open_package(path: str) -> int:
    """A directory fd of the package tree at `path`, which must be a directory itself,
    not a link (its parent is root's, /opt/pkgs: only the last component can be raced)."""
    parent, base = os.path.split(os.path.abspath(path))
    parent_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return os.open(base, DIR_FLAGS, dir_fd=parent_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise ImageError(
                f"{path}: not a directory (a link?); not reading it",
                "the package tree must be a plain directory",
            ) from None
        raise ImageError(f"{path}: {exc.strerror}") from None
    finally:
        os.close(parent_fd)


def unit_texts(checked: Mapping[str, bytes], generated: Generated | None) -> dict[str, bytes]:
    """The bytes of each unit as the image has them."""
    if generated is None:
        return dict(checked)
    out = {}
    for unit, data in checked.items():
        end = b"" if data.endswith(b"\n") else b"\n"
        out[unit] = data + end + generated.binds() if unit.endswith(".service") else data
    return out


def _copy_file(src_dir: int, name: str, dst_dir: int, owner: int) -> None:
    try:
        src = os.open(
            name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=src_dir
        )
    except OSError:
        return  # changed under us (now a link, a FIFO): not copied
    try:
        st = os.fstat(src)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != owner:
            return  # only the package's own files: not a hard link to one of root's
        mode = st.st_mode & KEEP_MODE
        dst = os.open(
            name,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            mode,
            dir_fd=dst_dir,
        )
        try:
            while os.sendfile(dst, src, None, 1 << 24) > 0:
                pass
            os.fchmod(dst, mode)  # the umask aside
        finally:
            os.close(dst)
    finally:
        os.close(src)


def copy_tree(src_fd: int, dst_fd: int, skip: Callable[[str], bool] = units.excluded) -> None:
    """Copy the tree at src_fd into the empty directory dst_fd, following no link, and
    leaving out every path `skip` names (relative, '/'-separated)."""
    stack: list[tuple[int, int, str, Iterator[os.DirEntry[str]]]] = []  # one per level

    def push(src: int, dst: int, rel: str) -> None:
        if len(stack) >= MAX_DEPTH:
            os.close(src)
            os.close(dst)
            raise ImageError(f"{rel}: deeper than {MAX_DEPTH} directories; not an image")
        with os.scandir(src) as it:
            listed = list(it)
        stack.append((src, dst, rel, iter(listed)))

    owner = os.fstat(src_fd).st_uid
    push(os.dup(src_fd), os.dup(dst_fd), "")
    try:
        while stack:
            src, dst, base, entries = stack[-1]
            entry = next(entries, None)
            if entry is None:
                os.close(src)
                os.close(dst)
                stack.pop()
                continue
            rel = f"{base}/{entry.name}" if base else entry.name
            if skip(rel):
                continue
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                try:
                    child = os.open(entry.name, DIR_FLAGS, dir_fd=src)
                except OSError:
                    continue  # replaced by a link or removed meanwhile: not copied
                os.mkdir(entry.name, 0o700, dir_fd=dst)
                out = os.open(entry.name, DIR_FLAGS, dir_fd=dst)
                os.fchmod(out, (st.st_mode & KEEP_MODE) | 0o700)
                push(child, out, rel)
            elif stat.S_ISREG(st.st_mode):
                _copy_file(src, entry.name, dst, owner)
            elif stat.S_ISLNK(st.st_mode):
                target = os.readlink(entry.name, dir_fd=src)
                if not units.link_allowed(rel, target):
                    raise ImageError(f"{rel}: a link on systemd's unit search path")
                os.symlink(target, entry.name, dir_fd=dst)
            # device nodes, FIFOs, sockets: never part of an image
    finally:
        for src, dst, _, _ in stack:
            os.close(src)
            os.close(dst)


def _write_units(target: str, texts: Mapping[str, bytes]) -> None:
    directory = os.path.join(target, units.IMAGE_DIR)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    for unit, data in texts.items():
        fd = os.open(
            os.path.join(directory, unit),
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
            0o644,
        )
        with os.fdopen(fd, "wb") as out:
            out.write(data)


def _skeleton(target: str, generated: Generated) -> None:
    for d in (*SKELETON_DIRS, generated.pkgs_inner.lstrip("/")):
        os.makedirs(os.path.join(target, d), mode=0o755, exist_ok=True)
    for name in SKELETON_FILES:
        open(os.path.join(target, name), "w").close()
    for link, dest in MERGED_USR:
        os.symlink(dest, os.path.join(target, link))
    release = (
        f"ID=layershell-{generated.name}\nVERSION_ID={generated.version}\n"
        f'PORTABLE_PRETTY_NAME="{generated.name} {generated.version} (layershell package)"\n'
    )
    with open(os.path.join(target, "usr/lib/os-release"), "w", encoding="utf-8") as out:
        out.write(release)


def build(
    package: str, target: str, checked: Mapping[str, bytes], generated: Generated | None
) -> dict[str, bytes]:
    """Build the image at `target` (a new directory) from the package tree at `package`;
    returns the units as written (what attaching must show)."""
    texts = unit_texts(checked, generated)
    os.mkdir(target, 0o755)
    src = open_package(package)
    try:
        inside = target
        if generated is not None:
            _skeleton(target, generated)
            inside = os.path.join(target, generated.tree.lstrip("/"))
            os.mkdir(inside, 0o755)
            link = os.path.join(target, generated.pkgs_inner.lstrip("/"), generated.name)
            os.symlink(os.path.basename(generated.tree), link)
        dst = os.open(inside, DIR_FLAGS)
        try:
            copy_tree(src, dst)
        finally:
            os.close(dst)
    finally:
        os.close(src)
    os.makedirs(os.path.join(target, "run"), mode=0o755, exist_ok=True)  # a mount point
    _write_units(target, texts)
    found = image_units(target)
    if found != texts:
        raise ImageError(f"{target}: the built image does not hold exactly the checked units")
    return texts


def image_units(image: str) -> dict[str, bytes] | None:
    """The units portabled would find in an image root built by layershell (None when
    anything but plain units in usr/lib/systemd/system is on a unit search path)."""
    fd = os.open(image, DIR_FLAGS)
    try:
        problems, files = units.scan(fd)
    finally:
        os.close(fd)
    if problems or any(f.path != f"{units.IMAGE_DIR}/{f.name}" for f in files):
        return None
    return {f.name: f.data for f in files}


def ensure(
    package: str, target: str, checked: Mapping[str, bytes], generated: Generated | None
) -> dict[str, bytes]:
    """The image at `target`, built now unless one with exactly these units is there."""
    texts = unit_texts(checked, generated)
    if os.path.isdir(target) and not os.path.islink(target) and image_units(target) == texts:
        return texts
    if os.path.lexists(target):
        shutil.rmtree(target)
    tmp = target + ".tmp"
    if os.path.lexists(tmp):
        shutil.rmtree(tmp)
    try:
        build(package, tmp, checked, generated)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        where = f": {exc.filename}" if exc.filename else ""
        raise ImageError(f"{package}: cannot build its image: {exc.strerror}{where}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    os.rename(tmp, target)
    return texts


def attached_names(attached_dir: str) -> set[str]:
    try:
        return set(os.listdir(attached_dir))
    except FileNotFoundError:
        return set()


def verify_attached(
    attached_dir: str, target: str, texts: Mapping[str, bytes], before: set[str]
) -> list[str]:
    """What differs between the attached units and the checked ones ([] when nothing):
    every unit attached with exactly the checked bytes, a .service with its profile's
    drop-in, and nothing else new in attached_dir."""
    wrong = []
    allowed = set(texts) | {f"{u}.d" for u in texts}
    for extra in sorted(attached_names(attached_dir) - before - allowed):
        wrong.append(f"{extra}: attached, but not a unit layershell checked")
    for unit, data in sorted(texts.items()):
        path = os.path.join(attached_dir, unit)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            wrong.append(f"{unit}: not attached")
            continue
        if stat.S_ISLNK(st.st_mode):
            expected = os.path.join(target, units.IMAGE_DIR, unit)
            if os.readlink(path) != expected:
                wrong.append(f"{unit}: links to {os.readlink(path)}, not to {expected}")
                continue
            path = expected
        try:
            with open(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb") as f:
                attached = f.read(units.MAX_UNIT_BYTES + 1)
        except OSError as exc:
            wrong.append(f"{unit}: {exc.strerror}")
            continue
        if attached != data:
            wrong.append(f"{unit}: the attached file is not the unit layershell checked")
        profile = os.path.join(attached_dir, f"{unit}.d", "10-profile.conf")
        if unit.endswith(".service") and not os.path.exists(profile):
            wrong.append(f"{unit}: attached without its profile's drop-in")
    return wrong
