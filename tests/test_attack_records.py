"""A review of the per-version records (records.py, rebuild.py), written as the attacks:
records damaged the ways a disk or a hand damages them, then `core repair --rebuild`
and `core list` (rootless, as an ordinary identity); a full disk in the middle of a
removal; and, in system mode, what arne plants in /opt/pkgs/.records for root to read."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests import support
from tests.packages import ARCH, Repository, program, tarball
from tests.support import Identity, needs_root, python_cmd, rootless_pkgs, rootless_store


def core(
    ident: Identity, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    return ident.run(python_cmd(*args), timeout=180, env=env)


store, pkgs = rootless_store, rootless_pkgs


def record(ident: Identity, key: str) -> Path:
    return pkgs(ident) / ".records" / f"{key}.json"


def lose_database(ident: Identity) -> None:
    for f in store(ident).glob("state.db*"):
        f.unlink()


def names(ident: Identity) -> set[str]:
    r = core(ident, "list", "--json", "--all")
    assert r.returncode == 0, r.stderr.decode()
    return {f"{row['name']}_{row['version']}" for row in json.loads(r.stdout)}


def no_traceback(r: subprocess.CompletedProcess[bytes]) -> str:
    err = r.stderr.decode()
    assert "Traceback" not in err, err
    return err


@pytest.fixture
def two(fresh_rootless: Identity, shared_dir: Path) -> Identity:
    """Two packages installed, good_1 and bad_1, each with its committed record."""
    repo = Repository(shared_dir / "repo")
    for name in ("good", "bad"):
        repo.add(name, "1", program(name, "1"))
    repo.index()
    for name in ("good", "bad"):
        r = core(fresh_rootless, "install", f"{repo.file_url}/{ARCH}/{name}_1")
        assert r.returncode == 0, r.stderr.decode()
    assert record(fresh_rootless, "bad_1").is_file()
    return fresh_rootless


def damage(ident: Identity, key: str, **fields: object) -> bytes:
    """Set fields of a record (raw JSON text for the values); the old text is returned."""
    path = record(ident, key)
    old = path.read_bytes()
    text = old.decode()
    data = json.loads(text)
    for field in fields:
        data[field] = f"@{field}@"
    text = json.dumps(data)
    for field, raw in fields.items():
        text = text.replace(f'"@{field}@"', str(raw))
    path.write_text(text)
    return old


# -- a damaged record: named by the rebuild, which is then not a loop ----------------


def test_a_damaged_record_is_named_and_rebuild_is_no_loop(two: Identity) -> None:
    """Found: with one record damaged, `core repair --rebuild` printed only "the state
    database does not know 1 installed version (bad_1) ... hint: core repair
    --rebuild" (reconcile's refusal, raised before the rebuild said what it could not
    use): the damage was never named, and the hint sent the user round in a circle."""
    ident = two
    good = record(ident, "bad_1").read_bytes()
    record(ident, "bad_1").write_bytes(b'{"format": 1, "name": "bad"')  # cut short
    lose_database(ident)
    r = core(ident, "repair", "--rebuild")
    err = no_traceback(r)
    assert r.returncode != 0
    assert f"{record(ident, 'bad_1')} is damaged" in err, err
    assert "core repair --rebuild" not in err.split("is damaged", 1)[0], err
    assert (pkgs(ident) / "bad_1").is_dir() and (pkgs(ident) / "good_1").is_dir()
    # Once the file is mended, the same command finishes the job.
    record(ident, "bad_1").write_bytes(good)
    r = core(ident, "repair", "--rebuild")
    assert r.returncode == 0, r.stderr.decode()
    assert names(ident) == {"good_1", "bad_1"}


@pytest.mark.parametrize(
    "fields",
    [
        {"spec": "[" * 100_000 + "]" * 100_000},  # deeper than Python's JSON parser goes
        {"size": 10**30},  # more than SQLite's integers hold
        {"files": -1},
        {"installed_at": "1e300"},  # core list: timestamp out of range
        {"installed_at": "Infinity"},
        {"installed_at": "NaN"},
        {"sha256": '"not hex"'},
    ],
    ids=["deep", "huge", "negative", "far-future", "infinity", "nan", "sha256"],
)
def test_a_record_with_values_layershell_never_writes_is_damaged(
    two: Identity, fields: dict[str, object]
) -> None:
    """Found: a record nested deeper than the JSON parser recurses, or a size SQLite
    cannot hold, was a traceback from `core repair --rebuild` (RecursionError,
    OverflowError); an installed_at of 1e300, Infinity or NaN was rebuilt, and every
    `core list` after it was a traceback from time.localtime."""
    ident = two
    damage(ident, "bad_1", **fields)
    lose_database(ident)
    r = core(ident, "repair", "--rebuild")
    err = no_traceback(r)
    assert r.returncode != 0 and f"{record(ident, 'bad_1')} is damaged" in err, err
    r = core(ident, "list")
    no_traceback(r)
    assert (pkgs(ident) / "bad_1").is_dir()


def test_a_record_naming_another_layer_is_not_skipped_silently(two: Identity) -> None:
    """Found: a record whose `layer` is not this layer's (the layer was renamed in
    layers.yaml, or the field was damaged) was skipped by the rebuild without a word,
    and reconcile then refused with "core repair --rebuild": the rebuild could never
    finish. The tree is in this layer's package directory, so it is this layer's, as
    its path already is whatever the record says."""
    ident = two
    damage(ident, "bad_1", layer='"elsewhere"', path='"/somewhere/else"')
    lose_database(ident)
    r = core(ident, "repair", "--rebuild")
    assert r.returncode == 0, no_traceback(r)
    assert names(ident) == {"good_1", "bad_1"}
    r = core(ident, "list", "--json")
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert rows["bad"]["layer"] == rows["good"]["layer"]
    assert rows["bad"]["path"] == str(pkgs(ident) / "bad_1")


def test_text_in_a_record_does_not_reach_the_terminal(two: Identity) -> None:
    ident = two
    damage(ident, "bad_1", name=json.dumps("bad\x1b]0;pwned\x07"))
    lose_database(ident)
    r = core(ident, "repair", "--rebuild")
    err = no_traceback(r)
    assert r.returncode != 0 and "\x1b" not in err + r.stdout.decode(), err
    assert "is damaged" in err


def test_a_stale_database_is_rebuilt_as_the_disk_is(
    fresh_rootless: Identity, shared_dir: Path
) -> None:
    """Held (no fix needed): an old copy of the database put back (it knows a version
    removed since and not one installed since) is refused, and the rebuild gives what
    is on disk: nothing removed comes back, nothing installed is lost."""
    ident = fresh_rootless
    repo = Repository(shared_dir / "repo")
    for name in ("old", "new"):
        repo.add(name, "1", program(name, "1"))
    repo.index()
    assert core(ident, "install", f"{repo.file_url}/{ARCH}/old_1").returncode == 0
    assert core(ident, "repair").returncode == 0  # its last connection checkpoints
    stale = shared_dir / "stale.db"
    shutil.copy2(store(ident) / "state.db", stale)
    assert core(ident, "install", f"{repo.file_url}/{ARCH}/new_1").returncode == 0
    assert core(ident, "remove", "old").returncode == 0
    lose_database(ident)
    shutil.copy2(stale, store(ident) / "state.db")
    os.chown(store(ident) / "state.db", ident.uid, ident.gid)
    r = core(ident, "list")
    assert r.returncode != 0 and "new_1" in no_traceback(r)
    r = core(ident, "repair", "--rebuild")
    assert r.returncode == 0, no_traceback(r)
    assert names(ident) == {"new_1"} and not (pkgs(ident) / "old_1").exists()


# -- a full disk in the middle of a removal -------------------------------------------


@needs_root
def test_a_removal_the_database_refused_keeps_its_record_committed(
    small_disk: Identity, shared_dir: Path
) -> None:
    """Found: `core remove` on a full disk renamed the record to `.removing`, then the
    database refused the change ("the disk is full"): the version stayed installed, in
    the database, with a record saying it was being removed. A database lost after that
    (before any other operation) was rebuilt without it, and its tree was deleted."""
    ident = small_disk
    repo = Repository(shared_dir / "repo")
    repo.add("small", "1", program("small", "1"))
    repo.index()
    assert core(ident, "install", f"{repo.file_url}/{ARCH}/small_1").returncode == 0
    fill = ident.run(["dd", "if=/dev/zero", f"of={ident.home}/fill", "bs=1M"])
    assert b"No space left" in fill.stderr
    r = core(ident, "remove", "small")
    assert r.returncode != 0 and "full" in no_traceback(r)
    assert (pkgs(ident) / "small_1").is_dir()
    assert sorted(os.listdir(pkgs(ident) / ".records")) == ["small_1.json"]
    (ident.home / "fill").unlink()
    lose_database(ident)
    r = core(ident, "repair", "--rebuild")
    assert r.returncode == 0, no_traceback(r)
    assert names(ident) == {"small_1"} and (pkgs(ident) / "small_1").is_dir()


@needs_root
def test_a_rebuild_on_a_full_disk_is_a_clear_error_and_can_be_run_again(
    small_disk: Identity, shared_dir: Path
) -> None:
    """Held (no fix needed): on a full disk the rebuild cannot create the new database;
    it says so with the way out, deletes nothing, and once there is room it finishes."""
    ident = small_disk
    repo = Repository(shared_dir / "repo")
    repo.add("small", "1", program("small", "1"))
    repo.index()
    assert core(ident, "install", f"{repo.file_url}/{ARCH}/small_1").returncode == 0
    lose_database(ident)
    fill = ident.run(["dd", "if=/dev/zero", f"of={ident.home}/fill", "bs=1M"])
    assert b"No space left" in fill.stderr
    for _ in range(2):
        r = core(ident, "repair", "--rebuild")
        err = no_traceback(r)
        assert r.returncode != 0 and "full" in err, err
    assert (pkgs(ident) / "small_1").is_dir()
    (ident.home / "fill").unlink()
    r = core(ident, "repair", "--rebuild")
    assert r.returncode == 0, no_traceback(r)
    assert names(ident) == {"small_1"}


# -- system mode: what arne plants in /opt/pkgs/.records, read by root -----------------


def as_arne_sh(s: support.SystemStack, script: str) -> None:
    r = s.as_user(s.arne, ["sh", "-c", script])
    assert r.returncode == 0, r.stderr.decode()


def test_planted_records_make_root_follow_read_or_hang_on_nothing(
    stack: support.SystemStack, shared_dir: Path
) -> None:
    """Held (no fix needed): root reads only the names in .records (one listdir, no
    link followed), lstat()s a tree, and never opens a record; a committed record the
    database does not know is a clear refusal that changes nothing."""
    files: dict[str, bytes | str] = {"bin/atkrec": "#!/bin/sh\necho atkrec\n"}
    path = tarball(shared_dir / "atkrec_1.0.tar.gz", files)
    shared_dir.chmod(0o755)
    assert stack.core("install", str(path)).returncode == 0
    opt = stack.root / "opt/pkgs"
    recs = opt / ".records"
    canary = shared_dir / "root-only"
    canary.mkdir()
    (canary / "host_1.json").write_text("root's own\n")
    before = sorted(os.listdir(canary))
    try:
        # FIFOs, links and odd names as records; a committed record whose "tree" is a
        # link to a host directory; none of it may make root hang, follow or read.
        as_arne_sh(
            stack,
            f"cd {recs} && mkfifo fifo_1.json && ln -s /etc/shadow shadow_1.json"
            f" && ln -s /etc {opt}/shadow_1 && printf x > 'nl_1\n.json'"
            f" && mkfifo {opt}/fifo_1",
        )
        for args in (("list", "--json"), ("info", "atkrec"), ("expose", "--sync")):
            r = stack.core(*args)
            assert r.returncode == 0 and "Traceback" not in r.stderr.decode(), (args, r)
        assert (stack.root / "usr/local/bin/atkrec").exists()
        # A committed record with a real tree the database does not know: refused.
        as_arne_sh(stack, f"mkdir {opt}/ghost_1 && printf '{{}}' > {recs}/ghost_1.json")
        for verb in ("list", "expose --sync", "repair"):
            r = stack.core(*verb.split())
            err = r.stderr.decode()
            assert r.returncode != 0 and "ghost_1" in err and "Traceback" not in err, (verb, err)
        assert (opt / "ghost_1").is_dir() and (stack.root / "usr/local/bin/atkrec").exists()
        # The rebuild root asks for runs as arne and says what it could not use.
        r = stack.core("repair", "--rebuild")
        err = r.stderr.decode()
        assert r.returncode != 0 and "ghost_1.json is damaged" in err and "Traceback" not in err
        assert (opt / "ghost_1").is_dir()
        # .records itself a link to root's directory: root lists nothing through it.
        as_arne_sh(stack, f"rm -rf {opt}/ghost_1 {recs}.mine; mv {recs} {recs}.mine")
        as_arne_sh(stack, f"ln -s {canary} {recs}")
        r = stack.core("list", "--json")
        assert r.returncode == 0, r.stderr.decode()
        assert [x["name"] for x in json.loads(r.stdout)] == ["atkrec"]
        assert sorted(os.listdir(canary)) == before
    finally:
        as_arne_sh(
            stack,
            f"rm -f {recs}; [ -d {recs}.mine ] && mv {recs}.mine {recs}; cd {recs} &&"
            f" rm -f fifo_1.json shadow_1.json 'nl_1\n.json' ghost_1.json {opt}/shadow_1"
            f" {opt}/fifo_1; rm -rf {opt}/ghost_1",
        )
    r = stack.core("repair")
    assert r.returncode == 0, r.stderr.decode()
    assert stack.core("remove", "atkrec").returncode == 0


def test_a_row_root_refuses_is_not_a_version_the_database_lost(
    stack: support.SystemStack, shared_dir: Path
) -> None:
    """Found: a row of arne's database that root's listing refuses (a source that is not
    printable, two active versions) counted as a version the database does not know:
    root's `core list` and every root operation after it (install, remove, expose)
    stopped with "the database was lost ... core repair --rebuild". The row is warned
    about and left out, as before the records; everything else goes on."""
    for name in ("atkrow", "atkother"):
        tarball(shared_dir / f"{name}_1.0.tar.gz", {f"bin/{name}": "#!/bin/sh\necho x\n"})
    shared_dir.chmod(0o755)
    assert stack.core("install", str(shared_dir / "atkrow_1.0.tar.gz")).returncode == 0
    db = stack.root / "var/lib/layershell/layers/arne/state.db"
    edit = (
        "import sqlite3, sys; db = sqlite3.connect(sys.argv[1]);"
        "db.execute(\"UPDATE packages SET source = 'x\\x1b]0;pwned\\x07'\"); db.commit()"
    )
    r = stack.as_user(stack.arne, [sys.executable, "-c", edit, str(db)])
    assert r.returncode == 0, r.stderr.decode()
    try:
        r = stack.core("list")
        err = r.stderr.decode()
        assert r.returncode == 0 and "its source is not printable text" in err, err
        r = stack.core("install", str(shared_dir / "atkother_1.0.tar.gz"))
        assert r.returncode == 0, r.stderr.decode()
        assert (stack.root / "usr/local/bin/atkother").exists()
    finally:
        assert stack.core("remove", "atkrow").returncode == 0
        stack.core("remove", "atkother")
