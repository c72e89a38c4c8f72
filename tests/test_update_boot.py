"""Issue 6 in a booted systemd: a shim package and a portable service move v1 -> v2 with
core update, back with core rollback, core gc removes v2 and nothing else; an OS update
(VERSION_ID changed, reboot) moves an OS-matched package to the new OS's build."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from tests import testbed
from tests.packages import tarball

pytestmark = pytest.mark.slow

MANIFEST = """\
composable:
  default_repository: file:///srv/repo
  packages:
    - name: svcup
      version: latest
      profile: default
      enable: [svcup.service]
      start: [svcup.service]
    - name: tool
      version: latest
    - name: osdep
      version: os
"""


def publish(tb: testbed.Testbed, arch: str, version: str) -> None:
    tb.exec(
        "sh", "-c",
        f"mk-portable-package /srv/src/svcup-{version} svcup {version} && "
        f"tar -C /srv/src/svcup-{version} -czf /srv/repo/{arch}/svcup_{version}.tar.gz .",
        check=True,
    )  # fmt: skip
    tarball(
        tb.root / f"srv/repo/{arch}/tool_{version}.tar.gz",
        {"bin/tool": f'#!/bin/sh\necho "tool {version}"\n'},
    )
    tb.exec("core", "repo", "index", f"/srv/repo/{arch}", check=True)


def service_says(tb: testbed.Testbed, unit: str = "svcup.service") -> str:
    out = tb.exec("journalctl", "--no-pager", "-o", "cat", "-n", "1", "-u", unit).stdout
    return out.strip()


def wait_says(tb: testbed.Testbed, text: str) -> None:
    for _ in range(60):
        if service_says(tb) == text:
            return
        time.sleep(0.25)
    raise AssertionError(f"svcup says {service_says(tb)!r}, not {text!r}")


def versions(tb: testbed.Testbed) -> dict[str, str]:
    rows = json.loads(tb.exec("core", "list", "--json", check=True).stdout)
    return {r["name"]: r["version"] for r in rows}


@pytest.fixture(scope="module")
def bed() -> Iterator[tuple[testbed.Testbed, str]]:
    testbed.require_testbed()

    tb = testbed.Testbed(prepare=testbed.add_portable_builder)
    tb.start()
    try:
        testbed.install_layershell(tb)
        arch = tb.exec("uname", "-m", check=True).stdout.strip()
        tb.exec("mkdir", "-p", f"/srv/repo/{arch}", "/etc/layershell", check=True)
        host_os = tb.exec("sh", "-c", ". /etc/os-release; echo $VERSION_ID").stdout.strip()
        for v in (host_os, str(int(host_os) + 1)):
            tarball(tb.root / f"srv/repo/{arch}/osdep_{v}.tar.gz",
                    {"bin/osdep": f'#!/bin/sh\necho "osdep for OS {v}"\n'})  # fmt: skip
        publish(tb, arch, "1.0")
        tb.write("/etc/layershell/composable.yaml", MANIFEST)
        r = tb.exec("core", "firstboot", timeout=600)
        assert r.returncode == 0, r.stdout + r.stderr
        yield tb, arch
    finally:
        tb.stop()


def test_update_rollback_gc(bed: tuple[testbed.Testbed, str]) -> None:
    tb, arch = bed
    wait_says(tb, "svcup 1.0 running")
    assert tb.exec("runuser", "-u", "otto", "--", "tool").stdout.strip() == "tool 1.0"
    publish(tb, arch, "2.0")
    plan = json.loads(tb.exec("core", "update", "--dry-run", "--json", check=True).stdout)
    assert {(p["name"], p["new"]) for p in plan if p["new"]} == {("svcup", "2.0"), ("tool", "2.0")}
    r = tb.exec("core", "update", timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    wait_says(tb, "svcup 2.0 running")
    assert tb.exec("runuser", "-u", "otto", "--", "tool").stdout.strip() == "tool 2.0"
    assert tb.host_path("/var/lib/portables/svcup_2.0").is_dir()
    for name in ("svcup", "tool"):
        r = tb.exec("core", "rollback", name, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
    wait_says(tb, "svcup 1.0 running")
    assert tb.exec("runuser", "-u", "otto", "--", "tool").stdout.strip() == "tool 1.0"
    r = tb.exec("core", "gc", timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    pkgs = {p.name for p in tb.host_path("/opt/pkgs").iterdir() if "_" in p.name}
    assert "svcup_2.0" not in pkgs and "tool_2.0" not in pkgs
    assert {"svcup_1.0", "tool_1.0"} <= pkgs
    assert not tb.host_path("/var/lib/portables/svcup_2.0").exists()
    assert tb.host_path("/var/lib/portables/svcup_1.0").is_dir()
    assert versions(tb)["svcup"] == "1.0"
    wait_says(tb, "svcup 1.0 running")


def test_os_update_moves_os_matched_package(bed: tuple[testbed.Testbed, str]) -> None:
    tb, _ = bed
    host_os = tb.exec("sh", "-c", ". /etc/os-release; echo $VERSION_ID").stdout.strip()
    assert versions(tb)["osdep"] == host_os
    newer = str(int(host_os) + 1)
    release = tb.host_path("/usr/lib/os-release")
    text = release.read_text().replace(f'VERSION_ID="{host_os}"', f'VERSION_ID="{newer}"')
    release.write_text(text)
    tb.reboot()
    for _ in range(60):
        if versions(tb).get("osdep") == newer:
            break
        time.sleep(0.25)
    assert versions(tb)["osdep"] == newer
    r = tb.exec("runuser", "-u", "otto", "--", "osdep")
    assert r.stdout.strip() == f"osdep for OS {newer}"
