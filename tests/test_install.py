"""Issue 3 acceptance: `core install` end to end, as an ordinary identity, against real
file://, HTTP and FTP repositories on loopback, with real failures and real SIGKILLs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from layershell.packages import repo
from layershell.packages.verify.integrity import sha256_file
from tests.packages import ARCH, Repository, program, tarball
from tests.servers import Servers
from tests.servers import base_url as servers_base_url
from tests.support import Identity, python_cmd


def core(ident: Identity, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    return ident.run(python_cmd(*args), timeout=timeout)


def pkgs(ident: Identity) -> Path:
    return ident.home / ".local/share/layershell/pkgs"


def installed(ident: Identity) -> dict[str, str]:
    """name -> active version, from `core list --json`."""
    r = core(ident, "list", "--json")
    assert r.returncode == 0, r.stderr.decode()
    return {row["name"]: row["version"] for row in json.loads(r.stdout)}


def run_tool(ident: Identity, name: str) -> str:
    """The package's program, run in layer otto (as a shim will)."""
    r = ident.run([ident.layer_shell, "--layer", "otto", "--", f"/opt/pkgs/{name}/bin/{name}"])
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout.decode().strip()


def assert_consistent(ident: Identity) -> None:
    """The database and /opt/pkgs agree: every record has its tree and no tree is extra."""
    r = core(ident, "list", "--json", "--all")
    rows = json.loads(r.stdout)
    recorded = {f"{row['name']}_{row['version']}" for row in rows}
    on_disk = {p.name for p in pkgs(ident).iterdir() if "_" in p.name and p.is_dir()}
    assert recorded == on_disk
    for row in rows:
        link = pkgs(ident) / row["name"]
        if row["active"]:
            assert os.readlink(link) == f"{row['name']}_{row['version']}"
    staging = pkgs(ident) / ".staging"
    assert not staging.exists() or not any(staging.iterdir())


@pytest.fixture
def repository(shared_dir: Path) -> Repository:
    r = Repository(shared_dir / "repo")
    r.add("goss", "v0.0.1")
    r.add("goss", "v0.0.2")
    r.streams("goss:\n  v0.0.2: [testing]\n")
    r.index()
    return r


def base_url(kind: str, r: Repository, servers: Servers) -> str:
    return servers_base_url(kind, r.root, servers)


@pytest.mark.parametrize("kind", ["file", "http", "ftp"])
@pytest.mark.parametrize(("version", "expect"), [("v0.0.1", "v0.0.1"), ("latest", "v0.0.1")])
def test_same_package_from_every_protocol(
    fresh_rootless: Identity,
    repository: Repository,
    servers: Servers,
    kind: str,
    version: str,
    expect: str,
) -> None:
    url = f"{base_url(kind, repository, servers)}/{ARCH}/goss_{version}"
    r = core(fresh_rootless, "install", url)
    assert r.returncode == 0, r.stderr.decode()
    assert f"installed goss {expect}" in r.stdout.decode()
    assert installed(fresh_rootless) == {"goss": expect}
    assert run_tool(fresh_rootless, "goss") == f"goss {expect}"
    assert_consistent(fresh_rootless)


def write_manifest(ident: Identity, text: str) -> str:
    path = ident.home / "composable.yaml"
    path.write_text(text)
    path.chmod(0o644)
    return str(path)


@pytest.mark.parametrize(("stream", "expect"), [("stable", "v0.0.1"), ("testing", "v0.0.2")])
def test_streams_pick_different_versions(
    fresh_rootless: Identity, repository: Repository, servers: Servers, stream: str, expect: str
) -> None:
    http = servers.http(repository.root)
    config = write_manifest(
        fresh_rootless,
        f"composable:\n  default_repository: {http.url}\n  packages:\n"
        f"    - name: goss\n      version: latest\n      track_stream: {stream}\n",
    )
    r = core(fresh_rootless, "install", "--config", config)
    assert r.returncode == 0, r.stderr.decode()
    assert installed(fresh_rootless) == {"goss": expect}


def test_os_version_falls_back_to_the_previous_one(
    fresh_rootless: Identity, shared_dir: Path
) -> None:
    host = repo.host_os_version()
    assert host is not None and host.split(".")[0].isdigit(), host
    major = int(host.split(".")[0])
    older, newer = str(major - 1), str(major + 1)
    r = Repository(shared_dir / "osrepo")
    r.add("agent", older)
    r.add("agent", newer)
    r.index()
    config = write_manifest(
        fresh_rootless,
        f"composable:\n  default_repository: {r.file_url}\n  packages:\n"
        "    - name: agent\n      version: os\n",
    )
    result = core(fresh_rootless, "install", "--config", config)
    assert result.returncode == 0, result.stderr.decode()
    assert installed(fresh_rootless) == {"agent": older}
    # Once the host's own version is published it wins.
    r.add("agent", host)
    r.index()
    result = core(fresh_rootless, "install", "--config", config)
    assert result.returncode == 0, result.stderr.decode()
    assert installed(fresh_rootless) == {"agent": host}


def test_local_tarball_and_remove(fresh_rootless: Identity, shared_dir: Path) -> None:
    path = tarball(shared_dir / "hello_1.2.tar.gz", program("hello", "1.2"))
    r = core(fresh_rootless, "install", str(path))
    assert r.returncode == 0, r.stderr.decode()
    assert run_tool(fresh_rootless, "hello") == "hello 1.2"
    r = core(fresh_rootless, "install", str(path))
    assert "already installed hello 1.2" in r.stdout.decode()
    r = core(fresh_rootless, "remove", "hello")
    assert r.returncode == 0 and "removed hello 1.2" in r.stdout.decode()
    assert installed(fresh_rootless) == {}
    assert not (pkgs(fresh_rootless) / "hello_1.2").exists()
    assert not (pkgs(fresh_rootless) / "hello").is_symlink()
    r = core(fresh_rootless, "remove", "hello")
    assert r.returncode == 2 and "not installed in layer arne: hello" in r.stderr.decode()


def install_v1_then(
    ident: Identity, r: Repository, url: str, *extra: str
) -> subprocess.CompletedProcess[bytes]:
    """Install goss v0.0.1, then try v0.0.2 from `url`; return the second result."""
    first = core(ident, "install", f"{r.file_url}/{ARCH}/goss_v0.0.1")
    assert first.returncode == 0, first.stderr.decode()
    return core(ident, "install", *extra, url)


def assert_v1_still_works(ident: Identity) -> None:
    assert installed(ident) == {"goss": "v0.0.1"}
    assert run_tool(ident, "goss") == "goss v0.0.1"
    assert_consistent(ident)


def test_hash_mismatch_refuses_and_keeps_the_installed_version(
    fresh_rootless: Identity, repository: Repository, servers: Servers
) -> None:
    # The repository is tampered with after indexing: same name, other bytes.
    tarball(repository.arch_dir / "goss_v0.0.2.tar.gz", program("goss", "evil"))
    http = servers.http(repository.root)
    r = install_v1_then(fresh_rootless, repository, f"{http.url}/{ARCH}/goss_v0.0.2")
    assert r.returncode != 0
    err = r.stderr.decode()
    assert "sha256 mismatch for goss" in err
    index = json.loads((repository.arch_dir / "index.json").read_text())
    expected = next(e["sha256"] for e in index["packages"]["goss"] if e["version"] == "v0.0.2")
    actual = sha256_file(str(repository.arch_dir / "goss_v0.0.2.tar.gz"))[0]
    assert expected in err and actual in err
    assert_v1_still_works(fresh_rootless)


def test_404_is_a_clear_error_and_keeps_the_installed_version(
    fresh_rootless: Identity, repository: Repository, servers: Servers
) -> None:
    http = servers.http(repository.root)
    http.not_found(f"/{ARCH}/goss_v0.0.2.tar.gz")
    r = install_v1_then(fresh_rootless, repository, f"{http.url}/{ARCH}/goss_v0.0.2")
    assert r.returncode != 0
    assert f"not found: {http.url}/{ARCH}/goss_v0.0.2.tar.gz" in r.stderr.decode()
    assert_v1_still_works(fresh_rootless)


def test_connection_closed_mid_body_resumes(
    fresh_rootless: Identity, repository: Repository, servers: Servers
) -> None:
    big: dict[str, bytes | str] = {
        "bin/goss": '#!/bin/sh\necho "goss v0.0.2"\n',
        "share/blob": os.urandom(300_000),
    }
    repository.add("goss", "v0.0.2", big)
    repository.index()
    http = servers.http(repository.root)
    path = f"/{ARCH}/goss_v0.0.2.tar.gz"
    http.fail_once_mid_body(path, after_bytes=100_000)
    r = install_v1_then(fresh_rootless, repository, f"{http.url}/{ARCH}/goss_v0.0.2")
    assert r.returncode == 0, r.stderr.decode()
    gets = [q for q in http.requests if q.path == path and q.method == "GET"]
    assert len(gets) == 2
    assert gets[1].headers.get("Range", "").startswith("bytes=")
    assert gets[1].status == 206
    assert installed(fresh_rootless) == {"goss": "v0.0.2"}
    assert run_tool(fresh_rootless, "goss") == "goss v0.0.2"


def test_stalled_server_times_out_and_keeps_the_installed_version(
    fresh_rootless: Identity, repository: Repository, servers: Servers
) -> None:
    http = servers.http(repository.root)
    http.stall(f"/{ARCH}/goss_v0.0.2.tar.gz", after_bytes=10, seconds=30)
    r = install_v1_then(
        fresh_rootless, repository, f"{http.url}/{ARCH}/goss_v0.0.2",
        "--read-timeout", "1", "--retries", "1",
    )  # fmt: skip
    assert r.returncode != 0
    assert f"could not fetch {http.url}/{ARCH}/goss_v0.0.2.tar.gz" in r.stderr.decode()
    assert "timed out" in r.stderr.decode()
    assert_v1_still_works(fresh_rootless)


def test_hostile_package_is_refused_and_nothing_is_half_installed(
    fresh_rootless: Identity, shared_dir: Path
) -> None:
    import io
    import tarfile

    canary = shared_dir / "canary"
    canary.write_text("untouched")
    path = shared_dir / "evil_1.0.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in (("bin/evil", b"#!/bin/sh\n"), ("../../canary", b"overwritten")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.chmod(0o644)
    r = core(fresh_rootless, "install", str(path))
    assert r.returncode != 0
    assert "../../canary" in r.stderr.decode()
    assert canary.read_text() == "untouched"
    assert installed(fresh_rootless) == {}
    assert not (pkgs(fresh_rootless) / "evil_1.0").exists()
    assert_consistent(fresh_rootless)


INSTALL_SH = """\
id -u > "$PKG_DIR/installed-by"
pwd > "$PKG_DIR/ran-in"
if touch /usr/local/from-install-sh 2>/dev/null; then echo wrote-usr-local; exit 9; fi
if touch /usr/bin/layershell-evil 2>/dev/null; then echo wrote-usr; exit 9; fi
if touch /etc/layershell-evil 2>/dev/null; then echo wrote-etc; exit 9; fi
echo install-ok
"""


def test_install_sh_runs_as_pseudo_root_inside_layer1(
    fresh_rootless: Identity, shared_dir: Path
) -> None:
    path = tarball(
        shared_dir / "tool_1.0.tar.gz", {**program("tool", "1.0"), "install.sh": INSTALL_SH}
    )
    r = core(fresh_rootless, "install", str(path))
    assert r.returncode == 0, r.stderr.decode()
    tree = pkgs(fresh_rootless) / "tool_1.0"
    assert (tree / "installed-by").read_text() == "0\n"
    assert (tree / "ran-in").read_text() == "/opt/pkgs/tool_1.0\n"
    # Its own tree only (docs/packages.md): not layer 1's /usr/local.
    made = fresh_rootless.home / ".local/share/layershell/layers/arne/usr-local/from-install-sh"
    assert not made.exists()
    assert (tree / "installed-by").stat().st_uid == fresh_rootless.uid
    assert not os.path.exists("/usr/bin/layershell-evil")
    assert not os.path.exists("/etc/layershell-evil")


def test_failing_install_sh_rolls_back(fresh_rootless: Identity, shared_dir: Path) -> None:
    good = tarball(shared_dir / "tool_1.0.tar.gz", program("tool", "1.0"))
    bad = tarball(
        shared_dir / "tool_2.0.tar.gz",
        {**program("tool", "2.0"), "install.sh": "echo about to fail\nexit 3\n"},
    )
    assert core(fresh_rootless, "install", str(good)).returncode == 0
    r = core(fresh_rootless, "install", str(bad))
    assert r.returncode == 1
    err = r.stderr.decode()
    assert "install.sh failed with exit status 3" in err and "about to fail" in err
    assert installed(fresh_rootless) == {"tool": "1.0"}
    assert run_tool(fresh_rootless, "tool") == "tool 1.0"
    assert not (pkgs(fresh_rootless) / "tool_2.0").exists()
    assert_consistent(fresh_rootless)


CRASH_POINTS = ["fetched", "unpacked", "renamed", "before-commit", "committed"]


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_sigkill_at_each_point_leaves_old_or_new(
    fresh_rootless: Identity, repository: Repository, point: str
) -> None:
    first = core(fresh_rootless, "install", f"{repository.file_url}/{ARCH}/goss_v0.0.1")
    assert first.returncode == 0
    r = fresh_rootless.run(
        python_cmd("install", f"{repository.file_url}/{ARCH}/goss_v0.0.2"),
        env={"LAYERSHELL_CRASH_AT": point},
    )
    assert r.returncode == -signal.SIGKILL
    # Even after the commit (the link not yet moved), list shows what the tool runs.
    assert installed(fresh_rootless) == {"goss": "v0.0.1"}
    assert run_tool(fresh_rootless, "goss") == "goss v0.0.1"
    # The next run cleans up and completes; the tool works.
    r = core(fresh_rootless, "install", f"{repository.file_url}/{ARCH}/goss_v0.0.2")
    assert r.returncode == 0, r.stderr.decode()
    assert installed(fresh_rootless) == {"goss": "v0.0.2"}
    assert run_tool(fresh_rootless, "goss") == "goss v0.0.2"
    assert_consistent(fresh_rootless)


def wait_for(predicate: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached")


def test_sigkill_during_fetch_then_resume(
    fresh_rootless: Identity, repository: Repository, servers: Servers
) -> None:
    files: dict[str, bytes | str] = {"bin/goss": "#!/bin/sh\n", "blob": os.urandom(200_000)}
    repository.add("goss", "v0.0.3", files)
    repository.index()
    http = servers.http(repository.root)
    path = f"/{ARCH}/goss_v0.0.3.tar.gz"
    http.stall(path, after_bytes=50_000, seconds=60, times=1)
    proc = fresh_rootless.popen(
        python_cmd("install", f"{http.url}/{ARCH}/goss_v0.0.3"),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    partial = pkgs(fresh_rootless).parent / "layers/arne/cache/partial"
    wait_for(lambda: partial.is_dir() and any(p.suffix == ".part" and p.stat().st_size > 0
                                              for p in partial.iterdir()))  # fmt: skip
    proc.kill()
    proc.wait()
    assert installed(fresh_rootless) == {}
    r = core(fresh_rootless, "install", f"{http.url}/{ARCH}/goss_v0.0.3")
    assert r.returncode == 0, r.stderr.decode()
    last = [q for q in http.requests if q.path == path and q.method == "GET"][-1]
    assert last.headers.get("Range", "").startswith("bytes=")  # resumed, not restarted
    assert installed(fresh_rootless) == {"goss": "v0.0.3"}
    assert_consistent(fresh_rootless)


def test_sigkill_during_install_sh(fresh_rootless: Identity, shared_dir: Path) -> None:
    slow = tarball(
        shared_dir / "slow_1.0.tar.gz",
        {**program("slow", "1.0"), "install.sh": 'touch "$PKG_DIR/started"\nsleep 2\n'},
    )
    proc = fresh_rootless.popen(
        python_cmd("install", str(slow)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wait_for(lambda: (pkgs(fresh_rootless) / "slow_1.0/started").exists())
    proc.kill()
    proc.wait()
    assert installed(fresh_rootless) == {}
    # The orphaned script still holds the layer's lock; the next run waits, cleans, installs.
    r = core(fresh_rootless, "install", str(slow))
    assert r.returncode == 0, r.stderr.decode()
    assert installed(fresh_rootless) == {"slow": "1.0"}
    assert_consistent(fresh_rootless)


def test_ten_concurrent_installs(fresh_rootless: Identity, shared_dir: Path) -> None:
    r = Repository(shared_dir / "many")
    for i in range(10):
        r.add(f"tool{i}", "1.0")
    r.index()
    procs = [
        fresh_rootless.popen(
            python_cmd("install", "--quiet", f"{r.file_url}/{ARCH}/tool{i}_1.0"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(10)
    ]
    results = [(p.wait(timeout=120), p.stderr.read() if p.stderr else b"") for p in procs]
    for p in procs:
        for stream in (p.stdout, p.stderr):
            if stream:
                stream.close()
    assert [code for code, _ in results] == [0] * 10, results
    assert installed(fresh_rootless) == {f"tool{i}": "1.0" for i in range(10)}
    assert_consistent(fresh_rootless)


def test_no_wait_fails_while_another_operation_runs(
    fresh_rootless: Identity, shared_dir: Path
) -> None:
    slow = tarball(
        shared_dir / "slow_1.0.tar.gz", {**program("slow", "1.0"), "install.sh": "sleep 3\n"}
    )
    other = tarball(shared_dir / "other_1.0.tar.gz", program("other", "1.0"))
    proc = fresh_rootless.popen(
        python_cmd("install", str(slow)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wait_for(lambda: (pkgs(fresh_rootless) / "slow_1.0").exists())
    r = core(fresh_rootless, "install", "--no-wait", str(other))
    assert r.returncode == 75
    assert "another layershell operation holds" in r.stderr.decode()
    assert proc.wait(timeout=60) == 0
    assert installed(fresh_rootless) == {"slow": "1.0"}


def test_list_and_info_json(fresh_rootless: Identity, repository: Repository) -> None:
    for v in ("v0.0.1", "v0.0.2"):
        r = core(fresh_rootless, "install", f"{repository.file_url}/{ARCH}/goss_{v}")
        assert r.returncode == 0, r.stderr.decode()
    r = core(fresh_rootless, "info", "goss", "--json")
    rows = json.loads(r.stdout)
    assert [(x["version"], x["active"]) for x in rows] == [("v0.0.1", False), ("v0.0.2", True)]
    assert all(len(x["sha256"]) == 64 for x in rows)
    r = core(fresh_rootless, "list")
    assert "goss" in r.stdout.decode() and "v0.0.2" in r.stdout.decode()
    r = core(fresh_rootless, "info", "nope")
    assert r.returncode == 2 and "not installed: nope" in r.stderr.decode()


def test_bad_manifest_changes_nothing(fresh_rootless: Identity, repository: Repository) -> None:
    config = write_manifest(
        fresh_rootless,
        f"composable:\n  default_repository: {repository.file_url}\n  packages:\n"
        "    - name: goss\n      version: v0.0.1\n    - name: bad\n      verson: 1\n",
    )
    r = core(fresh_rootless, "install", "--config", config)
    assert r.returncode == 2
    assert f"{config}:7:7: composable.packages.1.verson: unknown key" in r.stderr.decode()
    assert installed(fresh_rootless) == {}
    r = core(fresh_rootless, "check", config)
    assert r.returncode == 2


def test_remove_checks_every_name_first(fresh_rootless: Identity, shared_dir: Path) -> None:
    path = tarball(shared_dir / "keep_1.0.tar.gz", program("keep", "1.0"))
    assert core(fresh_rootless, "install", str(path)).returncode == 0
    r = core(fresh_rootless, "remove", "keep", "missing")
    assert r.returncode == 2 and "not installed in layer arne: missing" in r.stderr.decode()
    assert installed(fresh_rootless) == {"keep": "1.0"}


def test_password_in_url_is_not_recorded(fresh_rootless: Identity) -> None:
    from layershell.packages.pipeline import redact

    assert redact("ftp://user:secret@host:21/repo") == "ftp://user:***@host:21/repo"
    assert redact("https://host/repo") == "https://host/repo"


def test_neutralised_bits_are_reported(fresh_rootless: Identity, shared_dir: Path) -> None:
    path = tarball(
        shared_dir / "suid_1.0.tar.gz",
        {"bin/suid": "#!/bin/sh\n"},
        modes={"bin/suid": 0o4755},
    )
    r = core(fresh_rootless, "install", str(path))
    assert r.returncode == 0, r.stderr.decode()
    assert "note: suid: bin/suid: setuid bit stripped" in r.stderr.decode()
    mode = (pkgs(fresh_rootless) / "suid_1.0/bin/suid").stat().st_mode
    assert not mode & 0o4000
