"""Issue 11, items 1, 2 and 8: a lost or damaged database loses nothing, every damaged
file is a clear error naming the way out, and `core list` shows what the shims run.

Rootless, as an ordinary identity, with real SQLite files damaged the ways a fault
review found: deleted, emptied, a garbled page, values layershell would not write."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from layershell.packages import state
from tests.packages import ARCH, Repository, program
from tests.support import Identity, needs_root, python_cmd, rootless_pkgs, rootless_store

COUNT = 20  # the acceptance: a database lost with 20 packages installed


def core(
    ident: Identity, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    return ident.run(python_cmd(*args), timeout=180, env=env)


store, pkgs = rootless_store, rootless_pkgs


def listing(ident: Identity) -> list[dict[str, object]]:
    r = core(ident, "list", "--json", "--all")
    assert r.returncode == 0, r.stderr.decode()
    rows: list[dict[str, object]] = json.loads(r.stdout)
    return rows


def without_times(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    return [{k: v for k, v in row.items() if k != "installed_at"} for row in rows]


def shim(ident: Identity, name: str) -> str:
    r = ident.run([name])
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout.decode().strip()


def refused_clearly(r: subprocess.CompletedProcess[bytes], *words: str) -> str:
    err = r.stderr.decode()
    assert r.returncode != 0, err
    assert "Traceback" not in err, err
    for word in words:
        assert word in err, err
    return err


@pytest.fixture
def many(fresh_rootless: Identity, shared_dir: Path) -> tuple[Identity, Repository]:
    """COUNT packages from one manifest, one with a second (inactive) version."""
    repo = Repository(shared_dir / "repo")
    for i in range(COUNT):
        repo.add(f"p{i}", "1", program(f"p{i}", "1"))
    repo.index()
    lines = "".join(f"    - name: p{i}\n      version: '1'\n" for i in range(COUNT))
    config = fresh_rootless.home / "composable.yaml"
    config.write_text(f"composable:\n  default_repository: {repo.file_url}\n  packages:\n{lines}")
    r = core(fresh_rootless, "install", "--config", str(config))
    assert r.returncode == 0, r.stderr.decode()
    repo.add("p0", "2", program("p0", "2"))
    repo.index()
    r = core(fresh_rootless, "install", f"{repo.file_url}/{ARCH}/p0_2")
    assert r.returncode == 0, r.stderr.decode()
    r = core(fresh_rootless, "rollback", "p0")  # active 1, inactive 2: the link decides
    assert r.returncode == 0, r.stderr.decode()
    return fresh_rootless, repo


def test_a_deleted_database_is_refused_everywhere_and_rebuilt(
    many: tuple[Identity, Repository],
) -> None:
    """Defect 1: `rm state.db*` then `core repair` removed every package and its shim."""
    ident, repo = many
    before = listing(ident)
    assert len(before) == COUNT + 1
    for f in store(ident).glob("state.db*"):
        f.unlink()
    db = str(store(ident) / "state.db")
    for args in (
        ("list",),
        ("info", "p3"),
        ("repair",),
        ("install", f"{repo.file_url}/{ARCH}/p0_2"),
        ("remove", "p1"),
        ("update",),
        ("gc",),
        ("rollback", "p0"),
    ):
        refused_clearly(core(ident, *args), db, "core repair --rebuild")
    # Nothing was removed while it was refused.
    trees = {p.name for p in pkgs(ident).iterdir() if "_" in p.name and p.is_dir()}
    assert trees == {f"p{i}_1" for i in range(COUNT)} | {"p0_2"}
    assert shim(ident, "p7") == "p7 1"
    r = core(ident, "repair", "--rebuild")
    assert r.returncode == 0, r.stderr.decode()
    assert f"from {COUNT + 1} per-version records" in r.stdout.decode()
    assert without_times(listing(ident)) == without_times(before)
    assert listing(ident) == before  # the records keep the installed times too
    assert shim(ident, "p0") == "p0 1" and shim(ident, "p19") == "p19 1"
    # And it works on from there.
    r = core(ident, "remove", "p1")
    assert r.returncode == 0, r.stderr.decode()
    assert {str(row["name"]) for row in listing(ident)} == {f"p{i}" for i in range(COUNT)} - {"p1"}


def test_a_zero_length_database_is_not_an_empty_layer(
    many: tuple[Identity, Repository],
) -> None:
    """Defect 1/2: a zero-length database gave `no such table` from core list, and
    `core install` after it reinstalled only the manifest's packages."""
    ident, _ = many
    before = listing(ident)
    db = store(ident) / "state.db"
    for f in store(ident).glob("state.db-*"):
        f.unlink()
    db.write_bytes(b"")
    refused_clearly(core(ident, "list"), str(db), "does not know", "core repair --rebuild")
    refused_clearly(core(ident, "repair"), str(db), "core repair --rebuild")
    assert shim(ident, "p5") == "p5 1"
    r = core(ident, "repair", "--rebuild")
    assert r.returncode == 0, r.stderr.decode()
    backups = sorted(store(ident).glob("state.db.before-rebuild-*"))
    assert [b.name for b in backups if not b.name.endswith(("-wal", "-shm"))], backups
    assert listing(ident) == before


def garble(db: Path) -> None:
    """One page of the table's b-tree overwritten, as a torn write would leave it."""
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page = con.execute("PRAGMA page_size").fetchone()[0]
    root = con.execute("SELECT rootpage FROM sqlite_master WHERE name = 'packages'").fetchone()[0]
    con.close()
    with open(db, "r+b") as f:
        f.seek((root - 1) * page)
        f.write(b"\xa5" * page)


def test_a_garbled_page_is_a_clear_error_with_the_way_out(
    many: tuple[Identity, Repository],
) -> None:
    """Defect 2: `sqlite3.DatabaseError: database disk image is malformed` from list,
    install and repair."""
    ident, repo = many
    before = listing(ident)
    db = store(ident) / "state.db"
    garble(db)
    for args in (("list",), ("install", f"{repo.file_url}/{ARCH}/p0_2"), ("repair",)):
        refused_clearly(core(ident, *args), str(db), "damaged", "core repair --rebuild")
    r = core(ident, "repair", "--rebuild")
    assert r.returncode == 0, r.stderr.decode()
    kept = r.stderr.decode()
    assert "kept as" in kept and "state.db.before-rebuild-" in kept
    assert listing(ident) == before


@pytest.mark.parametrize(
    ("column", "value", "words"),
    [
        ("spec", "not json {", "p3 1"),
        ("files", "many", "p3 1"),
    ],
)
def test_a_bad_column_value_is_a_clear_error(
    many: tuple[Identity, Repository], column: str, value: str, words: str
) -> None:
    """Defect 2: a spec that is not JSON gave JSONDecodeError; a files column with text
    `ValueError: invalid literal for int()`."""
    ident, _ = many
    before = listing(ident)
    db = store(ident) / "state.db"
    con = sqlite3.connect(db)
    with con:
        con.execute(
            f"UPDATE packages SET {column} = ? WHERE name = 'p3'",
            (value,),
        )
    con.close()
    err = refused_clearly(core(ident, "list"), str(db), "damaged", words, "core repair --rebuild")
    assert column in err or "JSON" in err or "int" in err, err
    r = core(ident, "repair", "--rebuild")
    assert r.returncode == 0, r.stderr.decode()
    assert listing(ident) == before


def test_an_unreadable_database_says_so(many: tuple[Identity, Repository]) -> None:
    """Defect 2: the hint "check that it is readable" was given for every problem; for
    a file the account cannot read it is the right one, and it says nothing of rebuild."""
    ident, _ = many
    db = store(ident) / "state.db"
    os.chmod(store(ident), 0o311)  # no read: SQLite cannot open what it cannot list
    os.chmod(db, 0)
    try:
        err = refused_clearly(core(ident, "list"), str(db))
        assert "--rebuild" not in err and "belongs to the layer's account" in err, err
    finally:
        os.chmod(store(ident), 0o755)
        os.chmod(db, 0o644)


def test_a_committed_record_is_never_deleted_for_an_empty_database(
    many: tuple[Identity, Repository],
) -> None:
    """The rule behind defect 1: reconcile deleted every tree the database did not know.
    A tree whose record says it was committed stays, whatever the database says."""
    ident, repo = many
    for f in store(ident).glob("state.db*"):
        f.unlink()
    sqlite3.connect(store(ident) / "state.db").close()  # a new, empty database
    os.chown(store(ident) / "state.db", ident.uid, ident.gid)
    refused_clearly(core(ident, "install", f"{repo.file_url}/{ARCH}/p0_2"), "does not know")
    assert (pkgs(ident) / "p4_1").is_dir() and shim(ident, "p4") == "p4 1"


def test_a_version_never_committed_is_removed(fresh_rootless: Identity, shared_dir: Path) -> None:
    """The other half: a tree whose record says it was never committed (killed before
    the commit) is an interrupted install, removed by the next operation, as before."""
    repo = Repository(shared_dir / "repo")
    repo.add("tool", "1", program("tool", "1"))
    repo.index()
    r = core(
        fresh_rootless, "install", f"{repo.file_url}/{ARCH}/tool_1",
        env={"LAYERSHELL_CRASH_AT": "before-commit"},
    )  # fmt: skip
    assert r.returncode == -signal.SIGKILL
    assert (pkgs(fresh_rootless) / "tool_1").is_dir()
    assert (pkgs(fresh_rootless) / ".records" / "tool_1.installing").is_file()
    r = core(fresh_rootless, "repair")
    assert r.returncode == 0, r.stderr.decode()
    assert "an interrupted install left it" in r.stderr.decode()
    assert not (pkgs(fresh_rootless) / "tool_1").exists()
    assert not list((pkgs(fresh_rootless) / ".records").iterdir())


def test_records_lost_with_the_database_kept_are_written_again(
    many: tuple[Identity, Repository],
) -> None:
    """An install by a layershell before per-version records has none: the next
    operation writes them from the database, so a later loss is still recoverable."""
    ident, _ = many
    before = listing(ident)
    for f in (pkgs(ident) / ".records").iterdir():
        f.unlink()
    r = core(ident, "repair")
    assert r.returncode == 0, r.stderr.decode()
    assert len(list((pkgs(ident) / ".records").glob("*.json"))) == COUNT + 1
    for f in store(ident).glob("state.db*"):
        f.unlink()
    assert core(ident, "repair", "--rebuild").returncode == 0
    assert listing(ident) == before


def test_list_shows_the_version_the_shim_runs(fresh_rootless: Identity, shared_dir: Path) -> None:
    """Defect 8: killed right after the commit, `core list` said 2 while the shim ran 1
    until the next operation. Now list shows what runs; the next operation moves both."""
    repo = Repository(shared_dir / "repo")
    repo.add("tool", "1", program("tool", "1"))
    repo.index()
    assert core(fresh_rootless, "install", f"{repo.file_url}/{ARCH}/tool_1").returncode == 0
    repo.add("tool", "2", program("tool", "2"))
    repo.index()
    r = core(
        fresh_rootless, "install", f"{repo.file_url}/{ARCH}/tool_2",
        env={"LAYERSHELL_CRASH_AT": "committed"},
    )  # fmt: skip
    assert r.returncode == -signal.SIGKILL
    active = {str(row["version"]) for row in listing(fresh_rootless) if row["active"]}
    assert active == {shim(fresh_rootless, "tool").split()[1]} == {"1"}
    assert core(fresh_rootless, "repair").returncode == 0
    active = {str(row["version"]) for row in listing(fresh_rootless) if row["active"]}
    assert active == {shim(fresh_rootless, "tool").split()[1]} == {"2"}


def test_a_migration_keeps_the_old_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before a migration rewrites the only record there is, a dated copy is kept."""
    path = tmp_path / "state.db"
    with state.State(str(path)):
        pass
    monkeypatch.setattr(state, "SCHEMA_VERSION", state.SCHEMA_VERSION + 1)
    monkeypatch.setattr(state, "MIGRATIONS", (*state.MIGRATIONS, "CREATE TABLE later (x INTEGER)"))
    with state.State(str(path)) as db:
        assert db.db.execute("PRAGMA user_version").fetchone()[0] == state.SCHEMA_VERSION
    (kept,) = tmp_path.glob("state.db.schema1-*")
    with sqlite3.connect(kept) as old:
        assert old.execute("PRAGMA user_version").fetchone()[0] == 1
        assert old.execute("SELECT name FROM sqlite_master WHERE name = 'packages'").fetchone()


def test_a_password_an_older_record_kept_is_never_shown(
    many: tuple[Identity, Repository],
) -> None:
    """Defect 6, its trace in records: a layershell that took `user:pass@` URLs kept the
    repository in the spec (state.db is 0644) and `core info --json` printed it."""
    ident, _ = many
    con = sqlite3.connect(store(ident) / "state.db")
    with con:
        con.execute(
            "UPDATE packages SET spec = json_set(spec, '$.repository', ?) WHERE name = 'p3'",
            ("ftp://me:s3cret-Pw@127.0.0.1/repo",),
        )
    con.close()
    for f in (pkgs(ident) / ".records").glob("p3_*"):
        f.unlink()  # so the next operation writes it again from the database
    assert core(ident, "repair").returncode == 0
    for args in (("list", "--json"), ("info", "--json", "p3"), ("info", "p3")):
        r = core(ident, *args)
        assert r.returncode == 0, r.stderr.decode()
        assert b"s3cret" not in r.stdout + r.stderr and b"***@127.0.0.1" in r.stdout, args
    assert "s3cret" not in (pkgs(ident) / ".records" / "p3_1.json").read_text()


@needs_root
def test_a_full_disk_is_recoverable_with_the_tool(small_disk: Identity, shared_dir: Path) -> None:
    """Defect 7: on a 20 MB filesystem a 30 MB package failed but left its `.part` and
    the disk full; `core repair` and any install then failed with a bare "No space
    left on device" (no path, no hint)."""
    ident = small_disk
    repo = Repository(shared_dir / "repo")
    repo.add("small", "1", program("small", "1"))
    repo.add("big", "1", {"bin/big": "#!/bin/sh\necho big\n", "data": os.urandom(30 << 20)})
    repo.index()
    assert core(ident, "install", f"{repo.file_url}/{ARCH}/small_1").returncode == 0
    err = refused_clearly(core(ident, "install", f"{repo.file_url}/{ARCH}/big_1"), "core gc")
    assert "no space left" in err.lower() and "/cache/" in err, err
    partial = store(ident) / "cache" / "partial"
    assert not any(p.stat().st_size for p in partial.iterdir()), "a useless .part was kept"
    # Now the disk is full for another reason; the tool still repairs and explains.
    fill = ident.run(["dd", "if=/dev/zero", f"of={ident.home}/fill", "bs=1M"])
    assert b"No space left" in fill.stderr
    r = core(ident, "repair")
    if r.returncode != 0:  # SQLite found no room for its journal: said exactly so
        refused_clearly(r, "the disk is full", "core gc --partial")
    else:
        assert "matches its record" in r.stdout.decode()
    r = core(ident, "gc", "--partial")  # the way out needs no database
    assert r.returncode == 0, r.stderr.decode()
    err = refused_clearly(core(ident, "remove", "small"), "full", "core gc")
    assert str(store(ident)) in err, err
    assert shim(ident, "small") == "small 1"  # nothing lost
    (ident.home / "fill").unlink()
    assert core(ident, "remove", "small").returncode == 0
    assert listing(ident) == []


def test_gc_removes_stale_partials_and_gc_partial_all_of_them(fresh_rootless: Identity) -> None:
    """Defect 7: `core gc` said "nothing to remove" with a `.part` in cache/partial, and
    stale lock files and 0-byte partials piled up there."""
    partial = store(fresh_rootless) / "cache" / "partial"
    partial.mkdir(parents=True, exist_ok=True)
    old, new = "a" * 64, "b" * 64
    for key in (old, new):
        for suffix, data in ((".part", b"x" * 1000), (".json", b"{}"), (".lock", b"")):
            path = partial / (key + suffix)
            path.write_bytes(data)
            os.chown(path, fresh_rootless.uid, fresh_rootless.gid)
    os.chown(partial, fresh_rootless.uid, fresh_rootless.gid)
    day_ago = time.time() - 2 * 86400
    for suffix in (".part", ".json", ".lock"):
        os.utime(partial / (old + suffix), (day_ago, day_ago))
    r = core(fresh_rootless, "gc")
    assert r.returncode == 0, r.stderr.decode()
    assert sorted(p.name for p in partial.iterdir()) == sorted(
        new + s for s in (".part", ".json", ".lock")
    ), r.stdout.decode()
    assert "nothing to remove" not in r.stdout.decode()
    r = core(fresh_rootless, "gc", "--partial")
    assert r.returncode == 0, r.stderr.decode()
    assert list(partial.iterdir()) == [] and "removed" in r.stdout.decode()


@pytest.mark.parametrize(
    ("name", "words", "commands"),
    [
        ("grants.db", "every grant root made ends", [("list",), ("expose", "--sync")]),
        ("exposure.json", "the shim lists", [("expose", "--sync")]),
    ],
)
def test_a_damaged_json_record_names_itself_and_the_cost_of_the_way_out(
    fresh_rootless: Identity,
    shared_dir: Path,
    name: str,
    words: str,
    commands: list[tuple[str, ...]],
) -> None:
    """Item 2: every damaged file a clear error with a way out, never a traceback."""
    repo = Repository(shared_dir / "repo")
    repo.add("tool", "1", program("tool", "1"))
    repo.index()
    assert core(fresh_rootless, "install", f"{repo.file_url}/{ARCH}/tool_1").returncode == 0
    state_dir = fresh_rootless.home / ".local/share/layershell"
    path = state_dir / name
    path.write_text('{"tool": [unfinished')
    os.chown(path, fresh_rootless.uid, fresh_rootless.gid)
    for args in commands:
        refused_clearly(core(fresh_rootless, *args), str(path), "damaged", words)
    path.unlink()
    assert core(fresh_rootless, "expose", "--sync").returncode == 0
    assert shim(fresh_rootless, "tool") == "tool 1"
