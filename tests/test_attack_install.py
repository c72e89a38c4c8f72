"""Issue 10, attacks 5, 8 and 9, each as a hostile package installed the documented way:

5. install.sh leaves something privileged behind: a setuid/setgid bit (setuid-arne on
   the host: any local user gets euid arne), a file capability (security.capability,
   v3 "namespaced" since the layer's pseudo-root sets it), an ACL, a device node;
8. install.sh leaves a daemon running (setsid, a double fork, nohup) after `core
   install` returns, or runs past its time limit with children;
9. denial of service: a package 2,000 directories deep, a 10,000-deep leftover under
   .trash (RecursionError in every later install), and a package that fills the disk
   (from its archive, or from install.sh with fallocate).

Rootless mode as tests/test_install.py (uid 65534 when run as root); the setuid-arne
case also in system mode with real accounts.
"""

from __future__ import annotations

import errno
import io
import os
import pwd
import random
import secrets
import shutil
import stat
import struct
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.packages import program, tarball
from tests.support import Identity, SystemStack, needs_root
from tests.test_install import assert_consistent, core, installed, pkgs

MiB = 1 << 20
SHIPPED = Path(__file__).resolve().parent.parent / "profiles" / "layers.yaml"


def limits(ident: Identity, **values: str | int) -> None:
    """The rootless layers.yaml: the shipped stack, with `limits:` on layer arne."""
    text = SHIPPED.read_text()
    block = "    limits:\n" + "".join(f"      {k}: {v}\n" for k, v in values.items())
    marker = "    network: true\n  - name: otto"
    assert marker in text
    text = text.replace(marker, "    network: true\n" + block + "  - name: otto")
    config = ident.home / ".config" / "layershell"
    config.mkdir(parents=True, exist_ok=True)
    (config / "layers.yaml").write_text(text)
    if os.getuid() == 0:
        for p in (ident.home / ".config", config, config / "layers.yaml"):
            os.chown(p, ident.uid, ident.gid)


def err(r: subprocess.CompletedProcess[bytes]) -> str:
    return r.stderr.decode(errors="replace")


def install_log(ident: Identity, name: str, version: str) -> str:
    path = ident.home / f".local/share/layershell/layers/arne/logs/{name}_{version}.install.log"
    return path.read_text(errors="replace")


def alive_with(marker: str) -> list[int]:
    """Pids of live processes whose command line carries marker."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if marker.encode() in cmdline and state != "Z":
            found.append(int(entry))
    return found


@pytest.fixture
def marker() -> Iterator[str]:
    """A token for the daemon's command line; whatever still carries it is killed after
    the test (the attack succeeding must not leave it running)."""
    token = f"layershell-daemon-{secrets.token_hex(4)}"
    yield token
    for pid in alive_with(token):
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass


# --- 5. nothing privileged survives install.sh ------------------------------------------

SETUID_SH = """\
cp /bin/id bin/idsuid
chmod 4755 bin/idsuid
cp /bin/true bin/sgid
chmod 2755 bin/sgid
touch shared-data
chmod 0666 shared-data
mkdir -p drop
chmod 3777 drop
"""


def test_setuid_and_setgid_bits_from_install_sh_are_stripped(
    fresh_rootless: Identity, shared_dir: Path
) -> None:
    path = tarball(
        shared_dir / "suidsh_1.0.tar.gz", {**program("suidsh", "1.0"), "install.sh": SETUID_SH}
    )
    r = core(fresh_rootless, "install", str(path))
    assert r.returncode == 0, err(r)
    tree = pkgs(fresh_rootless) / "suidsh_1.0"
    for name in ("bin/idsuid", "bin/sgid", "shared-data", "drop"):
        mode = os.lstat(tree / name).st_mode
        assert mode & 0o7022 == 0, f"{name}: {oct(mode)}"
    assert "note: suidsh: bin/idsuid: setuid bit stripped (after install.sh)" in err(r)
    assert "note: suidsh: bin/sgid: setgid bit stripped (after install.sh)" in err(r)
    assert "note: suidsh: shared-data: group and world write removed (after install.sh)" in err(r)


OUTSIDE_SH = """\
for try in \\
    "cp /bin/id /usr/local/idsuid && chmod 4755 /usr/local/idsuid" \\
    "mkdir -p /usr/local/bin && printf '#!/bin/sh\\necho PLANTED\\n' > /usr/local/bin/ls" \\
    "echo echo PLANTED >> \\"$HOME/.profile\\"" \\
    "printf '#!/bin/sh\\necho TAMPERED\\n' > /opt/pkgs/other_1.0/bin/other" \\
    "chmod 4755 /opt/pkgs/other_1.0/bin/other" \\
    "mkdir /opt/pkgs/.cachejunk"; do
  if sh -c "$try" 2>/dev/null; then echo "ESCAPED: $try"; fi
done
echo done > "$PKG_DIR/ran"
"""


def test_install_sh_writes_nothing_outside_its_own_tree(
    fresh_rootless: Identity, shared_dir: Path
) -> None:
    """install.sh used to have all of layer 1 read-write: it could leave a setuid file
    in /usr/local, plant /usr/local/bin/ls (first on every shim's PATH, so it ran inside
    other packages' shims, under their profiles), append to the layer's ~/.profile, and
    rewrite another package's program (taking over its shim and its grants). Now it may
    write its own package directory only."""
    other = tarball(shared_dir / "other_1.0.tar.gz", program("other", "1.0"))
    assert core(fresh_rootless, "install", str(other)).returncode == 0
    before = (pkgs(fresh_rootless) / "other_1.0/bin/other").read_bytes()
    path = tarball(
        shared_dir / "spread_1.0.tar.gz", {**program("spread", "1.0"), "install.sh": OUTSIDE_SH}
    )
    r = core(fresh_rootless, "install", str(path))
    assert r.returncode == 0, err(r)
    assert (pkgs(fresh_rootless) / "spread_1.0/ran").read_text() == "done\n"
    log = fresh_rootless.home / ".local/share/layershell/layers/arne/logs/spread_1.0.install.log"
    assert "ESCAPED" not in log.read_text(), log.read_text()
    store = fresh_rootless.home / ".local/share/layershell/layers/arne"
    assert not (store / "usr-local/idsuid").exists()
    assert not (store / "usr-local/bin/ls").exists()
    assert not (store / "home/.profile").exists()
    assert (pkgs(fresh_rootless) / "other_1.0/bin/other").read_bytes() == before
    assert not os.lstat(pkgs(fresh_rootless) / "other_1.0/bin/other").st_mode & 0o6000
    assert not (pkgs(fresh_rootless) / ".cachejunk").exists()


def test_setuid_bits_left_elsewhere_in_the_layer_are_stripped_at_the_next_install(
    fresh_rootless: Identity, shared_dir: Path
) -> None:
    """What the layer's own pseudo-root left in /usr/local or its home (an admin's
    `core shell --layer arne`, an older layershell's install.sh) is swept at the next
    install that runs an install.sh, in a 0111 directory too (reachable by name)."""
    ident = fresh_rootless
    plant = (
        "cp /bin/id /usr/local/idsuid && chmod 4755 /usr/local/idsuid && "
        'mkdir -p "$HOME/hid" && cp /bin/id "$HOME/hid/idsgid" && '
        'chmod 2755 "$HOME/hid/idsgid" && chmod 111 "$HOME/hid"'
    )
    r = ident.run([ident.layer_shell, "--layer", "arne", "-c", plant])
    assert r.returncode == 0, err(r)
    path = tarball(
        shared_dir / "sweeper_1.0.tar.gz", {**program("sweeper", "1.0"), "install.sh": "true\n"}
    )
    r = core(ident, "install", str(path))
    assert r.returncode == 0, err(r)
    store = ident.home / ".local/share/layershell/layers/arne"
    for p in (store / "usr-local/idsuid", store / "home/hid/idsgid"):
        assert not os.lstat(p).st_mode & 0o6000, f"{p}: {oct(os.lstat(p).st_mode)}"
    assert f"{store}/usr-local/idsuid: setuid bit stripped (outside the package" in err(r)


@pytest.mark.parametrize("how", ["install", "rollback"])
def test_a_version_made_active_again_is_neutralised_again(
    fresh_rootless: Identity, shared_dir: Path, how: str
) -> None:
    """A tree an older layershell installed may still carry what its install.sh left;
    making it visible again goes through the same rule."""
    one = tarball(shared_dir / "again_1.0.tar.gz", program("again", "1.0"))
    two = tarball(shared_dir / "again_2.0.tar.gz", program("again", "2.0"))
    assert core(fresh_rootless, "install", str(one)).returncode == 0
    assert core(fresh_rootless, "install", str(two)).returncode == 0
    old = pkgs(fresh_rootless) / "again_1.0/bin/again"
    os.chmod(old, 0o4755)  # as an older layershell left it
    if how == "install":
        r = core(fresh_rootless, "install", str(one))
    else:
        r = core(fresh_rootless, "rollback", "again")
    assert r.returncode == 0, err(r)
    assert installed(fresh_rootless) == {"again": "1.0"}
    assert not os.lstat(old).st_mode & 0o6000
    assert "bin/again: setuid bit stripped" in err(r)


# A v2 security.capability: cap_net_raw permitted+effective. Set by the layer's
# pseudo-root, the kernel stores it as v3 with the account as its root uid.
CAP_SH = """\
cp /bin/true bin/capped
python3 -c 'import os, struct; os.setxattr("bin/capped", "security.capability",
    struct.pack("<IIIII", 0x02000001, 1 << 13, 0, 0, 0))'
python3 -c 'import os; os.getxattr("bin/capped", "security.capability")'
"""


def test_file_capability_from_install_sh_is_removed(
    fresh_rootless: Identity, shared_dir: Path
) -> None:
    path = tarball(
        shared_dir / "capsh_1.0.tar.gz", {**program("capsh", "1.0"), "install.sh": CAP_SH}
    )
    r = core(fresh_rootless, "install", str(path))
    assert r.returncode == 0, err(r)
    capped = pkgs(fresh_rootless) / "capsh_1.0/bin/capped"
    with pytest.raises(OSError) as caught:
        os.getxattr(capped, "security.capability", follow_symlinks=False)
    assert caught.value.errno == errno.ENODATA
    assert "note: capsh: bin/capped: file capability removed (after install.sh)" in err(r)
    assert capped.read_bytes() == Path("/bin/true").read_bytes()  # contents unchanged
    assert os.lstat(capped).st_mode & 0o7777 == 0o755


def _acl(*entries: tuple[int, int, int]) -> bytes:
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


# USER_OBJ rwx, USER 0 (the account) rwx, GROUP_OBJ r-x, MASK rwx, OTHER r-x
ACL = _acl((1, 7, 0xFFFFFFFF), (2, 7, 0), (4, 5, 0xFFFFFFFF), (0x10, 7, 0xFFFFFFFF),
           (0x20, 5, 0xFFFFFFFF))  # fmt: skip

DEVICE_SH = f"""\
touch with-acl
python3 -c 'import os; os.setxattr("with-acl", "system.posix_acl_access",
    bytes.fromhex("{ACL.hex()}"))'
if mknod null c 1 3 2>/dev/null; then echo made a device; fi
mknod whiteout c 0 0 2>/dev/null || true
"""


def test_acls_and_device_nodes_from_install_sh_do_not_survive(
    fresh_rootless: Identity, shared_dir: Path
) -> None:
    path = tarball(
        shared_dir / "devsh_1.0.tar.gz", {**program("devsh", "1.0"), "install.sh": DEVICE_SH}
    )
    r = core(fresh_rootless, "install", str(path))
    assert r.returncode == 0, err(r)
    tree = pkgs(fresh_rootless) / "devsh_1.0"
    assert "made a device" not in install_log(fresh_rootless, "devsh", "1.0")
    for p in tree.rglob("*"):
        mode = os.lstat(p).st_mode
        assert not (stat.S_ISCHR(mode) or stat.S_ISBLK(mode)), p
    assert "system.posix_acl_access" not in os.listxattr(tree / "with-acl")
    assert "note: devsh: with-acl: ACL removed (after install.sh)" in err(r)


@needs_root
def test_setuid_arne_from_install_sh_gives_no_one_euid_arne(
    system: SystemStack, shared_dir: Path
) -> None:
    path = tarball(
        shared_dir / "suidsys_1.0.tar.gz", {**program("suidsys", "1.0"), "install.sh": SETUID_SH}
    )
    r = system.core("install", str(path))
    assert r.returncode == 0, err(r)
    try:
        binary = system.root / "opt/pkgs/suidsys_1.0/bin/idsuid"
        assert binary.stat().st_uid == pwd.getpwnam(system.arne).pw_uid
        assert not binary.stat().st_mode & 0o6000, oct(binary.stat().st_mode)
        # Any local user running it on the host stays itself (the attack: euid arne).
        ran = system.as_user(system.otto, [str(binary), "-u"])
        assert ran.returncode == 0, err(ran)
        assert ran.stdout.decode().strip() == str(pwd.getpwnam(system.otto).pw_uid)
    finally:
        system.core("remove", "suidsys")


def test_neutralise_refuses_a_file_of_another_owner(tmp_path: Path) -> None:
    """A hard link install.sh made to a file from outside the package shows up as an
    entry the layer's account does not own (the layer cannot create such files)."""
    from layershell.packages import trees

    if os.getuid() != 0:
        pytest.skip("needs root to make a file of another owner")
    tree = tmp_path / "pkg"
    (tree / "bin").mkdir(parents=True)
    (tree / "bin/tool").write_text("x")
    os.chown(tree / "bin/tool", 12345, 12345)
    with pytest.raises(trees.TreeRefused) as caught:
        trees.neutralise(str(tree), owner=0, max_depth=64)
    assert caught.value.where == "bin/tool"
    assert "owned by uid 12345" in caught.value.reason


# --- 8. install.sh is contained --------------------------------------------------------

DAEMONS = {
    "setsid": "(setsid sh -c 'sleep 1000; : {m}' > /dev/null 2>&1 &)",
    "double-fork": "( ( sh -c 'sleep 1000; : {m}' > /dev/null 2>&1 & ) & )",
    "nohup": "nohup sh -c 'sleep 1000; : {m}' > /dev/null 2>&1 &",
}


@pytest.mark.parametrize("how", sorted(DAEMONS))
def test_a_daemon_started_by_install_sh_does_not_outlive_it(
    fresh_rootless: Identity, shared_dir: Path, marker: str, how: str
) -> None:
    script = DAEMONS[how].format(m=marker) + "\nsleep 0.5\necho started\n"
    path = tarball(
        shared_dir / "daemon_1.0.tar.gz", {**program("daemon", "1.0"), "install.sh": script}
    )
    r = core(fresh_rootless, "install", str(path))
    assert r.returncode == 0, err(r)
    assert alive_with(marker) == [], f"install.sh's daemon ({how}) outlived `core install`"
    log = install_log(fresh_rootless, "daemon", "1.0")
    assert "started" in log
    assert "install.sh exited with status 0" in log


def test_install_log_records_a_failing_exit_status(
    fresh_rootless: Identity, shared_dir: Path
) -> None:
    path = tarball(
        shared_dir / "fails_1.0.tar.gz", {**program("fails", "1.0"), "install.sh": "exit 7\n"}
    )
    r = core(fresh_rootless, "install", str(path))
    assert r.returncode == 1
    assert "install.sh failed with exit status 7" in err(r)
    assert "install.sh exited with status 7" in install_log(fresh_rootless, "fails", "1.0")
    assert installed(fresh_rootless) == {}


def test_a_script_past_its_time_limit_is_killed_with_all_children(
    fresh_rootless: Identity, shared_dir: Path, marker: str
) -> None:
    limits(fresh_rootless, script_timeout=2)
    script = f"(setsid sh -c 'sleep 1000; : {marker}' > /dev/null 2>&1 &)\nsleep 1000\n"
    path = tarball(shared_dir / "slow_1.0.tar.gz", {**program("slow", "1.0"), "install.sh": script})
    r = core(fresh_rootless, "install", str(path))
    assert r.returncode == 1
    assert "install.sh ran longer than 2 s (the time limit) and was killed" in err(r)
    assert alive_with(marker) == []
    assert "ran longer than 2 s (the time limit)" in install_log(fresh_rootless, "slow", "1.0")
    assert installed(fresh_rootless) == {}
    assert not (pkgs(fresh_rootless) / "slow_1.0").exists()
    assert_consistent(fresh_rootless)


def test_a_script_over_its_memory_limit_fails(fresh_rootless: Identity, shared_dir: Path) -> None:
    limits(fresh_rootless, script_memory="256M")
    script = "python3 -c 'bytearray(512 << 20)'\n"
    path = tarball(shared_dir / "hog_1.0.tar.gz", {**program("hog", "1.0"), "install.sh": script})
    r = core(fresh_rootless, "install", str(path))
    assert r.returncode == 1, err(r)
    assert "MemoryError" in install_log(fresh_rootless, "hog", "1.0")
    assert installed(fresh_rootless) == {}


# --- 9. limits that keep the host working ------------------------------------------------


def deep_tarball(path: Path, depth: int) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("d/" * depth + "f")
        tar.addfile(info)
        for name, data in program("deep", "1.0").items():
            blob = data.encode() if isinstance(data, str) else data
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(blob), 0o755
            tar.addfile(info, io.BytesIO(blob))
    path.chmod(0o644)
    return path


def test_a_package_2000_directories_deep_is_refused_at_unpack(
    fresh_rootless: Identity, shared_dir: Path
) -> None:
    path = deep_tarball(shared_dir / "deep_1.0.tar.gz", 2000)
    r = core(fresh_rootless, "install", str(path))
    assert r.returncode == 1, err(r)
    # Refused by the header scan, or (a small archive, which cannot break the budget:
    # install._admit skips the scan) by unpack as it meets the entry, in staging.
    assert "core: error: deep: " in err(r) and ": entry 'd/d/d" in err(r), err(r)
    assert "the path is 2000 directories deep, over the limit of 64" in err(r)
    assert "nothing was installed" in err(r)
    assert installed(fresh_rootless) == {}
    assert not (pkgs(fresh_rootless) / "deep_1.0").exists()
    assert_consistent(fresh_rootless)


DEEP_SH = "i=0\nwhile [ $i -lt 2000 ]; do mkdir d; cd d; i=$((i+1)); done\n"


def test_a_tree_made_2000_deep_by_install_sh_is_refused_and_removed(
    fresh_rootless: Identity, shared_dir: Path
) -> None:
    path = tarball(
        shared_dir / "deepsh_1.0.tar.gz", {**program("deepsh", "1.0"), "install.sh": DEEP_SH}
    )
    r = core(fresh_rootless, "install", str(path))
    assert r.returncode == 1, err(r)
    assert "the tree is more than 64 directories deep" in err(r)
    assert installed(fresh_rootless) == {}
    assert not (pkgs(fresh_rootless) / "deepsh_1.0").exists()
    trash = pkgs(fresh_rootless) / ".trash"
    assert not trash.exists() or not any(trash.iterdir())
    good = tarball(shared_dir / "good_1.0.tar.gz", program("good", "1.0"))
    r = core(fresh_rootless, "install", str(good))
    assert r.returncode == 0, err(r)


MAKE_DEEP = """\
import os, sys
os.makedirs(sys.argv[1], exist_ok=True)
os.chdir(sys.argv[1])
for _ in range(int(sys.argv[2])):
    os.mkdir("d")
    os.chdir("d")
open("f", "w").close()
"""


def test_a_10000_deep_leftover_in_trash_is_removed_by_the_next_operation(
    fresh_rootless: Identity, shared_dir: Path
) -> None:
    trash = pkgs(fresh_rootless) / ".trash"
    made = fresh_rootless.run([sys.executable, "-c", MAKE_DEEP, str(trash / "old"), "10000"])
    assert made.returncode == 0, err(made)
    good = tarball(shared_dir / "good_1.0.tar.gz", program("good", "1.0"))
    r = core(fresh_rootless, "install", str(good))
    assert r.returncode == 0, err(r)
    assert "RecursionError" not in err(r)
    assert list(trash.iterdir()) == []
    assert installed(fresh_rootless) == {"good": "1.0"}


def test_remove_deletes_a_10000_deep_tree_in_process(tmp_path: Path) -> None:
    from layershell.packages import trees

    base = tmp_path / "t"
    base.mkdir()
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(10_000):
            os.mkdir("d", dir_fd=fd)
            child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        os.close(os.open("f", os.O_CREAT | os.O_WRONLY, 0o600, dir_fd=fd))
        os.chmod(f"/proc/self/fd/{fd}", 0)  # even an unreadable directory goes
    finally:
        os.close(fd)
    trees.remove(str(base))
    assert not base.exists()


def random_package(path: Path, name: str, size: int) -> Path:
    blob = random.Random(size).randbytes(size)  # incompressible: not a bomb
    return tarball(path, {**program(name, "1.0"), "share/blob": blob})


def test_a_package_bigger_than_the_budget_is_refused_before_unpack(
    fresh_rootless: Identity, shared_dir: Path
) -> None:
    limits(fresh_rootless, disk_budget="1M")
    path = random_package(shared_dir / "big_1.0.tar.gz", "big", 2 * MiB)
    r = core(fresh_rootless, "install", str(path))
    assert r.returncode == 1, err(r)
    assert "big 1.0: it unpacks to 2.0 MiB, but layer arne has 1.0 MiB of its disk budget" in err(r)
    assert "nothing was installed" in err(r)
    assert "limits.disk_budget" in err(r)  # the hint says how to raise it
    assert installed(fresh_rootless) == {}
    assert_consistent(fresh_rootless)


def test_the_budget_counts_what_is_installed(fresh_rootless: Identity, shared_dir: Path) -> None:
    limits(fresh_rootless, disk_budget="3M")
    first = random_package(shared_dir / "one_1.0.tar.gz", "one", 2 * MiB)
    second = random_package(shared_dir / "two_1.0.tar.gz", "two", 2 * MiB)
    assert core(fresh_rootless, "install", str(first)).returncode == 0
    r = core(fresh_rootless, "install", str(second))
    assert r.returncode == 1, err(r)
    assert "two 1.0: it unpacks to 2.0 MiB, but layer arne has" in err(r)
    assert core(fresh_rootless, "remove", "one").returncode == 0
    r = core(fresh_rootless, "install", str(second))
    assert r.returncode == 0, err(r)


@pytest.mark.parametrize(
    "script",
    [
        'fallocate -l 100M "$PKG_DIR/blob"\n',  # stopped by the file-size limit
        'touch "$PKG_DIR/blob"\nfallocate -n -l 100M "$PKG_DIR/blob"\n',  # beyond EOF
    ],
    ids=["fallocate", "fallocate-keep-size"],
)
def test_install_sh_filling_past_the_budget_is_refused_and_rolled_back(
    fresh_rootless: Identity, shared_dir: Path, script: str
) -> None:
    if shutil.which("fallocate") is None:
        pytest.skip("util-linux fallocate is missing")
    limits(fresh_rootless, disk_budget="64M")
    path = tarball(
        shared_dir / "filler_1.0.tar.gz", {**program("filler", "1.0"), "install.sh": script}
    )
    r = core(fresh_rootless, "install", str(path))
    assert r.returncode == 1, err(r)
    assert "the install was rolled back" in err(r)
    assert installed(fresh_rootless) == {}
    assert not (pkgs(fresh_rootless) / "filler_1.0").exists()
    assert_consistent(fresh_rootless)
    if "-n" in script:
        assert "takes 100.0 MiB on disk" in err(r) and "disk budget of 64.0 MiB" in err(r)
    else:
        assert "install.sh exited with status 153" in install_log(fresh_rootless, "filler", "1.0")


def test_an_install_never_takes_the_filesystem_below_its_floor(
    fresh_rootless: Identity, shared_dir: Path
) -> None:
    st = os.statvfs(pkgs(fresh_rootless).parent)
    # A floor above what is free now: whatever the disk, the install must be refused.
    limits(fresh_rootless, min_free=st.f_bavail * st.f_frsize + (1 << 30))
    path = tarball(shared_dir / "tiny_1.0.tar.gz", program("tiny", "1.0"))
    r = core(fresh_rootless, "install", str(path))
    assert r.returncode == 1, err(r)
    assert "below the floor of" in err(r) and "nothing was installed" in err(r)
    assert installed(fresh_rootless) == {}


# -- from the third attack review ---------------------------------------------------


def test_the_bytes_hashed_are_the_bytes_unpacked(tmp_path: Path) -> None:
    """A local tarball was hashed by path and then opened again to unpack: whoever can
    write the file swapped it in between, and a tree root never hashed was installed
    under the first file's sha256. Now the hash is of a private copy, which is what is
    unpacked."""
    from layershell.packages import fetch, pipeline, unpack

    good = tarball(tmp_path / "swap_1.tar.gz", program("swap", "1"))
    bad = tarball(tmp_path / "bad.tar.gz", {"bin/swapped": "#!/bin/sh\necho evil\n"})
    fetcher = fetch.Fetcher(str(tmp_path / "cache"))
    job = pipeline.Job("swap", "1", None, str(good), None, None, {})
    src = pipeline._source(fetcher, job)
    good.write_bytes(bad.read_bytes())  # the swap, after the hash
    assert src.archive != str(good)
    unpack.unpack(src.archive, str(tmp_path / "tree"))
    assert (tmp_path / "tree/bin/swap").exists()
    assert not (tmp_path / "tree/bin/swapped").exists()


LOG_BOMB_SH = """\
python3 -c 'import os; os.lseek(1, 3 << 30, 0); os.write(1, b"tail line\\n")'
exit 3
"""


def test_a_sparse_install_log_is_not_read_whole(fresh_rootless: Identity, shared_dir: Path) -> None:
    """install.sh seeked its stdout 3 GiB out: the log was sparse, and the monitor read
    all of it (6 GB of memory) to show its last lines. The log is append-only now."""
    path = tarball(
        shared_dir / "logbomb_1.0.tar.gz", {**program("logbomb", "1.0"), "install.sh": LOG_BOMB_SH}
    )
    r = core(fresh_rootless, "install", str(path))
    assert r.returncode != 0
    assert "tail line" in err(r)
    log = fresh_rootless.home / ".local/share/layershell/layers/arne/logs/logbomb_1.0.install.log"
    assert log.stat().st_size < 1 << 20, log.stat().st_size


SHM_SH = """\
if cp /bin/id /dev/shm/ls-suid-$$ 2>/dev/null; then echo "SHARED: /dev/shm"; fi
ls /dev/shm > "$PKG_DIR/shm-listing"
"""


def test_install_sh_and_programs_get_a_dev_shm_of_their_own(
    fresh_rootless: Identity, shared_dir: Path
) -> None:
    """The host's /dev/shm (all of RAM, every account's, not nosuid everywhere) was
    bound into every layer: install.sh left a setuid file there and filled RAM past
    its install."""
    marker = Path("/dev/shm") / f"layershell-host-{secrets.token_hex(4)}"
    marker.write_text("the host's\n")
    try:
        path = tarball(
            shared_dir / "shm_1.0.tar.gz", {**program("shm", "1.0"), "install.sh": SHM_SH}
        )
        r = core(fresh_rootless, "install", str(path))
        assert r.returncode == 0, err(r)
        listing = (pkgs(fresh_rootless) / "shm_1.0/shm-listing").read_text()
        assert marker.name not in listing
        assert not list(Path("/dev/shm").glob("ls-suid-*"))
    finally:
        marker.unlink()


INODES_SH = """\
python3 -c '
import os
for i in range(4900):
    open(os.path.join(os.environ["PKG_DIR"], f"f{i}"), "w").close()
'
"""


@needs_root
def test_install_sh_cannot_take_the_last_inodes(fresh_rootless: Identity, shared_dir: Path) -> None:
    """Only free bytes were watched: empty files by the hundred thousand used up the
    filesystem's inodes and the install succeeded. Here the packages live on a tmpfs
    of 5,000 inodes (floor 250)."""
    where = pkgs(fresh_rootless)
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o",
         f"nr_inodes=5000,size=64m,mode=0755,uid={fresh_rootless.uid},gid={fresh_rootless.gid}",
         "layershell-inodes", str(where)],
        check=True,
    )  # fmt: skip
    try:
        path = tarball(
            shared_dir / "inodes_1.0.tar.gz", {**program("inodes", "1.0"), "install.sh": INODES_SH}
        )
        r = core(fresh_rootless, "install", str(path))
        assert r.returncode != 0, err(r)
        assert "inodes free on the filesystem" in err(r), err(r)
        assert not (where / "inodes_1.0").exists()
        assert installed(fresh_rootless) == {}
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_huge_sparse_tarball_is_refused_before_it_is_copied(
    fresh_rootless: Identity, shared_dir: Path
) -> None:
    """The private copy of a local tarball was made whole before any size check: a
    200 GB sparse file filled the disk."""
    huge = shared_dir / "huge_1.tar.gz"
    with open(huge, "wb") as f:
        f.truncate(200 << 30)
    huge.chmod(0o644)
    r = core(fresh_rootless, "install", str(huge))
    assert r.returncode != 0
    assert "more than the" in err(r) and "an install may copy" in err(r), err(r)
    copies = fresh_rootless.home / ".local/share/layershell/layers/arne/cache/local"
    assert not copies.exists() or not list(copies.iterdir())


def test_a_fifo_is_no_tarball_and_does_not_block(tmp_path: Path) -> None:
    """Planned as a regular file, then swapped for a FIFO: the open used to block for
    ever, holding the layer's lock."""
    from layershell.packages import verify
    from layershell.packages.verify.integrity import NotATarball

    fifo = tmp_path / "flip_1.tar.gz"
    os.mkfifo(fifo)
    with pytest.raises(NotATarball, match="not a regular file"):
        verify.private_copy(str(fifo), str(tmp_path / "copies"), 1 << 20)


TRUNCATE_SH = """\
python3 -c 'import os; os.ftruncate(1, 10 << 30)'
echo last line
"""


def test_a_log_made_huge_by_ftruncate_is_cut_back(
    fresh_rootless: Identity, shared_dir: Path
) -> None:
    path = tarball(
        shared_dir / "trunc_1.0.tar.gz", {**program("trunc", "1.0"), "install.sh": TRUNCATE_SH}
    )
    r = core(fresh_rootless, "install", str(path))
    assert r.returncode == 0, err(r)
    log = fresh_rootless.home / ".local/share/layershell/layers/arne/logs/trunc_1.0.install.log"
    assert log.stat().st_size < 1 << 20, log.stat().st_size
    assert "the log was" in log.read_text(errors="replace")


def test_errors_name_the_tarball_not_its_private_copy(
    fresh_rootless: Identity, shared_dir: Path
) -> None:
    bad = shared_dir / "broken_1.0.tar.gz"
    bad.write_text("not an archive\n")
    bad.chmod(0o644)
    r = core(fresh_rootless, "install", str(bad))
    assert r.returncode != 0
    assert f"{bad}: not a package archive" in err(r), err(r)
    assert ".tarball-" not in err(r)
