"""The record: what is installed in a layer, in SQLite.

One database per installing layer, in the layer's store and owned by its account, so
the account that installs is the one that writes (root never writes a layer's files;
it runs `core install` as the account). WAL journal, one transaction per operation, a
schema version in PRAGMA user_version with forward migrations. Any other reader (root,
otto) reads a private copy (read_foreign) and never opens the store's files with SQLite.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import stat
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from layershell.errors import LayershellError
from layershell.frozen import Frozen, field

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

SCHEMA_VERSION = 1

# MIGRATIONS[n] takes a database from version n to n+1. Never edit a released entry;
# append a new one.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE packages (
        name           TEXT NOT NULL,
        version        TEXT NOT NULL,
        layer          TEXT NOT NULL,
        path           TEXT NOT NULL,
        sha256         TEXT NOT NULL,
        source         TEXT NOT NULL,
        size           INTEGER NOT NULL DEFAULT 0,
        files          INTEGER NOT NULL DEFAULT 0,
        bytes          INTEGER NOT NULL DEFAULT 0,
        spec           TEXT NOT NULL DEFAULT '{}',
        installed_at   REAL NOT NULL,
        active         INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (name, version)
    );
    CREATE UNIQUE INDEX packages_one_active ON packages (name) WHERE active = 1;
    CREATE TABLE events (
        id      INTEGER PRIMARY KEY,
        at      REAL NOT NULL,
        name    TEXT NOT NULL,
        version TEXT NOT NULL,
        action  TEXT NOT NULL,
        detail  TEXT NOT NULL DEFAULT ''
    );
    """,
)


class Installed(Frozen):
    """One installed version of a package."""

    name: str
    version: str
    layer: str
    path: str
    sha256: str
    source: str
    size: int
    files: int
    bytes: int
    installed_at: float
    active: bool
    spec: dict[str, object] = field(default_factory=dict)

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "version": self.version,
            "layer": self.layer,
            "path": self.path,
            "sha256": self.sha256,
            "source": self.source,
            "size": self.size,
            "files": self.files,
            "bytes": self.bytes,
            "installed_at": self.installed_at,
            "active": self.active,
            "spec": self.spec,
        }


class StateError(LayershellError):
    pass


# Literal statements (no string building): the column list is the same everywhere.
_SELECT = (
    "SELECT name, version, layer, path, sha256, source, size, files, bytes, installed_at,"
    " active, spec FROM packages"
)
_INSERT = (
    "INSERT OR REPLACE INTO packages (name, version, layer, path, sha256, source, size,"
    " files, bytes, installed_at, active, spec) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
)


REBUILD_HINT = (
    "rebuild it from the per-version records: core repair --rebuild (the damaged file "
    "is kept as a dated backup)"
)


class Brief(Frozen):
    """A row's identity and where its tree is (State.brief)."""

    name: str
    version: str
    path: str
    active: bool


def _row(row: tuple[Any, ...]) -> Installed:
    (name, version, layer, path, sha256, source, size, files, nbytes, at, active, spec) = row
    try:
        spec_map = json.loads(str(spec))
        if not isinstance(spec_map, dict):
            raise ValueError("not a JSON object")
        return Installed(
            str(name), str(version), str(layer), str(path), str(sha256), str(source),
            int(size), int(files), int(nbytes), float(at), bool(active), spec_map,
        )  # fmt: skip
    except (ValueError, TypeError, RecursionError) as exc:
        raise _BadValue(f"the row of {name!s:.64} {version!s:.64}: {exc}") from None


# A constraint or an API misuse is layershell's own mistake, not a damaged file.
_BUGS = (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError)


class _BadValue(Exception):
    """A value in a row that layershell would not have written (State._query says so)."""


def _trouble(path: str, exc: BaseException) -> StateError:
    """The error for a database that cannot be used, with the way out that fits."""
    text = str(exc)
    if isinstance(exc, PermissionError) or "readonly" in text or "unable to open" in text:
        if not os.path.exists(path):
            return StateError(
                f"the state database {path} does not exist",
                "if packages were installed, rebuild it: core repair --rebuild",
            )
        return StateError(
            f"cannot open the state database {path}: {text}",
            "check that it belongs to the layer's account and that its directory is "
            "readable (and writable to install)",
        )
    if "disk I/O error" in text and not _full(path):
        return StateError(
            f"the state database {path}: {text}",
            "check the device (dmesg); if the file itself is damaged: core repair --rebuild",
        )
    full = "disk is full" in text or "disk I/O error" in text
    if full or getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
        return StateError(
            f"the state database {path} cannot be used: the disk is full (SQLite needs "
            "room for its journal even to read it)",
            f"free space on the filesystem of {os.path.dirname(path)}: core gc --partial, "
            "core gc, core remove NAME; nothing was changed",
        )
    return StateError(f"the state database {path} is damaged: {text}", REBUILD_HINT)


def _full(path: str) -> bool:
    """Whether the filesystem of path has (almost) no room left: SQLite reports a full
    tmpfs as an I/O error when it cannot grow its shared-memory file."""
    try:
        st = os.statvfs(os.path.dirname(path) or ".")
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < (1 << 20)


def backup_name(path: str, why: str) -> str:
    """<path>.<why>-<UTC time>: a dated copy kept before a migration or a rebuild."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    name, n = f"{path}.{why}-{stamp}", 1
    while os.path.lexists(name):
        name, n = f"{path}.{why}-{stamp}.{n}", n + 1
    return name


def uri_path(path: str) -> str:
    """A path as SQLite's file: URI needs it: only "%", "?" and "#" mean something
    there (urllib.parse would cost a listing its import)."""
    return path.replace("%", "%25").replace("?", "%3f").replace("#", "%23")


def _open_readonly(path: str) -> sqlite3.Connection:
    """Another account reading a layer's database (core list as otto): a WAL database
    cannot be opened read-only when its -shm file is missing and its directory is not
    writable, so fall back to an immutable snapshot, which needs neither."""
    if not os.path.exists(path):
        raise sqlite3.OperationalError("unable to open database file")
    quoted = uri_path(path)
    db = sqlite3.connect(f"file:{quoted}?mode=ro", uri=True, isolation_level=None, timeout=30)
    try:
        db.execute("PRAGMA user_version").fetchone()
        return db
    except sqlite3.OperationalError:
        db.close()
    return sqlite3.connect(
        f"file:{quoted}?mode=ro&immutable=1", uri=True, isolation_level=None, timeout=30
    )


# Another account's record is read from a private copy (read_foreign): bounded, so a
# huge or sparse file cannot fill root's disk or memory.
MAX_FOREIGN_BYTES = 64 << 20
FOREIGN_SECONDS = 10.0  # SQLite work allowed on a copy (a hostile schema cannot loop)


def _open_copy(dir_fd: int, name: str, owner: int, dest: str, required: bool) -> bool:
    """Copy DIR/NAME to `dest` if it is a regular file owned by `owner`, opened without
    following a link, never written; False if it does not exist (and is not required)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
    try:
        fd = os.open(name, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        if required:
            raise
        return False
    except OSError as exc:
        import errno

        if exc.errno == errno.ELOOP:
            raise StateError(
                f"{name} in the layer's store is a symbolic link: not followed (a record is "
                "a plain file)",
                "the layer's account must put its own database back (or remove the link)",
            ) from None
        raise StateError(f"{name}: cannot be read ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as src:
        st = os.fstat(src.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_uid != owner:
            raise StateError(
                f"{name} in the layer's store is not a regular file owned by the layer's "
                f"account (uid {owner}): not read",
                "the layer's account must put its own database back",
            )
        if st.st_size > MAX_FOREIGN_BYTES:
            raise StateError(f"{name}: larger than {MAX_FOREIGN_BYTES >> 20} MiB")
        with open(dest, "xb") as out:
            while chunk := src.read(1 << 20):  # it may grow while being read
                out.write(chunk)
                if out.tell() > MAX_FOREIGN_BYTES:
                    raise StateError(f"{name}: larger than {MAX_FOREIGN_BYTES >> 20} MiB")
    return True


def read_foreign(store: str, owner: int) -> State | None:
    """Another account's record, for reading (root's view of a layer; otto's core list).

    The store is the account's: it can replace state.db with a link, or plant
    state.db-wal/-shm links to host files, which SQLite would open (-shm read-write) or
    create as the reader. So nothing in the store is opened by SQLite: state.db and its
    WAL are opened here with O_NOFOLLOW below the store's directory fd, checked to be
    regular files the account owns, and copied into a private temporary directory
    where SQLite opens them (and replays the WAL, which `immutable=1` through
    /proc/self/fd would have ignored: a commit lives in the WAL until a checkpoint).
    The copy is opened defensively (no mmap, cell size checks, untrusted schema, a
    work budget), and every row is still only data (see cli/listing.py).
    Cost: one copy of the file; measured for a record of 1,000 packages (260 kB):
    4.8 ms against 2.1 ms opening it in place. Running a listing as the account instead
    would cost a Python start (~90 ms) per read, and root reads several times per
    operation. None when the layer has no record yet."""
    try:
        dir_fd = os.open(store, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(f"{store}: not opened as a directory ({exc.strerror})") from None
    import shutil
    import tempfile

    tmp = tempfile.mkdtemp(prefix="layershell-record-")
    try:
        try:
            _open_copy(dir_fd, "state.db", owner, os.path.join(tmp, "state.db"), True)
        except FileNotFoundError:
            shutil.rmtree(tmp, ignore_errors=True)
            return None
        _open_copy(dir_fd, "state.db-wal", owner, os.path.join(tmp, "state.db-wal"), False)
        return State(os.path.join(tmp, "state.db"), readonly=True, copy_of=store, scratch=tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        os.close(dir_fd)


def _defensive(db: sqlite3.Connection) -> None:
    """SQLite's advice for reading a database file an attacker may have written
    (sqlite.org/security.html)."""
    deadline = time.monotonic() + FOREIGN_SECONDS
    db.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
    setlimit = getattr(db, "setlimit", None)  # Python 3.11+
    if setlimit is not None:
        setlimit(getattr(sqlite3, "SQLITE_LIMIT_LENGTH", 0), 1 << 20)  # one value at most
    for pragma in ("mmap_size=0", "cell_size_check=ON", "trusted_schema=OFF"):
        db.execute(f"PRAGMA {pragma}")
    kind = db.execute("SELECT type FROM sqlite_master WHERE name = 'packages'").fetchone()
    if kind is not None and kind[0] != "table":
        raise sqlite3.DatabaseError("'packages' is not a table")


class State:
    """A layer's database. Use as a context manager; write inside `transaction()`."""

    def __init__(
        self,
        path: str,
        *,
        readonly: bool = False,
        copy_of: str | None = None,
        scratch: str | None = None,
    ) -> None:
        self.path = copy_of or path
        self._scratch = scratch
        try:
            if scratch is not None:
                # A private copy of another account's record (read_foreign).
                self.db = sqlite3.connect(path, isolation_level=None, timeout=0)
                _defensive(self.db)
            elif readonly:
                self.db = _open_readonly(path)
            else:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                self.db = sqlite3.connect(path, isolation_level=None, timeout=30)
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=FULL")
                self._migrate()
        except (sqlite3.Error, OSError) as exc:
            raise _trouble(self.path, exc) from None
        if readonly:
            version = self._query("PRAGMA user_version")[0][0]
            if version > SCHEMA_VERSION:
                raise StateError(
                    f"{self.path} has schema version {version}, newer than this layershell "
                    f"knows ({SCHEMA_VERSION})",
                    "upgrade layershell",
                )

    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StateError(
                f"{self.path} has schema version {version}, newer than this layershell "
                f"knows ({SCHEMA_VERSION})",
                "upgrade layershell",
            )
        if 0 < version < SCHEMA_VERSION:
            # A migration rewrites the only record there is: keep the old one first.
            kept = backup_name(self.path, f"schema{version}")
            with sqlite3.connect(kept) as copy:
                self.db.backup(copy)
            copy.close()
        for target in range(version, SCHEMA_VERSION):
            with self.transaction():
                # executescript() would COMMIT on its own; run statement by statement
                # so the migration and its version bump are one transaction.
                for statement in MIGRATIONS[target].split(";"):
                    if statement.strip():
                        self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version = {target + 1}")

    def close(self) -> None:
        self.db.close()
        if self._scratch is not None:
            import shutil

            shutil.rmtree(self._scratch, ignore_errors=True)

    def __enter__(self) -> State:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT: all of an operation's writes, or none."""
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise _trouble(self.path, exc) from None
        try:
            yield self.db
        except BaseException as exc:
            try:
                self.db.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # SQLite rolled back already (a full disk, an I/O error)
            if isinstance(exc, sqlite3.Error) and not isinstance(exc, _BUGS):
                raise _trouble(self.path, exc) from None
            raise
        try:
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            try:
                self.db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise _trouble(self.path, exc) from None

    # -- queries -----------------------------------------------------------------------

    def _query(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        """Every row of a query; a database that cannot answer is a StateError saying
        what to do, never a traceback. A database without tables (created, never
        migrated: an empty file) has no packages; whether it should have is for
        reconcile and the readers to tell, from the per-version records."""
        try:
            return list(self.db.execute(sql, args))
        except sqlite3.Error as exc:
            if "no such table" in str(exc) and self._empty():
                return []
            raise _trouble(self.path, exc) from None

    def _empty(self) -> bool:
        try:
            return not self.db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        except sqlite3.Error:
            return False

    def _rows(self, sql: str, args: tuple[object, ...] = ()) -> list[Installed]:
        try:
            return [_row(r) for r in self._query(sql, args)]
        except _BadValue as exc:
            message = f"the state database {self.path} is damaged: {exc}"
            raise StateError(message, REBUILD_HINT) from None

    def raw(self, names: Iterable[str] | None = None) -> list[tuple[Any, ...]]:
        """Every row (of `names` only, if given) as SQLite returns it (for a reader that
        checks each field itself)."""
        if names is None:
            return self._query(_SELECT + " ORDER BY name, installed_at")
        rows: list[tuple[Any, ...]] = []
        for name in sorted(set(names)):  # an indexed lookup each: no scan of the rest
            rows += self._query(_SELECT + " WHERE name = ? ORDER BY installed_at", (name,))
        return rows

    def all(self, names: Iterable[str] | None = None) -> list[Installed]:
        """Every row, or those of `names` (an operation reads the packages it changes)."""
        if names is None:
            return self._rows(_SELECT + " ORDER BY name, installed_at")
        rows: list[Installed] = []
        for name in sorted(set(names)):
            rows += self.versions(name)
        return rows

    def keys(self) -> set[str]:
        """Every <name>_<version> recorded (what reconcile and readers compare the
        per-version records with), without reading the rest of the rows."""
        return {f"{n}_{v}" for n, v in self._query("SELECT name, version FROM packages")}

    def brief(self) -> list[Brief]:
        """name, version, path and active of every row: what reconcile checks the tree
        against, without decoding each spec (it runs before every operation)."""
        return [
            Brief(str(n), str(v), str(p), bool(a))
            for n, v, p, a in self._query("SELECT name, version, path, active FROM packages")
        ]

    def total_bytes(self) -> int:
        """What the recorded trees take, by their records (the layer's disk budget)."""
        return int(self._query("SELECT COALESCE(SUM(bytes), 0) FROM packages")[0][0])

    def versions(self, name: str) -> list[Installed]:
        return self._rows(_SELECT + " WHERE name = ? ORDER BY installed_at", (name,))

    def active(self, name: str) -> Installed | None:
        rows = self._rows(_SELECT + " WHERE name = ? AND active = 1", (name,))
        return rows[0] if rows else None

    def get(self, name: str, version: str) -> Installed | None:
        rows = self._rows(_SELECT + " WHERE name = ? AND version = ?", (name, version))
        return rows[0] if rows else None

    def paths(self) -> set[str]:
        return {str(r[0]) for r in self._query("SELECT path FROM packages")}

    # -- writes (call inside transaction()) ----------------------------------------------

    def record(self, pkg: Installed, *, activate: bool) -> None:
        if activate:
            self.db.execute("UPDATE packages SET active = 0 WHERE name = ?", (pkg.name,))
        self.db.execute(
            _INSERT,
            (
                pkg.name, pkg.version, pkg.layer, pkg.path, pkg.sha256, pkg.source,
                pkg.size, pkg.files, pkg.bytes, pkg.installed_at, int(activate),
                json.dumps(pkg.spec, sort_keys=True),
            ),
        )  # fmt: skip
        self.event(pkg.name, pkg.version, "install", pkg.source)

    def forget(self, name: str, version: str | None = None) -> None:
        if version is None:
            self.db.execute("DELETE FROM packages WHERE name = ?", (name,))
        else:
            self.db.execute("DELETE FROM packages WHERE name = ? AND version = ?", (name, version))
        self.event(name, version or "*", "remove")

    def event(self, name: str, version: str, action: str, detail: str = "") -> None:
        self.db.execute(
            "INSERT INTO events (at, name, version, action, detail) VALUES (?,?,?,?,?)",
            (time.time(), name, version, action, detail),
        )

    def events(self, name: str | None = None) -> list[tuple[float, str, str, str, str]]:
        query = "SELECT at, name, version, action, detail FROM events"
        rows = (
            self._query(query + " WHERE name = ? ORDER BY id", (name,))
            if name
            else self._query(query + " ORDER BY id")
        )
        return [(float(a), str(n), str(v), str(ac), str(d)) for a, n, v, ac, d in rows]
