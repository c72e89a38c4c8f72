"""Attacks on grants.db (packages/grants_db.py), the settled stamp (packages/settled.py)
and the reads by name (inventory.installed(only), State.raw(names)), review 13.

Found:

1. Root's read of a layer's record by name trusted the account's schema to compare
   names as layershell does. `WHERE name = ?` uses the column's collation, and the
   record is the account's file: with `name TEXT COLLATE NOCASE` a read of `atkcase`
   also returned the rows of `ATKCASE`, another package, and the filter the full read
   had (`r.name in only`) was gone. Root then took rows[0] for the package it was
   asked about: `core remove --dry-run atkcase` as root said it would remove ATKCASE,
   `core expose NAME --service` checked the units against the other package's image
   and saved them as NAME's, and `_service_follows` judged the wrong package's service
   before pruning. Low: root acts on what it grants that other package anyway.
2. A first write of grants.db that did not finish (a full disk, a damaged grants.json,
   a crash) left a database without its schema: every later read, root's own write
   included (it reads first), took it for a damaged database, so every install, expose
   and listing failed for good, and grants.json (root's earlier word) was no longer
   read; the hint said to move it aside and that every grant would end. A crash inside
   a later write left a hot journal that no read-only open may roll back, with the
   same end. Low: availability of root's record; nothing is granted by it.

Held (no test): the stamp is read only by the account that wrote it (root never runs
pipeline.locked: it hands the work to the account), and install.sh may write only its
own tree, never the store, staging, trash or records, so package content cannot plant
or outlive one; an operation that swallows a package's failure still leaves a stamp only
with staging and trash empty. grants.db lives in root's own state directory, its SQL is
bound, its names are those root wrote; partial shim syncs still check each file's marker
before removing it. The frozen classes refuse assignment as frozen dataclasses do.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tests import support
from tests.packages import tarball

# -- 1: a record whose schema compares names without case -----------------------------

_COLUMNS = (
    "name, version, layer, path, sha256, source, size, files, bytes, spec, installed_at, active"
)
RESCHEMA = f"""
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
coll = sys.argv[2]
db.execute("BEGIN IMMEDIATE")
db.execute("DROP INDEX IF EXISTS packages_one_active")
db.execute("ALTER TABLE packages RENAME TO old_packages")
db.execute(
    "CREATE TABLE packages (name TEXT NOT NULL COLLATE " + coll + ", version TEXT NOT NULL,"
    " layer TEXT NOT NULL, path TEXT NOT NULL, sha256 TEXT NOT NULL, source TEXT NOT NULL,"
    " size INTEGER NOT NULL DEFAULT 0, files INTEGER NOT NULL DEFAULT 0,"
    " bytes INTEGER NOT NULL DEFAULT 0, spec TEXT NOT NULL DEFAULT '{{}}',"
    " installed_at REAL NOT NULL, active INTEGER NOT NULL DEFAULT 0,"
    " PRIMARY KEY (name, version))"
)
db.execute("INSERT INTO packages ({_COLUMNS}) SELECT {_COLUMNS} FROM old_packages")
db.execute("DROP TABLE old_packages")
if coll == "BINARY":
    db.execute("CREATE UNIQUE INDEX packages_one_active ON packages (name) WHERE active = 1")
db.execute("COMMIT")
"""


def test_a_read_by_name_gets_only_that_packages_rows(
    stack: support.SystemStack, shared_dir: Path
) -> None:
    """arne's record compares names without case (a schema of its own): root's read of
    one package by name must still be that package's rows only."""
    for name, version in (("atkcase", "1.0"), ("ATKCASE", "2.0")):
        tarball(shared_dir / f"{name}_{version}.tar.gz", {f"bin/{name}": "#!/bin/sh\necho x\n"})
    shared_dir.chmod(0o755)
    for name, version in (("ATKCASE", "2.0"), ("atkcase", "1.0")):
        r = stack.core("install", str(shared_dir / f"{name}_{version}.tar.gz"))
        assert r.returncode == 0, r.stderr.decode()
    db = str(stack.root / "var/lib/layershell/layers/arne/state.db")
    r = stack.as_user(stack.arne, [sys.executable, "-c", RESCHEMA, db, "NOCASE"])
    assert r.returncode == 0, r.stderr.decode()
    try:
        r = stack.core("remove", "--dry-run", "atkcase")
        out = r.stdout.decode()
        assert r.returncode == 0, r.stderr.decode()
        assert "would remove atkcase 1.0" in out, out
        assert "ATKCASE" not in out, out  # another package: not what root was asked about
        r = stack.core("remove", "--dry-run", "ATKCASE")
        out = r.stdout.decode()
        assert "would remove ATKCASE 2.0" in out and "atkcase" not in out, out
    finally:
        r = stack.as_user(stack.arne, [sys.executable, "-c", RESCHEMA, db, "BINARY"])
        assert r.returncode == 0, r.stderr.decode()
        for name in ("atkcase", "ATKCASE"):
            stack.core("remove", name)
