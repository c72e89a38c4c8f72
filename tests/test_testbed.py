"""Self-test of tests/testbed.py: a real systemd 252 with portabled, booted in nspawn."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.testbed import (
    CONTAINER_ENV,
    Testbed,
    TestbedError,
    clean_stale,
    install_layershell,
    make_portable,
    mounts_under,
    needs_testbed,
    require_testbed,
)

REPO = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.slow, pytest.mark.root, needs_testbed]

MARKER = "/etc/layershell-testbed-prepared"


def _prepare(root: Path) -> None:
    (root / MARKER.lstrip("/")).write_text("prepared on the host\n")


@pytest.fixture(scope="module")
def booted_once() -> Iterator[Testbed]:
    require_testbed()
    bed = Testbed(prepare=_prepare)
    try:
        yield bed
    finally:
        bed.stop(keep=False)


@pytest.fixture
def tb(booted_once: Testbed) -> Testbed:
    """The module's testbed, booted again if an earlier test stopped it."""
    if not booted_once.running:
        booted_once.start(fresh=not booted_once.root.exists())
    return booted_once


def _wait_for(tb: Testbed, argv: tuple[str, ...], want: str, seconds: float = 30) -> str:
    """Poll a command inside until its output is `want` (systemd jobs are asynchronous)."""
    deadline = time.monotonic() + seconds
    while True:
        out = tb.exec(*argv).stdout.strip()
        if out == want or time.monotonic() > deadline:
            return out
        time.sleep(0.2)


def test_systemd_runs_as_pid1_with_prepared_root(tb: Testbed) -> None:
    state = tb.exec("systemctl", "is-system-running").stdout.strip()
    assert state in ("running", "degraded"), tb.exec("systemctl", "--failed").stdout
    assert tb.exec("cat", "/proc/1/comm").stdout.strip() == "systemd"
    assert tb.exec("cat", MARKER, check=True).stdout == "prepared on the host\n"
    assert tb.init_pid is not None
    assert tb.init_pid in tb.processes()


def test_exec_has_clean_env_and_exit_codes(tb: Testbed) -> None:
    env = dict(
        line.split("=", 1) for line in tb.exec("env", check=True).stdout.splitlines() if line
    )
    assert env == CONTAINER_ENV  # nothing of pytest's environment leaks in
    assert tb.exec("sh", "-c", "exit 3").returncode == 3
    assert tb.exec("cat", input="through stdin").stdout == "through stdin"
    with pytest.raises(TestbedError, match="rc 3"):
        tb.exec("sh", "-c", "echo why >&2; exit 3", check=True)


def test_exec_timeout_kills_the_command(tb: Testbed) -> None:
    with pytest.raises(TestbedError, match="timed out"):
        tb.exec("sleep", "31.5", timeout=1)
    # Gone, and not left as a zombie (pgrep cannot see those: they have no cmdline).
    states = tb.exec("ps", "-eo", "stat=,args=", check=True).stdout.splitlines()
    assert [line for line in states if line.startswith("Z") or "sleep 31.5" in line] == []


def test_run_unit_is_managed_by_the_container_systemd(tb: Testbed) -> None:
    script = "cat /proc/self/cgroup; id -u; exit 4"
    result = tb.run_unit("sh", "-c", script, properties=["DynamicUser=yes"])
    assert result.returncode == 4
    assert "0::/system.slice/run-u" in result.stdout
    assert result.stdout.splitlines()[-1] != "0"  # DynamicUser applied: not root


def test_copy_in_write_and_host_path(tb: Testbed, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "tool").write_text("#!/bin/sh\necho tool ran\n")
    (tree / "sub" / "tool").chmod(0o755)
    copied = tb.copy_in(tree, "/opt/tree")
    assert copied == tb.root / "opt/tree"
    assert tb.exec("/opt/tree/sub/tool", check=True).stdout == "tool ran\n"
    # /bin is a symlink to usr/bin in bookworm: the write lands where the container looks.
    written = tb.write("/bin/lstb-hello", "#!/bin/sh\necho hello\n", mode=0o755)
    assert written == tb.root / "usr/bin/lstb-hello"
    assert tb.exec("lstb-hello", check=True).stdout == "hello\n"
    assert tb.host_path("/etc/os-release").is_relative_to(tb.root)


def test_portable_image_attaches_under_strict(tb: Testbed) -> None:
    listing = tb.exec("portablectl", "list", check=True)
    assert "No images." in listing.stdout + listing.stderr or "NAME" in listing.stdout
    make_portable(tb, "/var/lib/portables/lstest_1.0", "lstest", "1.0")
    assert "lstest_1.0" in tb.exec("portablectl", "list", check=True).stdout
    tb.exec(
        "portablectl", "attach", "--profile", "strict", "--copy=symlink", "--enable", "--now",
        "lstest_1.0", check=True,
    )  # fmt: skip
    try:
        # attach --now only queues the start job: ask systemd, not portablectl's rc.
        active = _wait_for(tb, ("systemctl", "is-active", "lstest.service"), "active")
        assert active == "active", tb.exec("journalctl", "-u", "lstest.service").stdout
        shown = tb.exec("systemctl", "show", "-p", "RootDirectory", "lstest.service").stdout
        assert shown.strip() == "RootDirectory=/var/lib/portables/lstest_1.0"
        dropins = tb.host_path("/etc/systemd/system.attached/lstest.service.d")
        assert os.readlink(dropins / "10-profile.conf").endswith(
            "/portable/profile/strict/service.conf"
        )
        attached = tb.exec("portablectl", "is-attached", "lstest_1.0").stdout.strip()
        assert attached == "running"
    finally:
        tb.exec("portablectl", "detach", "--now", "--enable", "lstest_1.0", check=True)
    assert tb.exec("systemctl", "is-active", "lstest.service").stdout.strip() != "active"
    assert tb.exec("portablectl", "is-attached", "lstest_1.0").stdout.strip() == "detached"
    assert not tb.host_path("/etc/systemd/system.attached").exists()


def test_install_layershell_runs_inside(tb: Testbed) -> None:
    install_layershell(tb)
    assert tb.exec("core", "--version", check=True).stdout.strip()
    imported = tb.exec(
        "/opt/layershell/venv/bin/python", "-c", "import layershell.cli.core, yaml, zstandard"
    )
    assert imported.returncode == 0, imported.stderr
    assert (
        tb.exec("readlink", "/usr/local/bin/layer-shell")
        .stdout.strip()
        .endswith("/bin/layer-shell")
    )
    # core init installs the executor the wheel was built with (nothing is compiled).
    tb.exec("core", "init", "--create-users", check=True)
    helper = tb.host_path("/var/lib/layershell/libexec/layershell-enter")
    assert stat.S_IMODE(helper.stat().st_mode) == 0o755
    assert helper.read_bytes()[:4] == b"\x7fELF"
    assert tb.exec("test", "-x", "/var/lib/layershell/libexec/layershell-enter").returncode == 0


def test_hostile_archives_are_refused_on_the_testbeds_python(tb: Testbed) -> None:
    """The testbed has Debian 12's newest python3.11, whose tarfile parses headers in
    _frombuf() where older point releases (maybe the host's) use frombuf(): unpack's
    strict header rules must hold on both, so the hostile corpus runs there too."""
    install_layershell(tb)
    tb.copy_in(REPO / "tests", "/srv/lstests/tests")
    tb.copy_in(REPO / "pyproject.toml", "/srv/lstests/pyproject.toml")
    r = tb.exec(
        "sh", "-c",
        "cd /srv/lstests && /opt/layershell/venv/bin/python -m pytest -q -p no:cacheprovider "
        "tests/test_unpack.py",
        env={"LAYERSHELL_SKIP_INSTALL_CHECK": "1"},
        timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert " passed" in r.stdout and "skipped" not in r.stdout


def test_reboot_keeps_disk_state_and_clears_run(tb: Testbed) -> None:
    script = "echo kept > /var/lib/lstb-state; echo gone > /run/lstb-volatile"
    tb.exec("sh", "-c", script, check=True)
    old_nspawn, old_init = tb.nspawn_pid, tb.init_pid
    assert old_nspawn is not None and old_init is not None
    tb.reboot()
    assert tb.running
    assert tb.nspawn_pid != old_nspawn
    assert not os.path.exists(f"/proc/{old_nspawn}")
    assert not os.path.exists(f"/proc/{old_init}")
    assert tb.exec("systemctl", "is-system-running").stdout.strip() in ("running", "degraded")
    assert tb.exec("cat", "/var/lib/lstb-state").stdout == "kept\n"
    assert tb.exec("test", "-e", "/run/lstb-volatile").returncode == 1  # a real new boot


def test_stop_leaves_no_process_mount_or_root(tb: Testbed) -> None:
    loops_before = sorted(p for p in os.listdir("/dev") if p.startswith("loop"))
    nspawn, init, root = tb.nspawn_pid, tb.init_pid, tb.root
    assert nspawn is not None and init is not None
    assert init in tb.processes()  # the check below can see container processes
    tb.stop(keep=True)
    assert not tb.running
    assert not os.path.exists(f"/proc/{nspawn}")
    assert not os.path.exists(f"/proc/{init}")
    assert tb.processes() == []
    assert [m for m in mounts_under(root) if m != str(root)] == []  # root: tmpfs, kept
    assert not tb.pid_file.exists()
    assert sorted(p for p in os.listdir("/dev") if p.startswith("loop")) == loops_before
    tb.stop(keep=False)  # idempotent; now removes the instance
    assert mounts_under(root) == []
    assert not root.exists()
    assert not tb.instance_dir.exists()


def test_failed_boot_reports_the_log_and_cleans_up() -> None:
    require_testbed()

    def break_init(root: Path) -> None:
        for init in ("usr/lib/systemd/systemd", "usr/sbin/init"):
            (root / init).unlink(missing_ok=True)

    bed = Testbed(prepare=break_init, boot_timeout=30, keep=False)
    with pytest.raises(TestbedError, match="exited during boot") as failure, bed:
        pass
    assert "log:" in str(failure.value)
    assert not bed.running
    assert not bed.instance_dir.exists()


def test_boot_timeout_names_the_state_and_cleans_up() -> None:
    require_testbed()

    def block_boot(root: Path) -> None:
        # A oneshot that never finishes keeps multi-user.target, and the boot, pending.
        units = root / "etc/systemd/system"
        (units / "lstb-block.service").write_text(
            "[Service]\nType=oneshot\nExecStart=/usr/bin/sleep 600\n"
        )
        wants = units / "multi-user.target.wants"
        wants.mkdir(parents=True, exist_ok=True)
        (wants / "lstb-block.service").symlink_to("../lstb-block.service")

    bed = Testbed(prepare=block_boot, boot_timeout=3, keep=False)
    with pytest.raises(TestbedError, match=r"did not boot within 3 s \(state: starting\)"), bed:
        pass
    assert not bed.running
    assert bed.processes() == []
    assert not bed.instance_dir.exists()


def test_clean_stale_stops_what_a_killed_test_left(tmp_path: Path) -> None:
    require_testbed()
    orphan = (
        "import time\n"
        "from tests.testbed import Testbed\n"
        "tb = Testbed()\n"
        "tb.start()\n"
        "print(tb.name, tb.nspawn_pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    env = {**os.environ, "LAYERSHELL_TESTBED_WORK": str(tmp_path)}
    with subprocess.Popen(
        [sys.executable, "-c", orphan], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True
    ) as owner:
        assert owner.stdout is not None
        name, nspawn = owner.stdout.readline().split()
        assert clean_stale(tmp_path) == []  # its owner still runs: hands off
        owner.send_signal(signal.SIGKILL)  # no finalizer, no stop(): a crashed test run
    assert os.path.exists(f"/proc/{nspawn}")  # the container outlived its owner
    assert clean_stale(tmp_path) == [name]
    assert not os.path.exists(f"/proc/{nspawn}")
    assert not (tmp_path / name).exists()
