"""grants.db (layershell/packages/grants_db.py): root's grants and the shim index, a row
per package (issue 16, item 5).

- an install or a remove reads only the rows of the packages it changes
  (tests/test_scale.py counts it);
- an older layershell's grants.json and shims.json are read until the first write, which
  moves them in and removes them; nothing granted or exposed is lost;
- a listing shows the shims the index names that are on disk, and reads the files'
  markers only when the index may not name them all."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

from tests.packages import program, tarball
from tests.support import Identity, python_cmd


def state_dir(ident: Identity) -> Path:
    return ident.home / ".local/share/layershell"


def test_an_older_layershells_json_files_are_moved_in(
    fresh_rootless: Identity, shared_dir: Path
) -> None:
    first = tarball(shared_dir / "first_1.0.tar.gz", program("first", "1.0"))
    r = fresh_rootless.run(python_cmd("install", "--profile", "strict", str(first)))
    assert r.returncode == 0, r.stderr
    before = json.loads(fresh_rootless.run(python_cmd("list", "--json")).stdout)
    assert before[0]["granted"]["profile"] == "strict" and before[0]["exposes"] == ["first"]
    # What the layershell before grants.db kept, from what this one recorded.
    db_path = state_dir(fresh_rootless) / "grants.db"
    with sqlite3.connect(db_path) as db:
        grants = {n: json.loads(b) for n, b in db.execute("SELECT name, body FROM grants")}
        index: dict[str, list[str]] = {}
        for name, package in db.execute("SELECT name, package FROM shims"):
            index.setdefault(package, []).append(name)
    db.close()
    db_path.unlink()
    for name, data in (("grants.json", grants), ("shims.json", index)):
        path = state_dir(fresh_rootless) / name
        path.write_text(json.dumps(data))
        os.chown(path, fresh_rootless.uid, fresh_rootless.gid)
    # Read as they are until something changes ...
    assert json.loads(fresh_rootless.run(python_cmd("list", "--json")).stdout) == before
    assert not db_path.exists()
    # ... then moved in: the old word and the old index both kept.
    second = tarball(shared_dir / "second_1.0.tar.gz", program("second", "1.0"))
    assert fresh_rootless.run(python_cmd("install", str(second))).returncode == 0
    assert db_path.is_file()
    assert not (state_dir(fresh_rootless) / "grants.json").exists()
    assert not (state_dir(fresh_rootless) / "shims.json").exists()
    after = {
        r["name"]: r for r in json.loads(fresh_rootless.run(python_cmd("list", "--json")).stdout)
    }
    assert after["first"]["granted"]["profile"] == "strict", after
    assert after["first"]["exposes"] == ["first"] and after["second"]["exposes"] == ["second"]
    # The old index still counts: removing `first` removes its shim without a full sync.
    assert fresh_rootless.run(python_cmd("remove", "first")).returncode == 0
    assert not (fresh_rootless.home / ".local/bin/first").exists()


def test_the_listing_shows_what_is_on_disk(fresh_rootless: Identity, shared_dir: Path) -> None:
    tool = tarball(shared_dir / "tool_1.0.tar.gz", program("tool", "1.0"))
    assert fresh_rootless.run(python_cmd("install", str(tool))).returncode == 0
    shim = fresh_rootless.home / ".local/bin/tool"

    def exposes() -> list[str]:
        r = fresh_rootless.run(python_cmd("list", "--json"))
        assert r.returncode == 0, r.stderr
        exposed: list[str] = json.loads(r.stdout)[0]["exposes"]
        return exposed

    assert exposes() == ["tool"]
    shim.unlink()  # removed by hand: the index still names it, the disk does not
    assert exposes() == []
    assert fresh_rootless.run(python_cmd("expose", "--sync")).returncode == 0
    assert exposes() == ["tool"]
    # An index that may not name every shim (as after an upgrade with shims on disk and
    # no shims.json): the files' markers are read.
    db_path = state_dir(fresh_rootless) / "grants.db"
    with sqlite3.connect(db_path) as db:
        db.execute("DELETE FROM shims")
        db.execute("DELETE FROM meta")
    db.close()
    assert exposes() == ["tool"]


def test_a_damaged_grant_row_names_the_package(fresh_rootless: Identity, shared_dir: Path) -> None:
    tool = tarball(shared_dir / "tool_1.0.tar.gz", program("tool", "1.0"))
    assert (
        fresh_rootless.run(python_cmd("install", "--profile", "strict", str(tool))).returncode == 0
    )
    with sqlite3.connect(state_dir(fresh_rootless) / "grants.db") as db:
        db.execute("UPDATE grants SET body = '{\"profile\": \"loose\"}' WHERE name = 'tool'")
    db.close()
    r = fresh_rootless.run(python_cmd("list", "--json"))
    err = r.stderr.decode()
    assert r.returncode != 0 and "Traceback" not in err
    assert "grants.db" in err and "'tool' is damaged" in err, err


def test_an_interrupted_write_is_named_and_rolled_back(
    fresh_rootless: Identity, shared_dir: Path
) -> None:
    """A writer that died mid-transaction leaves a hot journal, which a reader that may
    not write (otto's core list in system mode) cannot roll back: a clear error saying
    who can; the writer's own next command, a listing included, rolls it back."""
    tool = tarball(shared_dir / "tool_1.0.tar.gz", program("tool", "1.0"))
    assert fresh_rootless.run(python_cmd("install", str(tool))).returncode == 0
    db_path = state_dir(fresh_rootless) / "grants.db"
    pid = os.fork()
    if pid == 0:  # a write that dies before its commit, with its journal on disk
        db = sqlite3.connect(db_path, isolation_level=None)
        db.execute("PRAGMA cache_size=1")
        db.execute("BEGIN IMMEDIATE")
        rows = ((f"x{i:05d}", "{}" + " " * 200) for i in range(3000))
        db.executemany("INSERT INTO grants VALUES (?, ?)", rows)
        os._exit(0)
    os.waitpid(pid, 0)
    journal = state_dir(fresh_rootless) / "grants.db-journal"
    assert journal.stat().st_size > 0
    for path in (db_path, journal):
        os.chown(path, fresh_rootless.uid, fresh_rootless.gid)
    state_dir(fresh_rootless).chmod(0o555)  # as otto sees root's directory
    try:
        r = fresh_rootless.run(python_cmd("list", "--json"))
    finally:
        state_dir(fresh_rootless).chmod(0o755)
    err = r.stderr.decode()
    assert r.returncode != 0 and "Traceback" not in err
    assert "interrupted write" in err and "core expose --sync" in err, err
    r = fresh_rootless.run(python_cmd("list", "--json"))
    assert r.returncode == 0, r.stderr
    assert [x["name"] for x in json.loads(r.stdout)] == ["tool"]
    assert not journal.exists() or journal.stat().st_size == 0
