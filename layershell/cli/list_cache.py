"""The last rendered listing, kept in the caller's own cache directory with a fingerprint
of everything it was rendered from, so that `core list` again with nothing changed
prints it without reading a record (scripts and prompts run it often: docs/testing.md).

The fingerprint is the inode, size, mtime and ctime of every file the listing reads:
every layer's database and WAL, /opt/pkgs (its entries include every package's link and
tree) and its records, looked at without following a link (root reads those so); and,
through links, grants.db and its journal (grants and the shim index), bin_dir (the
shims on disk), the host's manifest, the portable record, layers.yaml, /etc/passwd,
/etc/localtime and the zone TZ names, and every module of layershell a listing imports;
with the caller's uid, the mode, the options, the terminal width, TZ and the Python.
Anything that changes one of those files gives it a new ctime (which nobody can set
back), so it is a miss. A listing is kept only when every input is older than RACY
seconds at the fingerprint (a change in the same clock tick could otherwise go unseen),
when the fingerprint taken again after the listing is the same (nothing appeared or
went while it was read), when no row was refused (warned about or not), and when the
shim index names every shim (else the listing read the shim files themselves).

Only a caller that owns the cache directory, which nobody else may write, keeps one or
reads one (root in system mode, the caller in rootless mode: otto's listing in system
mode is rendered every time); the directory is opened without following a link, and a
kept listing is read only if the caller owns it and nobody else may write it."""

from __future__ import annotations

import os
import time

from layershell.layers.model import LayerStack
from layershell.paths import Paths

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

RACY = 0.05  # seconds: file times lag time.time() by at most a clock tick
MAX_BYTES = 64 << 20  # a kept listing larger than this is not kept (10,000 rows: ~7 MB)


def _inputs(paths: Paths, layers: LayerStack) -> tuple[list[str], list[str]]:
    """(files looked at through links, files looked at themselves). Named here rather
    than asked of the modules that own them: a kept listing is printed without
    importing json, sqlite3 or any of those modules (tests/test_list_cache.py checks
    that the names still match theirs)."""
    # The caller's and root's own files, read by the listing through any link.
    followed = [
        paths.grants_db, paths.grants_db + "-journal", paths.bin_dir, paths.manifest_file,
        paths.portables_file, layers.source, "/etc/passwd", "/etc/localtime",
    ]  # fmt: skip
    zone = os.environ.get("TZ", "").lstrip(":")
    if zone and "\0" not in zone:
        followed.append(zone if zone.startswith("/") else f"/usr/share/zoneinfo/{zone}")
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    followed += [os.path.join(package, *m.split("/")) for m in CODE]  # an upgrade
    # A layer's files: a link there is never followed (root reads them without).
    own = [paths.pkgs_dir, os.path.join(paths.pkgs_dir, RECORDS)]
    for layer in layers.layers:
        if layer.level == 1:  # target.installing_layers
            database = os.path.join(paths.store(layer.name), "state.db")
            own += [database, database + "-wal"]
    return followed, own


RECORDS = ".records"  # records.RECORDS
# Every module a fresh listing imports from layershell (tests/test_list_cache.py checks
# the list against one): a change to any of them may render another way.
CODE = (
    "__init__.py", "atomic.py", "errors.py", "frozen.py", "names.py", "paths.py",
    "cli/__init__.py", "cli/list_cache.py", "cli/list_view.py", "cli/quick.py",
    "exposure/__init__.py", "exposure/portable_record.py", "exposure/shim_marks.py",
    "faults.py", "layers/__init__.py", "layers/access.py", "layers/fast.py", "layers/launch.py",
    "layers/model.py", "layers/sandbox.py", "layers/stack.py", "load.py",
    "packages/__init__.py", "packages/grants.py", "packages/grants_db.py",
    "packages/inventory.py", "packages/manifest.py", "packages/manifest_env.py",
    "packages/records.py", "packages/state.py", "packages/target.py",
    "packages/repo/__init__.py", "packages/repo/layout.py", "packages/repo/reference.py",
)  # fmt: skip


def fingerprint(paths: Paths, layers: LayerStack, options: tuple[object, ...]) -> tuple[str, float]:
    """(the fingerprint's text, the newest time among its inputs)."""
    import sys

    lines = [
        repr((os.getuid(), paths.mode, paths.root, os.environ.get("TZ"), sys.version, *options))
    ]
    newest = 0.0
    followed, own = _inputs(paths, layers)
    for path, follow in [(p, True) for p in followed] + [(p, False) for p in own]:
        try:
            st = os.stat(path) if follow else os.lstat(path)
        except OSError:
            lines.append(f"{path!r} -")
            continue
        if st.st_size == 0 and path.endswith(("-wal", "-journal")):
            # An empty WAL holds nothing, and a reader's open of the database makes one:
            # the same as none, or every first listing after a write would be a miss.
            lines.append(f"{path!r} -")
            continue
        newest = max(newest, st.st_mtime, st.st_ctime)
        lines.append(f"{path!r} {st.st_ino} {st.st_size} {st.st_mtime_ns} {st.st_ctime_ns}")
    return "\n".join(lines) + "\n", newest


def _name(as_json: bool, show_all: bool) -> str:
    return f"list-{'json' if as_json else 'table'}{'-all' if show_all else ''}"


def _cache_dir(paths: Paths) -> int | None:
    """The cache directory opened without following a link at its last step, if the
    caller owns it and nobody else may write it (`sudo core --root TREE` must neither
    read nor write a listing through a directory someone else controls)."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(paths.cache_dir, flags)
    except OSError:
        return None
    st = os.fstat(fd)
    if st.st_uid != os.getuid() or st.st_mode & 0o022:
        os.close(fd)
        return None
    return fd


def read(paths: Paths, as_json: bool, show_all: bool, key: str) -> str | None:
    """The kept listing for `key`, if there is one the caller wrote."""
    dir_fd = _cache_dir(paths)
    if dir_fd is None:
        return None
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(_name(as_json, show_all), flags, dir_fd=dir_fd)
    except OSError:
        return None
    finally:
        os.close(dir_fd)
    try:
        st = os.fstat(fd)
        if st.st_uid != os.getuid() or st.st_mode & 0o022 or st.st_size > MAX_BYTES:
            return None
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    head = key.encode()
    if not data.startswith(head):
        return None
    try:
        return data[len(head) :].decode()
    except UnicodeDecodeError:
        return None


def keep(paths: Paths, as_json: bool, show_all: bool, key: str, text: str) -> None:
    """Keep `text` for `key` (render has checked that it may be); best effort."""
    if len(text) > MAX_BYTES:
        return
    from layershell.packages import grants_db

    try:
        if not grants_db.complete(paths):
            return  # the listing read the shim files themselves: not fingerprinted
    except Exception:
        return
    dir_fd = _cache_dir(paths)
    if dir_fd is None:
        return
    name = _name(as_json, show_all)
    tmp = f".{name}.{os.getpid()}.tmp"
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(tmp, flags, 0o644, dir_fd=dir_fd)
        with os.fdopen(fd, "wb") as f:
            f.write(key.encode() + text.encode())
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except (OSError, UnicodeError):  # a path with undecodable bytes is not kept
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except OSError:
            pass
    finally:
        os.close(dir_fd)


def render(
    paths: Paths,
    layers: LayerStack,
    fresh: Callable[..., str],
    *,
    as_json: bool,
    show_all: bool,
    columns: tuple[int, ...],
    width: int | None,
    warn: Callable[[str], None],
) -> str:
    """The listing: the kept one when its fingerprint still holds, else `fresh`'s
    (list_view's), kept for next time when it may be."""
    import sys

    warned: list[str] = []

    def counted(line: str) -> None:
        warned.append(line)
        warn(line)

    shape = (as_json, show_all, columns, width)
    taken = time.time()
    key, newest = fingerprint(paths, layers, shape)
    kept = read(paths, as_json, show_all, key)
    if kept is not None:
        return kept
    inventory = sys.modules.get("layershell.packages.inventory")
    refused = inventory.REFUSED[0] if inventory is not None else 0
    text = fresh(
        paths, layers, as_json=as_json, show_all=show_all, columns=columns, width=width,
        warn=counted,
    )  # fmt: skip
    inventory = sys.modules.get("layershell.packages.inventory")
    refused_now = inventory.REFUSED[0] if inventory is not None else 0
    # Kept only when: no input changed in the clock tick before the fingerprint, none
    # while the listing was read (taken again: a file that appeared and went again
    # would otherwise match), and no row was refused, warned about or not.
    if (
        not warned
        and refused_now == refused
        and newest <= taken - RACY
        and fingerprint(paths, layers, shape)[0] == key
    ):
        keep(paths, as_json, show_all, key, text)
    return text
