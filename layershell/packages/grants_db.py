"""Root's own database, <state>/grants.db: what root granted each package (grants.py
says what a grant is and checks each one read back) and which shims it wrote for which
package (exposure/shims.py). Only whoever exposes writes it: root in system mode, the
caller in rootless mode; everyone else opens it read-only.

A row per package, so an install reads and writes its own rows and no others: the JSON
files it replaces (grants.json, shims.json) were parsed and rewritten whole by every
install, which made install #10,001 seven times slower than install #1 (docs/testing.md).
A rollback journal, not WAL: a reader that may not write the directory (otto's
`core list` in system mode) can open it read-only. The JSON files of an older layershell
are read until the first write, which moves them in and removes them.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

from layershell.atomic import read_json_map
from layershell.errors import LayershellError
from layershell.packages.state import uri_path
from layershell.paths import Paths

SCHEMA_VERSION = 1
SCHEMA = (
    "CREATE TABLE grants (name TEXT PRIMARY KEY, body TEXT NOT NULL)",
    "CREATE TABLE shims (name TEXT PRIMARY KEY, package TEXT NOT NULL)",
    "CREATE INDEX shims_by_package ON shims (package)",
    # 'shims' = 'complete': the table names every shim of ours in bin_dir (a full sync
    # rebuilt it, or it began with nothing to know); else a reader looks at the files.
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)
HINT = (
    "move it aside: every grant root made ends (each package gets what the host manifest "
    "says, else nothing); root grants again at its next `sudo core install --config FILE` "
    "or `sudo core expose`, and `core expose --sync` rewrites the shim index"
)
MANY = 64  # more names than this are read in one pass (a listing) than one by one


def _damaged(path: str, exc: BaseException) -> Exception:
    if "full" in str(exc):  # SQLite's "database or disk is full": the disk's, not the file's
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
    if "readonly" in str(exc):  # a write that died left its journal: only a writer rolls back
        return LayershellError(
            f"{path} cannot be read until an interrupted write is rolled back: {exc}",
            "run as root (as its owner in rootless mode): core expose --sync",
        )
    return LayershellError(f"{path} is damaged or unreadable: {exc}", HINT)


def _open_read(path: str) -> sqlite3.Connection | None:
    if not os.path.exists(path):
        return None
    if os.path.exists(path + "-journal") and _may_write(path):
        # A write that was killed left its journal hot, which no read-only open may
        # roll back; and every write reads first. Whoever may write the database (root,
        # the rootless caller) rolls it back here; another reader waits for that.
        rw = sqlite3.connect(path, isolation_level=None, timeout=10)
        try:
            rw.execute("PRAGMA user_version").fetchone()
        finally:
            rw.close()
    uri = f"file:{uri_path(path)}?mode=ro"
    db = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=10)
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version == 0 and db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:
        # The file of a first write that did not commit (a full disk, a crash): not a
        # damaged database but none yet; an older layershell's JSON files still hold
        # root's word, and the next write creates the schema in it.
        db.close()
        return None
    if version > SCHEMA_VERSION:
        db.close()
        raise LayershellError(
            f"{path} has schema version {version}, newer than this layershell knows "
            f"({SCHEMA_VERSION})",
            "upgrade layershell",
        )
    return db


def _may_write(path: str) -> bool:
    return os.access(path, os.W_OK) and os.access(os.path.dirname(path) or ".", os.W_OK)


@contextmanager
def _reading(paths: Paths) -> Iterator[sqlite3.Connection | None]:
    path = paths.grants_db
    try:
        db = _open_read(path)
    except sqlite3.Error as exc:
        raise _damaged(path, exc) from None
    try:
        yield db
    except sqlite3.Error as exc:
        raise _damaged(path, exc) from None
    finally:
        if db is not None:
            db.close()


@contextmanager
def _writing(paths: Paths) -> Iterator[sqlite3.Connection]:
    """One transaction on the database, created (and the old JSON files moved in) on
    first use."""
    path = paths.grants_db
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        db = sqlite3.connect(path, isolation_level=None, timeout=30)
    except sqlite3.Error as exc:
        raise _damaged(path, exc) from None
    try:
        os.chmod(path, 0o644)  # otto's core list reads it, whatever root's umask
        db.execute("PRAGMA synchronous=FULL")
        db.execute("BEGIN IMMEDIATE")
        try:
            moved = _create(paths, db)
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        for old in moved:
            os.unlink(old)  # only once what they held is committed here
    except sqlite3.Error as exc:
        raise _damaged(path, exc) from None
    finally:
        db.close()


def _create(paths: Paths, db: sqlite3.Connection) -> list[str]:
    """The schema, in the transaction of the first write, with what an older
    layershell's grants.json and shims.json held; the files to remove after commit."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version == SCHEMA_VERSION:
        return []
    if version > SCHEMA_VERSION:
        raise LayershellError(
            f"{paths.grants_db} has schema version {version}, newer than this layershell "
            f"knows ({SCHEMA_VERSION})",
            "upgrade layershell",
        )
    for statement in SCHEMA:
        db.execute(statement)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    moved = []
    old = _legacy_grants(paths)
    db.executemany("INSERT INTO grants VALUES (?, ?)", ((k, _body(v)) for k, v in old.items()))
    if os.path.exists(paths.grants_file):
        moved.append(paths.grants_file)
    index = read_json_map(paths.shims_file, strict=False)
    rows = [(n, k) for k, v in index.items() if isinstance(v, list) for n in v]
    db.executemany("INSERT OR REPLACE INTO shims VALUES (?, ?)", rows)
    if os.path.exists(paths.shims_file) or not _any_shim(paths.bin_dir):
        db.execute("INSERT INTO meta VALUES ('shims', 'complete')")
    if os.path.exists(paths.shims_file):
        moved.append(paths.shims_file)
    return moved


def _any_shim(bin_dir: str) -> bool:
    from layershell.exposure import shim_marks

    try:
        return any(shim_marks.owner_of(e.path) for e in os.scandir(bin_dir))
    except OSError:
        return False


def _legacy_grants(paths: Paths) -> dict[str, object]:
    return read_json_map(paths.grants_file, hint=HINT)


def _body(raw: object) -> str:
    return json.dumps(raw, sort_keys=True, separators=(",", ":"))


def decoded(path: str, name: str, body: str) -> object:
    try:
        return json.loads(body)
    except ValueError:
        raise LayershellError(
            f"{path}: the grant of {name!r} is damaged",
            f"install {name} again as root (core install), or remove the entry",
        ) from None


def where(paths: Paths) -> str:
    """The file the grants are read from: grants.db, or an older layershell's JSON."""
    if os.path.exists(paths.grants_db) or not os.path.exists(paths.grants_file):
        return paths.grants_db
    return paths.grants_file


def read(paths: Paths, names: Iterable[str] | None = None) -> dict[str, object]:
    """name -> the grant as written (of `names` only, if given); {} before any."""
    return {n: decoded(paths.grants_db, n, b) for n, b in bodies(paths, names).items()}


def bodies(paths: Paths, names: Iterable[str] | None = None) -> dict[str, str]:
    """name -> the grant's JSON text (of `names` only, if given); {} before any."""
    with _reading(paths) as db:
        if db is None:
            old = _legacy_grants(paths)
            kept = old if names is None else {n: old[n] for n in names if n in old}
            return {n: _body(v) for n, v in kept.items()}
        wanted = None if names is None else set(names)
        if wanted is None or len(wanted) > MANY:
            rows = db.execute("SELECT name, body FROM grants").fetchall()
            rows = [r for r in rows if wanted is None or r[0] in wanted]
        else:  # an indexed lookup each: an install reads its own rows
            sql = "SELECT name, body FROM grants WHERE name = ?"
            rows = [r for n in sorted(wanted) for r in db.execute(sql, (n,)).fetchall()]
    return {str(n): str(b) for n, b in rows}


def write(paths: Paths, changes: Mapping[str, object | None]) -> None:
    """Root's new word about these packages, in one transaction; None drops a grant.
    Nothing is written when nothing changes (a repair must work on a full disk)."""
    if not changes:
        return
    now = read(paths, changes)
    if all(_same(now.get(n), v) for n, v in changes.items()):
        return
    with _writing(paths) as db:
        for name, raw in changes.items():
            if raw is None:
                db.execute("DELETE FROM grants WHERE name = ?", (name,))
            else:
                db.execute("INSERT OR REPLACE INTO grants VALUES (?, ?)", (name, _body(raw)))


def _same(a: object | None, b: object | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and _body(a) == _body(b))


def names(paths: Paths) -> set[str]:
    """Every package root granted something."""
    with _reading(paths) as db:
        if db is None:
            return set(_legacy_grants(paths))
        return {str(r[0]) for r in db.execute("SELECT name FROM grants")}


# -- the shim index ------------------------------------------------------------------------


def shims(paths: Paths, packages: Iterable[str] | None = None) -> dict[str, list[str]]:
    """package -> the shims sync last wrote for it (of `packages`, if given)."""
    out: dict[str, list[str]] = {}
    with _reading(paths) as db:
        if db is None:
            legacy = read_json_map(paths.shims_file, strict=False)
            rows = [(n, k) for k, v in legacy.items() if isinstance(v, list) for n in v]
            wanted = None if packages is None else set(packages)
            rows = [r for r in rows if wanted is None or r[1] in wanted]
        elif packages is None:
            rows = db.execute("SELECT name, package FROM shims").fetchall()
        else:
            rows = []
            for package in sorted(set(packages)):
                sql = "SELECT name, package FROM shims WHERE package = ?"
                rows += db.execute(sql, (package,)).fetchall()
    for name, package in sorted(rows):
        out.setdefault(str(package), []).append(str(name))
    return out


def complete(paths: Paths) -> bool:
    """Whether the index names every shim of ours (else the files must be read)."""
    with _reading(paths) as db:
        if db is None:
            return False
        row = db.execute("SELECT value FROM meta WHERE key = 'shims'").fetchone()
        return row is not None and row[0] == "complete"


def set_shims(paths: Paths, index: Mapping[str, list[str]], packages: set[str] | None) -> None:
    """The shims these packages now have (`packages` None: all of them, and the index
    is then complete); nothing is written when nothing changes."""
    before = shims(paths, packages)
    wanted = {k: sorted(v) for k, v in index.items() if v}
    if before == wanted and (packages is not None or complete(paths)):
        return
    with _writing(paths) as db:
        if packages is None:
            db.execute("DELETE FROM shims")
            db.execute("INSERT OR REPLACE INTO meta VALUES ('shims', 'complete')")
        else:
            for package in packages:
                db.execute("DELETE FROM shims WHERE package = ?", (package,))
        db.executemany(
            "INSERT OR REPLACE INTO shims VALUES (?, ?)",
            ((n, k) for k, v in wanted.items() for n in v),
        )
