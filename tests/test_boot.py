"""Issue 5 acceptance in a booted systemd (tests/testbed.py): the units core init installs,
the inbox path unit, and (with the real Ignition) the whole first boot."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import ignition_tools, testbed
from tests.packages import Repository, program, tarball
from tests.servers import HttpRepo
from tests.support import make_shared_dir
from tests.test_ignition import run_ignition

pytestmark = pytest.mark.slow


def installed(tb: testbed.Testbed) -> dict[str, str]:
    r = tb.exec("core", "list", "--json")
    return {x["name"]: x["version"] for x in json.loads(r.stdout or "[]")}


@pytest.fixture(scope="module")
def initialised() -> Iterator[testbed.Testbed]:
    testbed.require_testbed()
    tb = testbed.Testbed()
    tb.start()
    try:
        testbed.install_layershell(tb)
        r = tb.exec("core", "init", "--create-users")
        assert r.returncode == 0, r.stdout + r.stderr
        yield tb
    finally:
        tb.stop()


def test_units_installed_and_enabled_by_preset(initialised: testbed.Testbed) -> None:
    tb = initialised
    for unit, state in (("layershell-firstboot.service", "enabled"),
                        ("layershell-inbox.path", "enabled")):  # fmt: skip
        assert tb.exec("systemctl", "is-enabled", unit).stdout.strip() == state
    assert tb.exec("systemctl", "is-active", "layershell-inbox.path").stdout.strip() == "active"
    preset = tb.host_path("/etc/systemd/system-preset/50-layershell.preset").read_text()
    assert "enable layershell-firstboot.service" in preset


def drop(tb: testbed.Testbed, name: str, files: dict[str, bytes | str] | None, dest: str) -> None:
    """Put a tarball in the inbox the way a careful admin does: write, then rename."""
    staging = tb.host_path("/var/tmp") / name
    if files is None:
        staging.write_bytes(b"this is not a tarball")
    else:
        tarball(staging, files)
    r = tb.exec("mv", f"/var/tmp/{name}", f"{dest}/{name}")
    assert r.returncode == 0, r.stderr


def wait_for(predicate: object, timeout: float, tb: testbed.Testbed | None = None) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():  # type: ignore[operator]
            return time.monotonic() - start
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout} s" + (f"\n{inbox_journal(tb)}" if tb else ""))


def inbox_journal(tb: testbed.Testbed) -> str:
    """What the inbox and repair units did, for a failure message."""
    units = ("layershell-inbox.service", "layershell-inbox.path", "layershell-repair.service")
    argv = ["journalctl", "--no-pager", "-o", "short-precise"]
    return tb.exec(*argv, *(a for u in units for a in ("-u", u))).stdout


def test_inbox_drop_is_installed_within_ten_seconds(initialised: testbed.Testbed) -> None:
    tb = initialised
    inbox = "/opt/inbox/default/arne"
    drop(tb, "broken_1.0.tar.gz", None, inbox)
    drop(tb, "dropped_1.0.tar.gz", program("dropped", "1.0"), inbox)
    took = wait_for(lambda: installed(tb).get("dropped") == "1.0", 10, tb)
    assert took < 10
    wait_for(lambda: tb.host_path(f"{inbox}/failed/broken_1.0.tar.gz.reason").exists(), 10)
    reason = tb.host_path(f"{inbox}/failed/broken_1.0.tar.gz.reason").read_text()
    assert "broken_1.0.tar.gz: not a package archive (accepted formats:" in reason
    # The record comes first, the move to done/ right after it.
    wait_for(lambda: tb.host_path(f"{inbox}/done/dropped_1.0.tar.gz").exists(), 10)
    # A later drop still works after a failed one.
    drop(tb, "later_2.0.tar.gz", program("later", "2.0"), inbox)
    wait_for(lambda: installed(tb).get("later") == "2.0", 10, tb)
    status = tb.exec("systemctl", "status", "--no-pager", "layershell-inbox.service").stdout
    assert "layershell" in status


# --- the whole chain: core ignition -> real Ignition -> first boot -> reboot ------------

DATA = Path(__file__).resolve().parent / "data"


def first_boot_repository(work: Path) -> tuple[HttpRepo, Path]:
    """A repository on loopback HTTP with a shim package (greet) and a portable-service
    package (svcweb), and the manifest asking for both; the server is started."""
    repo = Repository(work / "repo")
    repo.add("greet", "v1", {"bin/greet": '#!/bin/sh\necho "greet v1 says hi to $(id -un)"\n'})
    image = work / "svcweb-tree"
    subprocess.run(
        ["sh", str(DATA / "mk-portable-package.sh"), str(image), "svcweb", "1.0"],
        check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(
        ["tar", "-C", str(image), "-czf", str(repo.arch_dir / "svcweb_1.0.tar.gz"), "."],
        check=True,
    )
    repo.index()
    http = HttpRepo(work).start()
    manifest = work / "composable.yaml"
    manifest.write_text(
        f"composable:\n  default_repository: {http.url}/repo\n  packages:\n"
        "    - name: greet\n      version: latest\n      profile: default\n"
        "    - name: svcweb\n      version: '1.0'\n      profile: strict\n"
        "      enable: [svcweb.service]\n      start: [svcweb.service]\n"
    )
    return http, manifest


def render_config(manifest: Path, out: Path, *args: str) -> None:
    """`core ignition` as an admin runs it (this host's layershell, the admin's copy of
    the repository's key), then the real ignition-validate."""
    from tests import signing

    keys = out.parent / "admin-keys"
    signing.key().trust(keys)
    r = subprocess.run(
        [sys.executable, "-m", "layershell", "ignition", str(manifest), "-o", str(out),
         "--keys-dir", str(keys), *args],
        capture_output=True, text=True, check=False, cwd="/",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    ignition_tools.validate(ignition_tools.require(), out)


def provision_first_boot(root: Path, config: Path, work: Path) -> None:
    """The root as Ignition leaves it before systemd's first boot (a Testbed prepare step)."""
    (root / "etc/machine-id").write_text("uninitialized\n")  # systemd's first boot
    # The testbed has only loopback: without this, network-online.target (which the
    # first-boot unit waits for, the manifest naming an http repository) would wait
    # for systemd-networkd-wait-online's two-minute timeout.
    mask = root / "etc/systemd/system/systemd-networkd-wait-online.service"
    mask.parent.mkdir(parents=True, exist_ok=True)
    mask.symlink_to("/dev/null")
    (root / "etc/selinux").mkdir(exist_ok=True)
    (root / "etc/selinux/config").write_text("SELINUX=disabled\nSELINUXTYPE=targeted\n")
    run_ignition(ignition_tools.require(), config, root, work)


@pytest.fixture(scope="module")
def first_booted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[testbed.Testbed]:
    testbed.require_testbed()
    ignition_tools.require()
    work = make_shared_dir("layershell-firstboot-")
    http, manifest = first_boot_repository(work)
    config = work / "config.ign"
    render_config(manifest, config)
    tb = testbed.Testbed()

    def prepare(root: Path) -> None:
        provision_first_boot(root, config, Path(tmp_path_factory.mktemp("ignition")))
        testbed.install_layershell(tb)

    try:
        tb.start(prepare=prepare)
        yield tb
    finally:
        tb.stop()
        http.stop()
        shutil.rmtree(work, ignore_errors=True)


def test_first_boot_installs_both_packages(first_booted: testbed.Testbed) -> None:
    tb = first_booted
    assert tb.host_path("/var/lib/layershell/firstboot.stamp").exists()
    assert installed(tb) == {"greet": "v1", "svcweb": "1.0"}
    # The key the signed repository was checked with, for the host's own updates.
    from tests import signing

    key = tb.host_path(f"/etc/layershell/keys/{signing.TEST_KEY_FILE}")
    assert key.read_bytes() == signing.key().public
    r = tb.exec("runuser", "-u", "otto", "--", "/usr/local/bin/greet")
    assert r.stdout.strip() == "greet v1 says hi to otto", r.stderr
    journal = tb.exec(
        "journalctl", "--no-pager", "-o", "cat", "-u", "layershell-firstboot", "-u", "svcweb"
    ).stdout
    assert tb.exec("systemctl", "is-active", "svcweb.service").stdout.strip() == "active", journal
    drop_in = tb.host_path("/etc/systemd/system.attached/svcweb.service.d/10-profile.conf")
    strict = tb.host_path("/usr/lib/systemd/portable/profile/strict/service.conf")
    assert drop_in.read_text() == strict.read_text()


def test_after_reboot_service_is_back_and_first_boot_did_not_run_again(
    first_booted: testbed.Testbed,
) -> None:
    tb = first_booted
    stamp = tb.host_path("/var/lib/layershell/firstboot.stamp")
    before = stamp.read_text()
    tb.reboot()
    state = ""
    for _ in range(50):
        state = tb.exec("systemctl", "is-active", "svcweb.service").stdout.strip()
        if state == "active":
            break
        time.sleep(0.2)
    assert state == "active"
    shown = tb.exec(
        "systemctl", "show", "-p", "ConditionResult", "layershell-firstboot.service"
    ).stdout.strip()
    assert shown == "ConditionResult=no"  # skipped: the stamp exists
    assert stamp.read_text() == before
