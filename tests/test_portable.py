"""Issue 4 acceptance, portable services, in a booted systemd (tests/testbed.py): a
package that is a portable image is attached under each of the four profiles, started,
checked, survives a reboot, is detached by core remove, and a failing unit is reported
and rolled back. layershell runs inside the container as it would on a host, as root
handing installs to the layer account."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from tests import testbed
from tests.packages import tarball

pytestmark = pytest.mark.slow

PROFILES = {  # profile -> (install_method, listener port)
    "default": ("copy", 8101),
    "trusted": ("symlink", 8102),
    "nonetwork": ("copy", 8103),
    "strict": ("symlink", 8104),
}
ATTACHED = "/etc/systemd/system.attached"


def manifest(names: dict[str, tuple[str, str]]) -> str:
    lines = ["composable:", "  default_repository: file:///srv/repo", "  packages:"]
    for name, (profile, method) in names.items():
        lines += [
            f"    - name: {name}",
            "      version: '1.0'",
            f"      profile: {profile}",
            f"      install_method: {method}",
            f"      enable: [{name}.service]",
            f"      start: [{name}.service]",
        ]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def bed() -> Iterator[testbed.Testbed]:
    with testbed.with_layershell() as (tb, arch):
        builds = [(f"svc{p}", ["listen", str(port)]) for p, (_, port) in PROFILES.items()]
        builds.append(("svcbad", ["fail"]))
        for name, extra in builds:
            tb.exec(
                "sh", "-c",
                f"mk-portable-package /srv/src/{name} {name} 1.0 {' '.join(extra)} && "
                f"mkdir -p /srv/repo/{arch} && "
                f"tar -C /srv/src/{name} -czf /srv/repo/{arch}/{name}_1.0.tar.gz .",
                check=True, timeout=300,
            )  # fmt: skip
        testbed.publish(tb, f"/srv/repo/{arch}")
        # The host's own manifest: only it can grant a package's service `trusted`.
        tb.write(
            "/etc/layershell/composable.yaml",
            manifest({f"svc{p}": (p, m) for p, (m, _) in PROFILES.items()}),
        )
        tb.write("/srv/bad.yaml", manifest({"svcbad": ("default", "copy")}))
        # A code package: a program and a unit, no os-release (a generated image).
        tarball(
            tb.root / f"srv/repo/{arch}/webcode_1.0.tar.gz",
            {
                "bin/webcode": "#!/bin/sh\nexec /usr/bin/python3 -m http.server --bind "
                "127.0.0.1 --directory /opt/pkgs/webcode/www 8110\n",
                "www/index.html": "served by webcode from core's /usr\n",
                "usr/lib/systemd/system/webcode.service": "[Unit]\nDescription=webcode\n"
                "[Service]\nExecStart=/opt/pkgs/webcode/bin/webcode\n"
                "[Install]\nWantedBy=multi-user.target\n",
            },
        )
        testbed.publish(tb, f"/srv/repo/{arch}")
        tb.write("/srv/code.yaml", manifest({"webcode": ("default", "copy")}))
        r = tb.exec("core", "install", "--quiet", timeout=600)
        assert r.returncode == 0, r.stdout + r.stderr
        yield tb


@pytest.mark.parametrize("profile", list(PROFILES))
def test_attached_and_active_under_each_profile(bed: testbed.Testbed, profile: str) -> None:
    unit = f"svc{profile}.service"
    assert bed.exec("systemctl", "is-active", unit).stdout.strip() == "active"
    # The profile drop-in is systemd's own file for that profile (copied or linked).
    drop_in = bed.host_path(f"{ATTACHED}/{unit}.d/10-profile.conf")
    shipped = bed.host_path(f"/usr/lib/systemd/portable/profile/{profile}/service.conf")
    assert drop_in.read_text() == shipped.read_text()
    show = bed.exec("systemctl", "cat", unit).stdout
    assert f"RootDirectory=/var/lib/portables/svc{profile}_1.0" in show


@pytest.mark.parametrize("profile", list(PROFILES))
def test_copy_or_symlink(bed: testbed.Testbed, profile: str) -> None:
    unit = bed.root / ATTACHED.lstrip("/") / f"svc{profile}.service"  # not followed
    method = PROFILES[profile][0]
    assert unit.is_symlink() is (method == "symlink")
    if method == "symlink":
        assert str(unit.readlink()).startswith(f"/var/lib/portables/svc{profile}_1.0/")
    else:
        assert "ExecStart=" in unit.read_text()


def curl(bed: testbed.Testbed, port: int) -> str:
    for _ in range(50):
        r = bed.exec("curl", "-fsS", "--max-time", "2", f"http://127.0.0.1:{port}/")
        if r.returncode == 0:
            return r.stdout
        time.sleep(0.1)
    return ""


@pytest.mark.parametrize(
    ("profile", "listens"),
    [("default", True), ("trusted", True), ("nonetwork", False), ("strict", False)],
)
def test_loopback_listen_per_profile(bed: testbed.Testbed, profile: str, listens: bool) -> None:
    unit = f"svc{profile}-listen.service"
    port = PROFILES[profile][1]
    bed.exec("systemctl", "start", unit)
    try:
        answer = curl(bed, port) if listens else ""
        if listens:
            assert answer.strip() == f"hello from svc{profile} 1.0"
        else:
            time.sleep(1)
            state = bed.exec("systemctl", "is-active", unit).stdout.strip()
            journal = bed.exec("journalctl", "--no-pager", "-o", "cat", "-u", unit).stdout
            assert state != "active" or curl(bed, port) == "", journal
            assert "Address family not supported" in journal, journal
    finally:
        bed.exec("systemctl", "stop", unit)
        bed.exec("systemctl", "reset-failed", unit)


def test_failing_unit_is_reported_and_rolled_back(bed: testbed.Testbed) -> None:
    r = bed.exec("core", "install", "--quiet", "--config", "/srv/bad.yaml", timeout=300)
    assert r.returncode == 1
    assert "svcbad.service did not start" in r.stderr
    assert "svcbad 1.0 is broken on purpose" in r.stderr  # its last log lines
    assert not bed.host_path(f"{ATTACHED}/svcbad.service").exists()
    assert not bed.host_path("/var/lib/portables/svcbad_1.0").exists()
    assert bed.exec("systemctl", "is-active", "svcbad.service").stdout.strip() != "active"


def test_enabled_services_come_back_after_reboot(bed: testbed.Testbed) -> None:
    bed.reboot()
    for profile in PROFILES:
        unit = f"svc{profile}.service"
        state = ""
        for _ in range(50):
            state = bed.exec("systemctl", "is-active", unit).stdout.strip()
            if state == "active":
                break
            time.sleep(0.2)
        assert state == "active", unit


def test_remove_detaches_and_leaves_no_unit_files(bed: testbed.Testbed) -> None:
    r = bed.exec("core", "remove", "svcstrict", timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    leftovers = (
        [p for p in bed.host_path(ATTACHED).rglob("*svcstrict*")]
        if bed.host_path(ATTACHED).exists()
        else []
    )
    assert leftovers == []
    assert not bed.host_path("/var/lib/portables/svcstrict_1.0").exists()
    assert bed.exec("systemctl", "is-active", "svcstrict.service").stdout.strip() != "active"
    assert bed.exec("systemctl", "is-active", "svcdefault.service").stdout.strip() == "active"


def test_code_package_with_units_gets_a_generated_image(bed: testbed.Testbed) -> None:
    r = bed.exec("core", "install", "--quiet", "--config", "/srv/code.yaml", timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    image = bed.host_path("/var/lib/portables/webcode_1.0")
    assert (image / "usr/lib/os-release").read_text().startswith("ID=layershell-webcode")
    assert bed.exec("systemctl", "is-active", "webcode.service").stdout.strip() == "active"
    assert curl(bed, 8110).strip() == "served by webcode from core's /usr"
    rows = json.loads(bed.exec("core", "list", "--json", check=True).stdout)
    assert "webcode_1.0 (portable)" in next(x["exposes"] for x in rows if x["name"] == "webcode")
    assert not bed.host_path("/usr/local/bin/python3").exists()


def test_expose_and_unexpose_a_service(bed: testbed.Testbed) -> None:
    unit = "svcdefault-listen.service"
    r = bed.exec("core", "expose", "svcdefault", "--service", unit, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert bed.exec("systemctl", "is-active", unit).stdout.strip() == "active"
    assert curl(bed, 8101).strip() == "hello from svcdefault 1.0"
    r = bed.exec("core", "unexpose", "svcdefault", "--service", unit, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert bed.exec("systemctl", "is-active", unit).stdout.strip() != "active"
    assert bed.exec("systemctl", "is-active", "svcdefault.service").stdout.strip() == "active"


def test_same_unit_name_from_two_images_is_refused_clearly(bed: testbed.Testbed) -> None:
    arch = bed.exec("uname", "-m", check=True).stdout.strip()
    # A second package whose image ships svctrusted.service: same unit name.
    bed.exec(
        "sh", "-c",
        f"mk-portable-package /srv/src/svctrusted-x svctrusted 2.0 && mkdir -p /srv/other/{arch}"
        f" && tar -C /srv/src/svctrusted-x -czf /srv/other/{arch}/svctrusted_2.0.tar.gz .",
        check=True,
    )  # fmt: skip
    r = bed.exec("core", "remove", "svctrusted", timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    # The host now ships svctrusted.service itself (as another image or an admin would).
    bed.write("/etc/systemd/system/svctrusted.service", "[Service]\nExecStart=/bin/true\n")
    try:
        testbed.publish(bed, f"/srv/other/{arch}")
        r = bed.exec("core", "install", f"file:///srv/other/{arch}/svctrusted_2.0", timeout=300)
        assert r.returncode == 1
        assert "/etc/systemd/system/svctrusted.service already exist" in r.stderr
        assert "same unit name" in r.stderr
    finally:
        bed.exec("rm", "-f", "/etc/systemd/system/svctrusted.service")


def test_trusted_needs_the_hosts_manifest(bed: testbed.Testbed) -> None:
    arch = bed.exec("uname", "-m", check=True).stdout.strip()
    bed.exec(
        "sh", "-c",
        f"mk-portable-package /srv/src/svcown svcown 1.0 && "
        f"tar -C /srv/src/svcown -czf /srv/repo/{arch}/svcown_1.0.tar.gz .",
        check=True,
    )  # fmt: skip
    testbed.publish(bed, f"/srv/repo/{arch}")
    bed.write("/srv/own.yaml", manifest({"svcown": ("trusted", "copy")}))
    r = bed.exec("core", "install", "--quiet", "--config", "/srv/own.yaml", timeout=300)
    assert r.returncode == 1
    assert "the trusted profile (no sandbox) must come from the host's manifest" in r.stderr
    assert not bed.host_path(f"{ATTACHED}/svcown.service").exists()
