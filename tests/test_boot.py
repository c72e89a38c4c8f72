"""Issue 5 acceptance in a booted systemd (tests/testbed.py): the units core init installs,
the inbox path unit, and (with the real Ignition) the whole first boot."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from tests import testbed
from tests.packages import program, tarball

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


def wait_for(predicate: object, timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():  # type: ignore[operator]
            return time.monotonic() - start
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout} s")


def test_inbox_drop_is_installed_within_ten_seconds(initialised: testbed.Testbed) -> None:
    tb = initialised
    inbox = "/opt/inbox/default/arne"
    drop(tb, "broken_1.0.tar.gz", None, inbox)
    drop(tb, "dropped_1.0.tar.gz", program("dropped", "1.0"), inbox)
    took = wait_for(lambda: installed(tb).get("dropped") == "1.0", 10)
    assert took < 10
    wait_for(lambda: tb.host_path(f"{inbox}/failed/broken_1.0.tar.gz.reason").exists(), 10)
    reason = tb.host_path(f"{inbox}/failed/broken_1.0.tar.gz.reason").read_text()
    assert "broken_1.0.tar.gz: not a package archive (accepted formats:" in reason
    assert tb.host_path(f"{inbox}/done/dropped_1.0.tar.gz").exists()
    # A later drop still works after a failed one.
    drop(tb, "later_2.0.tar.gz", program("later", "2.0"), inbox)
    wait_for(lambda: installed(tb).get("later") == "2.0", 10)
    status = tb.exec("systemctl", "status", "--no-pager", "layershell-inbox.service").stdout
    assert "layershell" in status
