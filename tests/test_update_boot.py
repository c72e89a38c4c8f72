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
    - name: dual
      version: latest
      enable: [dual.service]
      start: [dual.service]
"""


def dual(version: str) -> dict[str, bytes | str]:
    """A package with a shim and a service (a generated image): both say their version."""
    return {
        "bin/dual": f'#!/bin/sh\necho "dual {version}"\n',
        "libexec/dual-daemon": "#!/bin/sh\nwhile :; do "
        f'echo "dual {version} running"; sleep 1; done\n',
        "usr/lib/systemd/system/dual.service": "[Unit]\nDescription=dual\n[Service]\n"
        "ExecStart=/opt/pkgs/dual/libexec/dual-daemon\n[Install]\nWantedBy=multi-user.target\n",
    }


DAEMON = {"libexec/dual-daemon": 0o755}


def publish_svcup(tb: testbed.Testbed, arch: str, version: str, *flags: str) -> None:
    """svcup VERSION into the repository (flags: mk-portable-package's, e.g. fail)."""
    tb.exec(
        "sh", "-c",
        f"mk-portable-package /srv/src/svcup-{version} svcup {version} {' '.join(flags)} && "
        f"tar -C /srv/src/svcup-{version} -czf /srv/repo/{arch}/svcup_{version}.tar.gz .",
        check=True,
    )  # fmt: skip


def publish(tb: testbed.Testbed, arch: str, version: str) -> None:
    publish_svcup(tb, arch, version)
    tarball(
        tb.root / f"srv/repo/{arch}/tool_{version}.tar.gz",
        {"bin/tool": f'#!/bin/sh\necho "tool {version}"\n'},
    )
    testbed.publish(tb, f"/srv/repo/{arch}")


def publish_dual(tb: testbed.Testbed, arch: str, version: str) -> None:
    tarball(tb.root / f"srv/repo/{arch}/dual_{version}.tar.gz", dual(version), modes=DAEMON)
    testbed.publish(tb, f"/srv/repo/{arch}")


def service_says(tb: testbed.Testbed, unit: str = "svcup.service") -> str:
    out = tb.exec("journalctl", "--no-pager", "-o", "cat", "-n", "1", "-u", unit).stdout
    return out.strip()


def wait_says(tb: testbed.Testbed, text: str, unit: str = "svcup.service") -> None:
    for _ in range(60):
        if service_says(tb, unit) == text:
            return
        time.sleep(0.25)
    raise AssertionError(f"{unit} says {service_says(tb, unit)!r}, not {text!r}")


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
        tarball(tb.root / f"srv/repo/{arch}/dual_1.0.tar.gz", dual("1.0"), modes=DAEMON)
        testbed.publish(tb, f"/srv/repo/{arch}")
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
    plan = json.loads(tb.exec("core", "update", "--dry-run", "--json", check=True).stdout)["plan"]
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
    for name in ("svcup", "tool"):  # held by the rollback; the other tests update them
        r = tb.exec("core", "unhold", name, timeout=300)
        assert r.returncode == 0 and "no longer held" in r.stdout, r.stdout + r.stderr
    r = tb.exec("core", "gc", "--keep", "0", timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    pkgs = {p.name for p in tb.host_path("/opt/pkgs").iterdir() if "_" in p.name}
    assert "svcup_2.0" not in pkgs and "tool_2.0" not in pkgs
    assert {"svcup_1.0", "tool_1.0"} <= pkgs
    assert not tb.host_path("/var/lib/portables/svcup_2.0").exists()
    assert tb.host_path("/var/lib/portables/svcup_1.0").is_dir()
    assert versions(tb)["svcup"] == "1.0"
    wait_says(tb, "svcup 1.0 running")


# Where SIGKILL lands in `core update`, and the version the host runs afterwards: before
# the record's commit the old one; after it the new one, finished by the repair unit.
KILLS = [
    ("fetched", "old"),  # the account's process, after the download
    ("unpacked", "old"),  # mid-install: the tree unpacked in staging
    ("before-commit", "old"),  # in /opt/pkgs, the record not written yet
    ("committed", "new"),  # the record says new; the link (every shim) not moved yet
    ("shims-switched", "new"),  # root's process: shims moved, the service not yet
]


def wait_repaired(tb: testbed.Testbed) -> None:
    """layershell-repair.path saw the journal of the killed operation: wait until the
    repair it started has finished (the journal is its last step)."""
    for _ in range(240):
        pending = tb.host_path("/var/lib/layershell/operation.json").exists()
        state = tb.exec("systemctl", "is-active", "layershell-repair.service").stdout.strip()
        if not pending and state != "activating":
            return
        time.sleep(0.25)
    log = tb.exec("journalctl", "--no-pager", "-u", "layershell-repair.service").stdout
    raise AssertionError(f"the interrupted update was not repaired:\n{log[-3000:]}")


def dual_runs(tb: testbed.Testbed, version: str) -> None:
    """Entirely `version`: the record, the shim, the attached image, the running service."""
    assert versions(tb)["dual"] == version
    assert tb.exec("runuser", "-u", "otto", "--", "dual").stdout.strip() == f"dual {version}"
    unit = tb.exec("systemctl", "cat", "dual.service").stdout
    assert f"RootDirectory=/var/lib/portables/dual_{version}" in unit
    wait_says(tb, f"dual {version} running", "dual.service")
    assert tb.exec("systemctl", "is-active", "dual.service").stdout.strip() == "active"


@pytest.mark.parametrize(("point", "after"), KILLS)
def test_sigkill_mid_update_leaves_one_version(
    bed: tuple[testbed.Testbed, str], point: str, after: str
) -> None:
    tb, arch = bed
    old = versions(tb)["dual"]
    new = f"{int(float(old)) + 1}.0"
    dual_runs(tb, old)
    publish_dual(tb, arch, new)
    r = tb.exec("core", "update", "dual", env={"LAYERSHELL_CRASH_AT": point}, timeout=300)
    assert r.returncode in (-9, 137), r.stdout + r.stderr  # killed, not finished
    wait_repaired(tb)
    dual_runs(tb, old if after == "old" else new)
    r = tb.exec("core", "update", "dual", timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    dual_runs(tb, new)


def test_update_whose_service_fails_goes_back_whole(bed: tuple[testbed.Testbed, str]) -> None:
    tb, arch = bed
    old = versions(tb)["svcup"]
    publish_svcup(tb, arch, "9.0", "fail")
    testbed.publish(tb, f"/srv/repo/{arch}")
    r = tb.exec("core", "update", "svcup", timeout=300)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"svcup 9.0: its service did not start; switching svcup back to {old}" in r.stderr
    assert "svcup 9.0 is broken on purpose" in r.stderr  # its journal lines, shown
    assert "removed svcup 9.0 (its service did not start)" in r.stderr
    assert versions(tb)["svcup"] == old
    wait_says(tb, f"svcup {old} running")
    assert tb.host_path(f"/var/lib/portables/svcup_{old}").is_dir()
    assert not tb.host_path("/opt/pkgs/svcup_9.0").exists()
    # The next check holds it back instead of flipping to 9.0 and back every day.
    plan = json.loads(tb.exec("core", "update", "--dry-run", "--json", "svcup").stdout)["plan"]
    assert plan[0]["new"] is None and f"held at {old}" in plan[0]["error"]
    # Installing it by name retries it: it fails again and goes back again.
    r = tb.exec("core", "install", "svcup", timeout=300)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"switching svcup back to {old}" in r.stderr
    wait_says(tb, f"svcup {old} running")
    # Killed after the failure, before going back: the repair goes back.
    r = tb.exec(
        "core", "install", "svcup", env={"LAYERSHELL_CRASH_AT": "switching-back"}, timeout=300
    )
    assert r.returncode in (-9, 137), r.stdout + r.stderr
    wait_repaired(tb)
    assert versions(tb)["svcup"] == old
    wait_says(tb, f"svcup {old} running")
    assert tb.exec("systemctl", "is-active", "svcup.service").stdout.strip() == "active"


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
