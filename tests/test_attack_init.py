"""Issue 10, attack 4 and friends, written as the attacks: the layer-1 account (arne)
plants symbolic links in the trees `core init` changes as root, drops a setuid file in
/opt/pkgs, and feeds the inbox tarballs root did not write.

System mode with real accounts on a relocated root (tests/support.py). Every test here
failed against the code before the fix (the harm happened); each asserts it does not.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import support
from tests.packages import program, tarball
from tests.support import SystemStack


def err(result: subprocess.CompletedProcess[bytes]) -> str:
    return result.stderr.decode()


def state(stack: SystemStack) -> Path:
    return stack.root / "var/lib/layershell"


def store(stack: SystemStack) -> Path:
    return state(stack) / "layers/arne"


def owner_mode(path: Path) -> tuple[int, int, int]:
    st = path.lstat()
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


def as_arne(stack: SystemStack, script: str) -> None:
    r = stack.as_user(stack.arne, ["sh", "-euc", script])
    assert r.returncode == 0, err(r)


@pytest.fixture
def canaries(stack: SystemStack) -> Iterator[dict[str, Path]]:
    """Root's things a successful attack would hand to arne: the executor's directory,
    a private directory and a private file (all where the old realpath check let them)."""
    libexec = state(stack) / "libexec"
    canary_dir = state(stack) / "canary-dir"
    canary_file = state(stack) / "canary-file"
    canary_dir.mkdir(mode=0o700)
    canary_file.write_text("root's\n")
    canary_file.chmod(0o600)
    try:
        yield {"libexec": libexec, "canary-dir": canary_dir, "canary-file": canary_file}
    finally:
        # Undo what a successful attack did, so the next test starts clean.
        os.chown(libexec, 0, 0)
        os.chmod(libexec, 0o755)
        shutil.rmtree(canary_dir, ignore_errors=True)
        canary_file.unlink(missing_ok=True)


def assert_root_kept(canaries: dict[str, Path], before: dict[str, tuple[int, int, int]]) -> None:
    for name, path in canaries.items():
        assert owner_mode(path) == before[name], f"{name} ({path}) was changed through the link"
    assert owner_mode(canaries["libexec"]) == (0, 0, 0o755)
    helper = canaries["libexec"] / "layershell-enter"
    assert helper.stat().st_uid == 0


def assert_refused(r: subprocess.CompletedProcess[bytes], path: Path) -> None:
    assert r.returncode != 0, "core init went on through a symbolic link of the layer's"
    assert "Traceback" not in err(r), err(r)
    assert str(path) in err(r), err(r)
    assert "symbolic link" in err(r), err(r)
    assert "core init" in err(r), err(r)  # the hint: remove it and run core init again


@pytest.mark.parametrize("item", ["usr-local", "home"])
@pytest.mark.parametrize("aim", ["libexec", "canary-dir", "canary-file"])
def test_init_follows_no_symlink_arne_plants_in_its_store(
    stack: SystemStack, canaries: dict[str, Path], item: str, aim: str
) -> None:
    """The review's attack 4: arne swaps a tree init chowns for a link to root's."""
    before = {name: owner_mode(p) for name, p in canaries.items()}
    planted = store(stack) / item
    as_arne(stack, f'mv "{planted}" "{planted}.orig" && ln -s "{canaries[aim]}" "{planted}"')
    try:
        r = stack.core("init")
        assert_root_kept(canaries, before)
        assert_refused(r, planted)
        assert planted.is_symlink()  # left alone for the operator to look at
    finally:
        planted.unlink()
        (store(stack) / f"{item}.orig").rename(planted)
    assert stack.core("init").returncode == 0


def test_init_follows_no_symlink_in_an_intermediate_component(
    stack: SystemStack, canaries: dict[str, Path]
) -> None:
    """A writable tree two levels down: arne swaps the directory in between for a link
    to root's state directory, so that <link>/libexec is root's executor directory."""
    config = stack.root / "etc/layershell/layers.yaml"
    original = config.read_text()
    deep = original.replace(
        '/usr/local: "{store}/usr-local"',
        '/usr/local: "{store}/usr-local"\n      /srv/tool: "{store}/lib/libexec"',
    )
    assert deep != original
    config.write_text(deep)
    lib = store(stack) / "lib"
    before = {name: owner_mode(p) for name, p in canaries.items()}
    try:
        r = stack.core("init")
        assert r.returncode == 0, err(r)
        assert (lib / "libexec").stat().st_uid == pwd.getpwnam(stack.arne).pw_uid
        as_arne(stack, f'mv "{lib}" "{lib}.orig" && ln -s "{state(stack)}" "{lib}"')
        r = stack.core("init")
        assert_root_kept(canaries, before)
        assert_refused(r, lib)
    finally:
        config.write_text(original)
        if lib.is_symlink():
            lib.unlink()
        shutil.rmtree(f"{lib}.orig", ignore_errors=True)
        shutil.rmtree(lib, ignore_errors=True)
    assert stack.core("init").returncode == 0


def pkgs_mount_options(pkgs: Path) -> set[str] | None:
    """The options of the last mount on `pkgs` in /proc/self/mounts, or None."""
    where = os.path.realpath(pkgs)
    found = None
    with open("/proc/self/mounts", encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            if fields[1].replace("\\040", " ") == where:
                found = set(fields[3].split(","))
    return found


@pytest.mark.parametrize("where", ["opt/pkgs", "var/lib/layershell/layers/arne/usr-local"])
def test_setuid_file_in_pkgs_gives_no_euid(stack: SystemStack, where: str) -> None:
    """Attack 5's host half: arne leaves a setuid copy of id in /opt/pkgs, or in its
    store's usr-local (pseudo-root can chmod there at any time, not only in install.sh);
    otto runs it on the host. Both are on nosuid,nodev mounts, so the bit is inert."""
    pkgs = stack.root / "opt/pkgs"
    options = pkgs_mount_options(pkgs)
    assert options is not None, f"{pkgs} is not a mount point"
    assert {"nosuid", "nodev"} <= options, options
    stores = stack.root / "var/lib/layershell/layers"
    options = pkgs_mount_options(stores)
    assert options is not None, f"{stores} is not a mount point"
    assert {"nosuid", "nodev"} <= options, options
    tool = stack.root / where / "id-suid-arne"
    as_arne(stack, f'cp /usr/bin/id "{tool}" && chmod 4755 "{tool}"')
    try:
        assert tool.stat().st_mode & stat.S_ISUID
        assert tool.stat().st_uid == pwd.getpwnam(stack.arne).pw_uid
        r = stack.as_user(stack.otto, [str(tool), "-u"])
        assert r.returncode == 0, err(r)
        assert r.stdout.decode().strip() == str(pwd.getpwnam(stack.otto).pw_uid)
    finally:
        tool.unlink()


def test_init_mount_is_idempotent(stack: SystemStack) -> None:
    pkgs = stack.root / "opt/pkgs"
    with open("/proc/self/mounts", encoding="utf-8") as f:
        count = sum(line.split()[1] == os.path.realpath(pkgs) for line in f)
    r = stack.core("init", "--mounts")
    assert r.returncode == 0, err(r)
    with open("/proc/self/mounts", encoding="utf-8") as f:
        assert sum(line.split()[1] == os.path.realpath(pkgs) for line in f) == count == 1


# --- the inbox: root installs only what root put there ----------------------------------


def drop(stack: SystemStack, name: str) -> Path:
    udir = stack.root / "opt/inbox/default" / stack.arne
    path = tarball(udir / f"{name}_1.0.tar.gz", program(name, "1.0"))
    return path


def settled(stack: SystemStack, path: Path) -> tuple[bool, str]:
    """(installed?, the reason file's text) after core inbox."""
    installed = (stack.root / "opt/pkgs" / path.name.removesuffix(".tar.gz")).exists()
    reason = path.parent / "failed" / (path.name + ".reason")
    return installed, reason.read_text() if reason.exists() else ""


def inbox_ran(stack: SystemStack) -> subprocess.CompletedProcess[bytes]:
    r = stack.core("inbox", "--linger", "0")
    assert "Traceback" not in err(r), err(r)
    return r


def test_inbox_refuses_a_tarball_root_does_not_own(stack: SystemStack) -> None:
    path = drop(stack, "notroots")
    arne = pwd.getpwnam(stack.arne)
    os.chown(path, arne.pw_uid, arne.pw_gid)
    r = inbox_ran(stack)
    installed, reason = settled(stack, path)
    assert not installed, "root installed a tarball that arne owns"
    assert r.returncode == 1
    assert f"owned by {stack.arne}" in reason, reason
    assert (path.parent / "failed" / path.name).is_file()


def test_inbox_refuses_a_tarball_others_can_write(stack: SystemStack) -> None:
    path = drop(stack, "worldwritable")
    path.chmod(0o666)
    inbox_ran(stack)
    installed, reason = settled(stack, path)
    assert not installed
    assert "writable by others" in reason, reason


@pytest.mark.parametrize("level", ["user", "profile"])
def test_inbox_refuses_a_tarball_in_a_group_writable_directory(
    stack: SystemStack, level: str
) -> None:
    path = drop(stack, f"groupwritable{level}")
    directory = path.parent if level == "user" else path.parent.parent
    arne = pwd.getpwnam(stack.arne)
    saved = owner_mode(directory)
    os.chown(directory, 0, arne.pw_gid)
    directory.chmod(0o770)
    try:
        inbox_ran(stack)
        installed, reason = settled(stack, path)
        assert not installed, f"installed from a {level} directory arne's group can write"
        assert str(directory) in reason and "writable by its group" in reason, reason
        assert (path.parent / "failed" / path.name).is_file()
    finally:
        os.chown(directory, saved[0], saved[1])
        directory.chmod(saved[2])


def test_inbox_follows_no_symlink_below_a_directory_arne_can_write(stack: SystemStack) -> None:
    """With the user directory writable by arne's group, arne links failed/ to a root
    directory: root must not write the reason file (or move the tarball) through it."""
    path = drop(stack, "linkedfailed")
    udir = path.parent
    target = state(stack) / "canary-failed"
    target.mkdir(mode=0o700)
    arne = pwd.getpwnam(stack.arne)
    saved = owner_mode(udir)
    os.chown(udir, 0, arne.pw_gid)
    udir.chmod(0o770)
    shutil.rmtree(udir / "failed", ignore_errors=True)
    as_arne(stack, f'ln -s "{target}" "{udir}/failed"')
    try:
        r = inbox_ran(stack)
        assert list(target.iterdir()) == [], "root wrote through arne's link"
        assert not (stack.root / "opt/pkgs/linkedfailed_1.0").exists()
        assert "symbolic link" in err(r), err(r)
    finally:
        (udir / "failed").unlink(missing_ok=True)
        path.unlink(missing_ok=True)
        shutil.rmtree(target)
        os.chown(udir, saved[0], saved[1])
        udir.chmod(saved[2])


# --- the mount across a reboot, in a booted systemd (tests/testbed.py) ----------------


def _mounted_nosuid(tb: object, path: str) -> bool:
    from tests import testbed

    assert isinstance(tb, testbed.Testbed)
    mounts = tb.exec("cat", "/proc/self/mounts").stdout
    return any(
        line.split()[1] == path and {"nosuid", "nodev"} <= set(line.split()[3].split(","))
        for line in mounts.splitlines()
    )


def test_pkgs_is_nosuid_again_after_a_reboot() -> None:
    """core init mounts /opt/pkgs nosuid,nodev now and enables layershell-mounts.service,
    which mounts it again at the next boot (a mount does not survive one)."""
    from tests import testbed

    testbed.require_testbed()
    tb = testbed.Testbed()
    tb.start()
    try:
        testbed.install_layershell(tb)
        r = tb.exec("core", "init", "--create-users")
        assert r.returncode == 0, r.stdout + r.stderr
        assert _mounted_nosuid(tb, "/opt/pkgs"), r.stdout + r.stderr
        unit = "layershell-mounts.service"
        assert tb.exec("systemctl", "is-enabled", unit).stdout.strip() == "enabled"
        tb.reboot()
        assert tb.exec("systemctl", "is-active", unit).stdout.strip() == "active", tb.exec(
            "journalctl", "-u", unit, "--no-pager"
        ).stdout
        assert _mounted_nosuid(tb, "/opt/pkgs")
        assert "0 changes" in tb.exec("core", "init").stdout
    finally:
        tb.stop()


# --- safepath itself: which links it follows ---------------------------------------------


needs_root = pytest.mark.skipif(not support.IS_ROOT, reason="needs root: chowns to uid 65534")


@needs_root
def test_safepath_follows_a_link_root_made_in_roots_directory(tmp_path: Path) -> None:
    """As /opt -> var/opt on Fedora CoreOS: root's own link, in root's own directory."""
    from layershell import safepath

    top = tmp_path / "root"
    (top / "var/opt").mkdir(parents=True)
    (top / "opt").symlink_to("var/opt")
    (top / "usr").mkdir()
    (top / "usr/local").symlink_to("../var/usrlocal")
    assert safepath.ensure_dir(str(top / "opt/pkgs"), 0o755, None)[0]  # created
    assert (top / "var/opt/pkgs").is_dir()
    safepath.ensure_dir(str(top / "usr/local/bin"), 0o755, None)
    assert (top / "var/usrlocal/bin").is_dir()
    with safepath.trusted_dir(str(top / "opt/pkgs")) as d:
        assert d.trusted


@needs_root
@pytest.mark.parametrize("where", ["others-dir", "sticky-dir"])
def test_safepath_refuses_a_link_someone_else_could_have_made(tmp_path: Path, where: str) -> None:
    from layershell import safepath

    canary = tmp_path / "canary"
    canary.mkdir(mode=0o700)
    if where == "others-dir":  # a directory of uid 65534's (arne's store)
        parent = tmp_path / "store"
        parent.mkdir()
        os.chown(parent, support.NOBODY, support.NOBODY)
    else:  # /tmp: world-writable and sticky; the link is not root's
        parent = tmp_path / "tmp"
        parent.mkdir()
        parent.chmod(0o1777)
    link = parent / "tree"
    link.symlink_to(canary)
    os.chown(link, support.NOBODY, support.NOBODY, follow_symlinks=False)
    for path in (link, link / "below"):
        with pytest.raises(safepath.UnsafePath, match="a symbolic link where a directory"):
            safepath.ensure_dir(str(path), 0o755, (support.NOBODY, support.NOBODY))
    assert owner_mode(canary) == (0, 0, 0o700)
    assert list(canary.iterdir()) == []
    with pytest.raises(safepath.UnsafePath, match="is not root's own"):
        safepath.trusted_dir(str(parent if where == "others-dir" else tmp_path / "tmp"))


@needs_root
def test_safepath_refuses_a_file_and_names_it(tmp_path: Path) -> None:
    from layershell import safepath

    (tmp_path / "plain").write_text("x")
    with pytest.raises(safepath.UnsafePath) as caught:
        safepath.ensure_dir(str(tmp_path / "plain/sub"), 0o755, None, hint="fix it")
    assert caught.value.message == f"{tmp_path}/plain: a file where a directory was expected"
    assert caught.value.hint == "fix it"
