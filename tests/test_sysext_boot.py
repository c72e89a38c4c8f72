"""Issue 12's acceptance: layershell reaches an image-based host as a system extension.

A root like Fedora CoreOS's as far as layershell can tell (no python3, no C compiler,
/usr read-only, /usr/local a link into /var) gets the config `core ignition --sysext`
renders, through the real Ignition files stage; it boots with a real systemd 252, whose
systemd-sysext merges the image from /etc/extensions (a loop device), and the image's
first-boot unit does the rest. Then a reboot, and an update to a second image.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from layershell import __version__
from layershell.host import origin
from tests import support, testbed
from tests.support import BuiltImage, make_shared_dir
from tests.test_boot import first_boot_repository, provision_first_boot, render_config

pytestmark = pytest.mark.slow

EXTENSIONS = "/opt/extensions/layershell"
LINK = "/etc/extensions/layershell.raw"
BIN = "usr/lib/layershell/_internal/layershell/_bin"
BUMPED = f"{__version__}.post1"
CHECKOUT_UNITS = support.CHECKOUT / "units"


@dataclass
class Host:
    tb: testbed.Testbed
    image: BuiltImage
    work: Path


def installed(tb: testbed.Testbed) -> dict[str, str]:
    r = tb.exec("core", "list", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    return {x["name"]: x["version"] for x in json.loads(r.stdout)}


def journal(tb: testbed.Testbed) -> str:
    units = ("layershell-extension", "systemd-sysext", "layershell-firstboot", "svcweb")
    argv = ["journalctl", "--no-pager", "-o", "short-precise", "-b"]
    return tb.exec(*argv, *(a for u in units for a in ("-u", u))).stdout[-6000:]


def wait_active(tb: testbed.Testbed, unit: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        state = tb.exec("systemctl", "is-active", unit).stdout.strip()
        if state == "active":
            return
        if state == "failed":
            break
        time.sleep(0.5)
    raise AssertionError(f"{unit} is {state!r}\n{journal(tb)}")


def like_coreos(root: Path) -> None:
    """/usr/local is a link into /var, as on Fedora CoreOS (where /usr is read-only)."""
    local = root / "usr/local"
    shutil.move(str(local), str(root / "var/usrlocal"))
    local.symlink_to("../var/usrlocal")


def serve_image(work: Path, built: BuiltImage) -> str:
    """The image and its SHA256SUMS under work/images (served by the test's HTTP
    server), as a sysext-bakery style release; returns its path below the server."""
    images = work / "images"
    images.mkdir(exist_ok=True)
    name = os.path.basename(built.image.path)
    shutil.copy(built.image.path, images / name)
    shutil.copy(Path(built.image.path).parent / "SHA256SUMS", images / "SHA256SUMS")
    return f"images/{name}"


@pytest.fixture(scope="module")
def host(sysext_built: BuiltImage, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    testbed.require_testbed()
    work = make_shared_dir("layershell-sysext-boot-")
    http, manifest = first_boot_repository(work)
    config = work / "config.ign"
    image_path = serve_image(work, sysext_built)
    render_config(manifest, config, "--sysext", f"{http.url}/{image_path}")
    tb = testbed.Testbed(include=testbed.BARE_INCLUDE)
    # /usr read-only, as on an image-based host: systemd-sysext merges over it.
    tb.nspawn_args = (f"--bind-ro={tb.root / 'usr'}:/usr",)

    def prepare(root: Path) -> None:
        like_coreos(root)
        provision_first_boot(root, config, Path(tmp_path_factory.mktemp("ignition")))

    try:
        tb.start(prepare=prepare)
        yield Host(tb, sysext_built, work)
    finally:
        tb.stop()
        http.stop()
        shutil.rmtree(work, ignore_errors=True)


def test_the_root_has_no_python_no_compiler_and_a_read_only_usr(host: Host) -> None:
    tb = host.tb
    for program in ("python3", "python3.11", "python", "cc", "gcc", "c99", "tcc", "clang"):
        r = tb.exec("sh", "-c", f"command -v {program}")
        assert r.returncode != 0 and r.stdout == "", program
    assert not [p for p in os.listdir(tb.root / "usr/bin") if p.startswith("python")]
    r = tb.exec("touch", "/usr/lib/layershell-was-here")
    assert r.returncode != 0 and "Read-only file system" in r.stderr


def test_systemd_sysext_merged_the_image_and_core_says_so(host: Host) -> None:
    tb = host.tb
    r = tb.exec("systemd-sysext", "list", "--no-legend", check=True)
    assert "layershell" in r.stdout, r.stdout
    merged = tb.exec("systemd-sysext", "status", "--no-legend", check=True).stdout
    assert "layershell" in merged, merged
    r = tb.exec("core", "--version", check=True)
    assert r.stdout.splitlines() == [
        f"core, version {__version__}",
        f"running from: extension {origin.EXTENSION_APP}",
    ]
    assert (
        tb.exec("readlink", "-f", "/usr/bin/core").stdout.strip()
        == "/usr/lib/layershell/layershell"
    )
    assert (
        tb.exec("systemctl", "is-active", "layershell-extension.service").stdout.strip() == "active"
    )
    # The image's units are the ones systemd runs, not copies in /etc.
    shown = tb.exec("systemctl", "show", "-p", "FragmentPath", "layershell-firstboot.service")
    fragment = shown.stdout.strip().removeprefix("FragmentPath=")  # Debian says /lib/...
    resolved = tb.exec("readlink", "-f", fragment, check=True).stdout.strip()
    assert resolved == "/usr/lib/systemd/system/layershell-firstboot.service", fragment
    assert not tb.host_path("/etc/systemd/system/layershell-firstboot.service").exists()


def test_first_boot_installed_both_packages_and_otto_runs_the_shim(host: Host) -> None:
    tb = host.tb
    wait_active(tb, "layershell-firstboot.service")
    assert tb.host_path("/var/lib/layershell/firstboot.stamp").exists(), journal(tb)
    assert installed(tb) == {"greet": "v1", "svcweb": "1.0"}
    r = tb.exec("runuser", "-u", "otto", "--", "greet")
    assert r.stdout.strip() == "greet v1 says hi to otto", r.stderr + journal(tb)
    # the shim is in /usr/local/bin, which is /var/usrlocal/bin here
    assert tb.host_path("/usr/local/bin/greet") == tb.root / "var/usrlocal/bin/greet"
    for account in ("arne", "otto"):
        entry = tb.exec("getent", "passwd", account, check=True).stdout.strip()
        assert entry.endswith(":/usr/bin/layer-shell"), entry
    r = tb.exec("runuser", "-u", "otto", "--", "/usr/bin/layer-shell", "-c", "id -un")
    assert r.stdout.strip() == "otto", r.stderr


def test_core_shell_opens_a_pam_session_through_the_frozen_program(host: Host) -> None:
    """python-pam in the image, the host's libpam and modules (none is bundled)."""
    r = host.tb.exec("core", "shell", "--layer", "otto", "--", "sh", "-c", "id -un; echo $HOME")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "otto", r.stdout


def test_the_service_is_active_under_strict(host: Host) -> None:
    tb = host.tb
    wait_active(tb, "svcweb.service")
    drop_in = tb.host_path("/etc/systemd/system.attached/svcweb.service.d/10-profile.conf")
    strict = tb.host_path("/usr/lib/systemd/portable/profile/strict/service.conf")
    assert drop_in.read_text() == strict.read_text()


def test_the_executor_is_the_one_in_the_image(host: Host) -> None:
    record = json.loads((host.image.tree / BIN / "build.json").read_text())
    installed_executor = host.tb.host_path("/var/lib/layershell/libexec/layershell-enter")
    assert (
        installed_executor.read_bytes() == (host.image.tree / BIN / "layershell-enter").read_bytes()
    )
    r = host.tb.exec("/var/lib/layershell/libexec/layershell-enter", "--version", check=True)
    assert r.stdout.strip().endswith(record["layershell-enter"]["build"])


def test_after_a_reboot_all_is_back_and_first_boot_is_skipped(host: Host) -> None:
    tb = host.tb
    stamp = tb.host_path("/var/lib/layershell/firstboot.stamp")
    before = stamp.read_text()
    tb.reboot()
    wait_active(tb, "svcweb.service")
    wait_active(tb, "layershell-extension.service")
    shown = tb.exec("systemctl", "show", "-p", "ConditionResult", "layershell-firstboot.service")
    assert shown.stdout.strip() == "ConditionResult=no"  # skipped: the stamp exists
    assert stamp.read_text() == before
    assert installed(tb) == {"greet": "v1", "svcweb": "1.0"}
    r = tb.exec("runuser", "-u", "otto", "--", "greet")
    assert r.stdout.strip() == "greet v1 says hi to otto", r.stderr
    assert tb.exec("systemctl", "is-active", "layershell-inbox.path").stdout.strip() == "active"


def bumped_checkout(base: Path) -> Path:
    """This checkout as its next release: a new version and a changed executor source
    (so the executor's build id changes too)."""
    copy = base / "checkout"
    ignore = shutil.ignore_patterns(
        ".git", "build", "__pycache__", ".*_cache", "*.egg-info", "_bin"
    )
    shutil.copytree(support.CHECKOUT, copy, ignore=ignore)
    init = copy / "layershell/__init__.py"
    init.write_text(init.read_text().replace(f'"{__version__}"', f'"{BUMPED}"'))
    assert f'"{BUMPED}"' in init.read_text()
    with open(copy / "layershell/layers/enter.c", "a") as f:
        f.write("/* the next release */\n")
    return copy


def test_a_second_image_replaces_the_first_and_everything_survives(
    host: Host, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tb = host.tb
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(host.image.image.epoch + 60))
    new = support.build_sysext(tmp_path, bumped_checkout(tmp_path), work=host.image.work)
    name = os.path.basename(new.image.path)
    assert name == f"layershell-{BUMPED}-{origin.ARCHITECTURES[os.uname().machine]}.raw"
    old_build = json.loads((host.image.tree / BIN / "build.json").read_text())
    new_build = json.loads((new.tree / BIN / "build.json").read_text())
    assert old_build["layershell-enter"]["build"] != new_build["layershell-enter"]["build"]
    # The documented procedure (docs/boot.md, "Updating layershell").
    tb.copy_in(new.image.path, f"{EXTENSIONS}/{name}")
    tb.exec("ln", "-sfn", f"{EXTENSIONS}/{name}", LINK, check=True)
    tb.exec("systemd-sysext", "refresh", check=True)
    tb.exec("systemctl", "daemon-reload", check=True)
    # Copies an earlier core init from a pip installation wrote would hide the image's
    # units: core init removes those (its marker), and leaves anyone else's alone.
    ours = (CHECKOUT_UNITS / "layershell-update.service").read_text()
    tb.write("/etc/systemd/system/layershell-update.service", ours)
    tb.write("/etc/systemd/system/layershell-repair.service", "[Service]\nExecStart=/bin/true\n")
    r = tb.exec("core", "init", check=True)
    said = r.stdout + r.stderr
    assert "replaced /var/lib/layershell/libexec/layershell-enter" in said
    assert "removed /etc/systemd/system/layershell-update.service" in said
    assert not tb.host_path("/etc/systemd/system/layershell-update.service").exists()
    assert "left /etc/systemd/system/layershell-repair.service alone" in said
    tb.exec("rm", "/etc/systemd/system/layershell-repair.service", check=True)
    tb.exec("systemctl", "daemon-reload", check=True)
    r = tb.exec("core", "--version", check=True)
    assert r.stdout.splitlines()[0] == f"core, version {BUMPED}"
    assert installed(tb) == {"greet": "v1", "svcweb": "1.0"}
    r = tb.exec("runuser", "-u", "otto", "--", "greet")
    assert r.stdout.strip() == "greet v1 says hi to otto", r.stderr
    assert tb.exec("systemctl", "is-active", "svcweb.service").stdout.strip() == "active"
    r = tb.exec("/var/lib/layershell/libexec/layershell-enter", "--version", check=True)
    assert r.stdout.strip().endswith(new_build["layershell-enter"]["build"])
    # ... and it stays the one merged at the next boot.
    tb.reboot()
    wait_active(tb, "svcweb.service")
    assert tb.exec("core", "--version", check=True).stdout.splitlines()[0] == (
        f"core, version {BUMPED}"
    )
    r = tb.exec("runuser", "-u", "otto", "--", "greet")
    assert r.stdout.strip() == "greet v1 says hi to otto", r.stderr


def test_systemd_252_starts_the_images_units_only_after_a_reload(
    sysext_built: BuiltImage,
) -> None:
    """Why layershell-extension.service exists (docs/boot.md, "Units on systemd 252"):
    with the image merged at boot but nothing reloading systemd, the targets loaded
    before the merge never see the image's multi-user.target.wants/ link, so none of its
    units starts; after a daemon-reload they do."""
    testbed.require_testbed()
    name = os.path.basename(sysext_built.image.path)
    tb = testbed.Testbed(include=testbed.BARE_INCLUDE)

    def prepare(root: Path) -> None:
        target = root / EXTENSIONS.lstrip("/") / name
        target.parent.mkdir(parents=True)
        shutil.copy(sysext_built.image.path, target)
        (root / "etc/extensions").mkdir(parents=True)
        (root / LINK.lstrip("/")).symlink_to(f"{EXTENSIONS}/{name}")
        wants = root / "etc/systemd/system/sysinit.target.wants"
        wants.mkdir(parents=True, exist_ok=True)
        (wants / "systemd-sysext.service").symlink_to("/lib/systemd/system/systemd-sysext.service")

    def show(unit: str, prop: str) -> str:
        return tb.exec("systemctl", "show", "-p", prop, "--value", unit).stdout.strip()

    try:
        tb.start(prepare=prepare)
        assert show("systemd-sysext.service", "ActiveState") == "active"
        assert tb.exec("test", "-x", "/usr/bin/core").returncode == 0  # merged
        assert "layershell.target" not in show("multi-user.target", "Wants").split()
        assert show("layershell.target", "ActiveState") == "inactive"
        assert show("layershell-mounts.service", "ActiveState") == "inactive"
        tb.exec("systemctl", "daemon-reload", check=True)
        assert "layershell.target" in show("multi-user.target", "Wants").split()
    finally:
        tb.stop()
