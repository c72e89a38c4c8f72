"""The state database and the per-layer lock."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from layershell import lock
from layershell.packages import state
from layershell.packages.state import Installed, State


def pkg(name: str, version: str, **kw: object) -> Installed:
    fields: dict[str, object] = {
        "layer": "arne",
        "path": f"/opt/pkgs/{name}_{version}",
        "sha256": "0" * 64,
        "source": f"file:///repo/x86_64/{name}_{version}",
        "size": 10,
        "files": 2,
        "bytes": 20,
        "installed_at": time.time(),
        "active": True,
        "spec": {"profile": "default"},
    }
    fields.update(kw)
    return Installed(name, version, **fields)  # type: ignore[arg-type]


def test_new_database_has_current_schema(tmp_path: Path) -> None:
    db = tmp_path / "s" / "state.db"
    with State(str(db)) as st:
        assert st.db.execute("PRAGMA user_version").fetchone()[0] == state.SCHEMA_VERSION
        assert st.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert st.all() == []


def test_record_activate_and_query(tmp_path: Path) -> None:
    with State(str(tmp_path / "state.db")) as st:
        with st.transaction():
            st.record(pkg("goss", "v1"), activate=True)
        with st.transaction():
            st.record(pkg("goss", "v2"), activate=True)
        active = st.active("goss")
        assert active is not None and active.version == "v2"
        assert [(p.version, p.active) for p in st.versions("goss")] == [("v1", False), ("v2", True)]
        assert st.get("goss", "v1") is not None
        assert st.paths() == {"/opt/pkgs/goss_v1", "/opt/pkgs/goss_v2"}
        assert [e[3] for e in st.events("goss")] == ["install", "install"]
        assert active.spec == {"profile": "default"}


def test_only_one_active_version(tmp_path: Path) -> None:
    with State(str(tmp_path / "state.db")) as st:
        with st.transaction():
            st.record(pkg("goss", "v1"), activate=True)
        with pytest.raises(sqlite3.IntegrityError), st.transaction():
            st.db.execute("UPDATE packages SET active = 1 WHERE name = 'goss'")
            st.db.execute(
                "INSERT INTO packages (name, version, layer, path, sha256, source, installed_at,"
                " active) VALUES ('goss', 'v9', 'arne', '/x', 'h', 's', 0, 1)"
            )


def test_failed_transaction_leaves_nothing(tmp_path: Path) -> None:
    with State(str(tmp_path / "state.db")) as st:
        with pytest.raises(RuntimeError), st.transaction():
            st.record(pkg("goss", "v1"), activate=True)
            raise RuntimeError("crash in the middle")
        assert st.all() == []
        assert st.events() == []


def test_forget(tmp_path: Path) -> None:
    with State(str(tmp_path / "state.db")) as st:
        with st.transaction():
            st.record(pkg("a", "1"), activate=True)
            st.record(pkg("a", "2"), activate=True)
            st.record(pkg("b", "1"), activate=True)
        with st.transaction():
            st.forget("a", "1")
        assert [(p.name, p.version) for p in st.all()] == [("a", "2"), ("b", "1")]
        with st.transaction():
            st.forget("a")
        assert [p.name for p in st.all()] == ["b"]


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    State(str(db)).close()
    con = sqlite3.connect(db)
    con.execute(f"PRAGMA user_version = {state.SCHEMA_VERSION + 1}")
    con.close()
    with pytest.raises(state.StateError, match="newer than this layershell knows"):
        State(str(db))
    with pytest.raises(state.StateError, match="newer than this layershell knows"):
        State(str(db), readonly=True)


def test_readonly_open_of_missing_database_is_clear(tmp_path: Path) -> None:
    with pytest.raises(state.StateError, match=r"nope\.db does not exist") as info:
        State(str(tmp_path / "nope.db"), readonly=True)
    assert "core repair --rebuild" in info.value.hint


HOLD = """
import sys, time
sys.path[:0] = [{repo!r}]
from layershell import lock
with lock.held({path!r}):
    print("held", flush=True)
    time.sleep(30)
"""


def test_lock_no_wait_fails_and_names_holder(tmp_path: Path) -> None:
    path = str(tmp_path / "lock")
    repo = str(Path(__file__).resolve().parent.parent)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD.format(repo=repo, path=path)], stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == b"held\n"
        with pytest.raises(lock.Busy) as info, lock.held(path, no_wait=True):
            pass
        assert f"pid {holder.pid}" in info.value.message
        assert info.value.exit_code == 75
    finally:
        holder.kill()
        holder.wait()
    # The kernel released the dead holder's lock: no stale lock.
    with lock.held(path, no_wait=True):
        pass


def test_lock_waits_and_says_so(tmp_path: Path) -> None:
    path = str(tmp_path / "lock")
    repo = str(Path(__file__).resolve().parent.parent)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD.replace("time.sleep(30)", "time.sleep(0.5)").format(
            repo=repo, path=path)],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    assert holder.stdout is not None
    assert holder.stdout.readline() == b"held\n"
    said: list[str] = []
    with lock.held(path, waiting=said.append):
        assert holder.poll() is not None or holder.wait(5) == 0
    assert len(said) == 1 and "waiting for another layershell operation" in said[0]
    holder.wait()
