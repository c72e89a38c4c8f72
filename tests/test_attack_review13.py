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

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from layershell.errors import LayershellError
from layershell.packages import grants, grants_db
from layershell.paths import Paths
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


# -- 2: a write of grants.db that did not finish --------------------------------------


def _paths(tmp_path: Path) -> Paths:
    home = tmp_path / "home"
    home.mkdir()
    return Paths.rootless(str(home), env={})


def _strict(source: str) -> grants.Grant:
    return grants.Grant(profile="strict", source=source, profile_given=True)


def test_a_first_write_that_failed_leaves_the_old_word_and_room_for_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk was full when root first wrote grants.db (an older layershell's
    grants.json still held its grants): the write fails, and then, with room again,
    the old grants still count and the next write succeeds."""
    paths = _paths(tmp_path)
    os.makedirs(paths.state_dir)
    with open(paths.grants_file, "w") as f:
        json.dump({"old": _strict("core install --profile strict").as_json()}, f)

    real = grants_db._create

    def full(*_args: object) -> list[str]:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), paths.grants_db)

    monkeypatch.setattr(grants_db, "_create", full)
    with pytest.raises(OSError):
        grants.record(paths, {"new": _strict("core install --config x")})
    monkeypatch.setattr(grants_db, "_create", real)
    # Room again: nothing of the failed write is taken for a damaged database.
    assert grants.load(paths)["old"].profile == "strict"
    grants.record(paths, {"new": _strict("core install --config x")})
    table = grants.load(paths)
    assert table["old"].profile == "strict" and table["new"].profile == "strict"
    assert not os.path.exists(paths.grants_file)  # moved in, this time


CRASH = """
import os, sys
sys.path[:0] = [sys.argv[2]]
from layershell.packages import grants_db
from layershell.paths import Paths
paths = Paths.rootless(sys.argv[1], env={})
with grants_db._writing(paths) as db:
    db.execute("PRAGMA cache_size=2")
    body = '{"x": "' + "y" * 2000 + '"}'
    db.executemany(
        "INSERT OR REPLACE INTO grants VALUES (?, ?)", ((f"p{i}", body) for i in range(2000))
    )
    os._exit(9)  # killed inside the transaction, its journal hot
"""


def test_a_write_killed_midway_is_rolled_back_not_a_damaged_database(tmp_path: Path) -> None:
    """Root's write of grants.db killed inside its transaction (the OOM killer, a
    power cut): its journal is hot. The next read of root's is the grants as they were
    before it, not "damaged" for every operation from then on."""
    paths = _paths(tmp_path)
    grants.record(paths, {"kept": _strict("core install --profile strict")})
    source = str(Path(grants_db.__file__).parents[2])
    r = subprocess.run(
        [sys.executable, "-c", CRASH, paths.root, source], capture_output=True, check=False
    )
    assert r.returncode == 9, r.stderr.decode()
    assert os.path.exists(paths.grants_db + "-journal"), "no hot journal: nothing tested"
    try:
        table = grants.load(paths)
    except LayershellError as exc:
        pytest.fail(f"root's record is lost after a crash: {exc.message}")
    assert set(table) == {"kept"} and table["kept"].profile == "strict"
    grants.record(paths, {"next": _strict("core install --config x")})
    assert set(grants.load(paths)) == {"kept", "next"}
