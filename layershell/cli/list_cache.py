"""The last rendered listing, kept in the caller's own cache directory with a fingerprint
of everything it was rendered from, so that `core list` again with nothing changed
prints it without reading a record (scripts and prompts run it often: docs/testing.md).

The fingerprint is taken before the listing is read: the inode, size, mtime and ctime of
every layer's database and WAL, /opt/pkgs (its entries include every package's link and
tree) and its records, grants.db and its journal (grants and the shim index), bin_dir
(the shims on disk), the host's manifest, the portable record, layers.yaml, /etc/passwd,
/etc/localtime, and the code that renders it; with the caller's uid, the mode, the
options, the terminal width and TZ. Anything that changes one of those files gets a new
ctime (which nobody can set back), so it is a miss. A listing is kept only when every
input is older than RACY seconds at the fingerprint (a change in the same clock tick as
the fingerprint would otherwise be unseen), when it printed no warning, and when the shim
index names every shim (else the listing read the shim files themselves).

Only a caller that may write the cache directory keeps one (root in system mode, the
caller in rootless mode: otto's listing in system mode is rendered every time), and a kept
listing is read only if the caller owns it and nobody else may write it."""

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


def _inputs(paths: Paths, layers: LayerStack) -> list[str]:
    # Named here rather than asked of the modules that own them: a kept listing is
    # printed without importing json, sqlite3 or any of those modules (tests/
    # test_list_cache.py checks that the names still match theirs).
    files = [
        paths.grants_db, paths.grants_db + "-journal", paths.bin_dir, paths.manifest_file,
        paths.portables_file, layers.source, paths.pkgs_dir, os.path.join(paths.pkgs_dir, RECORDS),
        "/etc/passwd", "/etc/localtime",
    ]  # fmt: skip
    for layer in layers.layers:
        if layer.level == 1:  # target.installing_layers
            database = os.path.join(paths.store(layer.name), "state.db")
            files += [database, database + "-wal"]
    # The code: an upgrade renders another way.
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    files += [os.path.join(package, *m.split("/")) for m in CODE]
    return files


RECORDS = ".records"  # records.RECORDS
CODE = (
    "cli/list_cache.py", "cli/list_view.py", "packages/inventory.py", "packages/grants.py",
    "packages/grants_db.py", "packages/state.py", "packages/records.py", "frozen.py",
)  # fmt: skip


def fingerprint(paths: Paths, layers: LayerStack, options: tuple[object, ...]) -> tuple[str, float]:
    """(the fingerprint's text, the newest time among its inputs)."""
    lines = [repr((os.getuid(), paths.mode, paths.root, os.environ.get("TZ"), *options))]
    newest = 0.0
    for path in _inputs(paths, layers):
        try:
            st = os.lstat(path)
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


def _file(paths: Paths, as_json: bool, show_all: bool) -> str:
    name = f"list-{'json' if as_json else 'table'}{'-all' if show_all else ''}"
    return os.path.join(paths.cache_dir, name)


def read(paths: Paths, as_json: bool, show_all: bool, key: str) -> str | None:
    """The kept listing for `key`, if there is one the caller wrote."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(_file(paths, as_json, show_all), flags)
    except OSError:
        return None
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


def keep(
    paths: Paths, as_json: bool, show_all: bool, key: str, newest: float, taken: float, text: str
) -> None:
    """Keep `text` for `key`, if it may be (see the module's text); best effort."""
    if newest > taken - RACY or len(text) > MAX_BYTES:
        return
    if not os.access(paths.cache_dir, os.W_OK):
        return
    from layershell.packages import grants_db

    try:
        if not grants_db.complete(paths):
            return
    except Exception:
        return
    path = _file(paths, as_json, show_all)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(key.encode() + text.encode())
        os.replace(tmp, path)
    except (OSError, UnicodeError):  # a path with undecodable bytes is not kept
        try:
            os.unlink(tmp)
        except OSError:
            pass


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
    warned: list[str] = []

    def counted(line: str) -> None:
        warned.append(line)
        warn(line)

    taken = time.time()
    key, newest = fingerprint(paths, layers, (as_json, show_all, columns, width))
    kept = read(paths, as_json, show_all, key)
    if kept is not None:
        return kept
    text = fresh(
        paths, layers, as_json=as_json, show_all=show_all, columns=columns, width=width,
        warn=counted,
    )  # fmt: skip
    if not warned:
        keep(paths, as_json, show_all, key, newest, taken, text)
    return text
