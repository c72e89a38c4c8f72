"""Issue 6: updates on a stream, rollback, gc, conditional checks, crashes mid-update.
Rootless, as an ordinary identity, through the shims a user would run."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

from tests.packages import ARCH, Repository
from tests.servers import Servers
from tests.support import Identity, SystemStack, python_cmd


def core(
    ident: Identity, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    return ident.run(python_cmd(*args), timeout=120, env=env)


def tool(version: str) -> dict[str, bytes | str]:
    return {"bin/tool": f'#!/bin/sh\necho "tool {version}"\n'}


def shim_says(ident: Identity) -> str:
    return ident.run(["tool"]).stdout.decode().strip()


def active(ident: Identity) -> dict[str, str]:
    rows = json.loads(core(ident, "list", "--json").stdout)
    return {r["name"]: r["version"] for r in rows}


def on_disk(ident: Identity) -> set[str]:
    pkgs = ident.home / ".local/share/layershell/pkgs"
    return {p.name for p in pkgs.iterdir() if "_" in p.name and p.is_dir()}


@pytest.fixture
def setup(fresh_rootless: Identity, shared_dir: Path) -> tuple[Identity, Repository, str]:
    repo = Repository(shared_dir / "repo")
    repo.add("tool", "1.0", tool("1.0"))
    repo.index()
    config = fresh_rootless.home / "composable.yaml"
    config.write_text(
        f"composable:\n  default_repository: {repo.file_url}\n  packages:\n"
        "    - name: tool\n      version: latest\n      track_stream: stable\n"
    )
    config.chmod(0o644)
    r = core(fresh_rootless, "install", "--config", str(config))
    assert r.returncode == 0, r.stderr.decode()
    assert shim_says(fresh_rootless) == "tool 1.0"
    return fresh_rootless, repo, str(config)


def publish(repo: Repository, version: str) -> None:
    repo.add("tool", version, tool(version))
    repo.index()


def test_update_rollback_gc(setup: tuple[Identity, Repository, str]) -> None:
    ident, repo, _ = setup
    publish(repo, "2.0")
    r = core(ident, "update", "--dry-run", "--json")
    plan = json.loads(r.stdout)["plan"]
    assert [(p["name"], p["current"], p["new"]) for p in plan] == [("tool", "1.0", "2.0")]
    assert active(ident) == {"tool": "1.0"}  # a dry run changes nothing
    r = core(ident, "update")
    assert r.returncode == 0, r.stderr.decode()
    assert "updated tool to 2.0" in r.stdout.decode()
    assert shim_says(ident) == "tool 2.0"
    assert on_disk(ident) == {"tool_1.0", "tool_2.0"}  # side by side
    r = core(ident, "rollback", "tool")
    assert r.returncode == 0 and "rolled tool back from 2.0 to 1.0" in r.stdout.decode()
    assert shim_says(ident) == "tool 1.0"
    cache = ident.home / ".local/share/layershell/layers/arne/cache/sha256"
    assert len(list(cache.iterdir())) == 2
    r = core(ident, "gc", "--keep", "0")
    assert r.returncode == 0, r.stderr.decode()
    assert on_disk(ident) == {"tool_1.0"}
    assert len(list(cache.iterdir())) == 1
    assert shim_says(ident) == "tool 1.0"
    r = core(ident, "update", "--dry-run")  # the rollback holds it (as apt-mark hold)
    assert "held at 1.0 (core unhold tool)" in r.stdout.decode() and "2.0" not in r.stdout.decode()
    r = core(ident, "unhold", "tool")
    assert r.returncode == 0 and "no longer held" in r.stdout.decode(), r.stderr.decode()
    r = core(ident, "update", "--dry-run")
    assert "2.0" in r.stdout.decode()


def test_keep_previous_versions(setup: tuple[Identity, Repository, str]) -> None:
    ident, repo, _ = setup
    for version in ("2.0", "3.0"):
        publish(repo, version)
        assert core(ident, "update", "--keep", "1").returncode == 0
    assert on_disk(ident) == {"tool_2.0", "tool_3.0"}
    assert core(ident, "rollback", "tool").returncode == 0
    assert shim_says(ident) == "tool 2.0"
    r = core(ident, "rollback", "tool")
    assert r.returncode == 1 and "oldest installed version" in r.stderr.decode()


def test_an_update_with_nothing_new_still_prunes_what_a_killed_one_left(
    setup: tuple[Identity, Repository, str],
) -> None:
    """test_crash_random found it: an update killed between its install and its prune
    leaves the older versions, and the next update, with nothing newer to install,
    pruned nothing (it pruned only what moved)."""
    ident, repo, _ = setup
    publish(repo, "2.0")
    assert core(ident, "update", "--keep", "1").returncode == 0
    publish(repo, "3.0")
    killed = core(ident, "update", "--keep", "1", env={"LAYERSHELL_CRASH_AT": "committed"})
    assert killed.returncode == -9
    assert on_disk(ident) == {"tool_1.0", "tool_2.0", "tool_3.0"}  # nothing pruned yet
    r = core(ident, "update", "--keep", "1")
    assert r.returncode == 0, r.stderr.decode()
    assert active(ident) == {"tool": "3.0"}
    assert on_disk(ident) == {"tool_2.0", "tool_3.0"}


def test_unchanged_repository_costs_three_304s(
    fresh_rootless: Identity, shared_dir: Path, servers: Servers
) -> None:
    repo = Repository(shared_dir / "repo")
    repo.add("tool", "1.0", tool("1.0"))
    repo.index()
    http = servers.http(repo.root)
    r = core(fresh_rootless, "install", f"{http.url}/{ARCH}/tool_latest")
    assert r.returncode == 0, r.stderr.decode()
    http.clear_log()
    for _ in range(2):
        r = core(fresh_rootless, "update")
        assert r.returncode == 0 and "everything is up to date" in r.stdout.decode()
    # Each update revalidates what the signature covers, one conditional request each.
    once = [("GET", f"/{ARCH}/{name}", 304) for name in ("SHA256SUMS", "SHA256SUMS.gpg",
                                                         "index.json")]  # fmt: skip
    assert [(q.method, q.path, q.status) for q in http.requests] == once + once


@pytest.mark.parametrize("point", ["fetched", "unpacked", "renamed", "before-commit"])
def test_sigkill_mid_update_leaves_one_version(
    setup: tuple[Identity, Repository, str], point: str
) -> None:
    ident, repo, _ = setup
    publish(repo, "2.0")
    r = core(ident, "update", env={"LAYERSHELL_CRASH_AT": point})
    assert r.returncode == -signal.SIGKILL
    # Entirely the old version: the record, the link and the shim agree.
    assert active(ident) == {"tool": "1.0"}
    assert shim_says(ident) == "tool 1.0"
    r = core(ident, "update")
    assert r.returncode == 0, r.stderr.decode()
    assert shim_says(ident) == "tool 2.0"
    assert active(ident) == {"tool": "2.0"}


def test_if_os_changed_does_nothing_when_it_did_not(
    setup: tuple[Identity, Repository, str],
) -> None:
    ident, repo, _ = setup
    publish(repo, "2.0")
    core(ident, "update", "--dry-run")
    record = ident.home / ".local/share/layershell/os-version"
    from layershell.packages import repo as repo_mod

    record.write_text((repo_mod.host_os_version() or "") + "\n")
    r = core(ident, "update", "--if-os-changed")
    assert "OS version unchanged" in r.stdout.decode()
    assert active(ident) == {"tool": "1.0"}


def test_sigkill_between_commit_and_switch_is_repaired_by_the_next_run(
    setup: tuple[Identity, Repository, str],
) -> None:
    # Rootless (no services, no repair unit): the record says 2.0 and the link, so every
    # shim, still 1.0 (the host runs 1.0 entirely) until the next operation's reconcile;
    # core list shows what runs.
    ident, repo, _ = setup
    publish(repo, "2.0")
    r = core(ident, "update", env={"LAYERSHELL_CRASH_AT": "committed"})
    assert r.returncode == -signal.SIGKILL
    assert active(ident) == {"tool": "1.0"} and shim_says(ident) == "tool 1.0"
    assert core(ident, "update").returncode == 0
    assert shim_says(ident) == "tool 2.0"


def test_rootless_repair_moves_the_link_to_the_record(
    setup: tuple[Identity, Repository, str],
) -> None:
    ident, repo, _ = setup
    publish(repo, "2.0")
    assert core(ident, "update", env={"LAYERSHELL_CRASH_AT": "committed"}).returncode == -9
    assert shim_says(ident) == "tool 1.0"  # the link is behind the record
    r = core(ident, "repair")
    assert r.returncode == 0, r.stderr.decode()
    assert "at tool_2.0, the active version in the record" in r.stderr.decode()
    assert shim_says(ident) == "tool 2.0"


def root_core(
    system: SystemStack, *args: str, crash_at: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**system.env, **({"LAYERSHELL_CRASH_AT": crash_at} if crash_at else {})}
    return subprocess.run(
        python_cmd(*args), env=env, capture_output=True, text=True, timeout=120, cwd="/"
    )


@pytest.mark.parametrize("point", ["committed", "shims-switched"])
def test_interrupted_root_operation_is_finished_by_the_next(
    system: SystemStack, shared_dir: Path, point: str
) -> None:
    """Without systemd to start layershell-repair.service, the next root operation
    repairs first. (The booted testbed covers the unit: test_update_boot.py.)"""
    repo = Repository(shared_dir / f"sysrepo-{point}")
    repo.add("upd", "1.0", {"bin/upd": '#!/bin/sh\necho "upd 1.0"\n'})
    repo.index()
    shim = system.root / "usr/local/bin/upd"
    journal = system.root / "var/lib/layershell/operation.json"
    r = root_core(system, "install", f"{repo.file_url}/{ARCH}/upd_latest")
    assert r.returncode == 0, r.stderr
    try:
        assert not journal.exists()  # an operation that ended leaves no journal
        r = root_core(system, "repair", "--if-interrupted")
        assert r.returncode == 0 and "no interrupted operation" in r.stdout
        repo.add("upd", "2.0", {"bin/upd": '#!/bin/sh\necho "upd 2.0"\n'})
        repo.index()
        r = root_core(system, "update", crash_at=point)
        assert r.returncode == -signal.SIGKILL, r.stderr
        assert json.loads(journal.read_text())["operation"] == "update"
        r = root_core(system, "update")
        assert r.returncode == 0, r.stderr
        assert "repairing after an interrupted operation" in r.stderr
        assert not journal.exists()
        said = system.as_user(system.otto, [str(shim)]).stdout.decode().strip()
        assert said == "upd 2.0"
        rows = json.loads(root_core(system, "list", "--json").stdout)
        assert [(x["name"], x["version"]) for x in rows if x["name"] == "upd"] == [("upd", "2.0")]
    finally:
        assert root_core(system, "remove", "upd").returncode == 0


def test_a_repair_that_cannot_work_moves_the_journal_aside(system: SystemStack) -> None:
    """layershell-repair.path starts the repair while the journal exists: one that fails
    (here: a broken layers.yaml) must not be started again and again."""
    state = system.root / "var/lib/layershell"
    journal, failed = state / "operation.json", state / "operation.failed.json"
    layers = system.root / "etc/layershell/layers.yaml"
    saved = layers.read_text()
    journal.write_text('{"operation": "update", "pid": 1}\n')
    layers.write_text("layers: [\n")
    try:
        r = root_core(system, "repair", "--if-interrupted")
        assert r.returncode != 0
        assert f"repair failed; see {failed}" in r.stderr
        assert not journal.exists() and failed.exists()
    finally:
        layers.write_text(saved)
        journal.unlink(missing_ok=True)
        failed.unlink(missing_ok=True)
    r = root_core(system, "repair", "--if-interrupted")
    assert r.returncode == 0 and "no interrupted operation" in r.stdout


def test_when_only_the_accounts_process_dies_root_reconciles_first(
    system: SystemStack, shared_dir: Path
) -> None:
    """The OOM killer takes the account's `core update` after the record's commit, before
    the link moved; root lives on: it reconciles the layer before it exposes anything."""
    repo = Repository(shared_dir / "sysrepo-oom")
    repo.add("oom", "1.0", {"bin/oom": '#!/bin/sh\necho "oom 1.0"\n'})
    repo.index()
    r = root_core(system, "install", f"{repo.file_url}/{ARCH}/oom_latest")
    assert r.returncode == 0, r.stderr
    try:
        repo.add("oom", "2.0", {"bin/oom": '#!/bin/sh\necho "oom 2.0"\n'})
        repo.index()
        r = root_core(system, "update", "oom", crash_at="account:committed")
        assert r.returncode == 128 + signal.SIGKILL, r.stderr
        assert "the layer account's process died (signal 9)" in r.stderr
        assert "pointing" in r.stderr and "at oom_2.0, the active version in the record" in (
            r.stderr
        )
        shim = system.root / "usr/local/bin/oom"
        assert system.as_user(system.otto, [str(shim)]).stdout.decode().strip() == "oom 2.0"
        assert not (system.root / "var/lib/layershell/operation.json").exists()
    finally:
        assert root_core(system, "remove", "oom").returncode == 0
