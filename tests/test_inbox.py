"""The inbox: <inbox>/<profile>/<user>/<name>_<version>.tar.*, processed idempotently;
rootless as an ordinary identity, and as root handing each tarball to its account."""

from __future__ import annotations

import io
import json
import os
import pwd
import tarfile
from pathlib import Path

from tests.packages import program, tarball
from tests.support import Identity, SystemStack, python_cmd


def evil(path: Path) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("../escape")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    path.chmod(0o644)
    return path


def populate(inbox: Path, user: str) -> Path:
    udir = inbox / "default" / user
    udir.mkdir(parents=True)
    tarball(udir / "good_1.0.tar.gz", program("good", "1.0"))
    evil(udir / "evil_1.0.tar.gz")
    (udir / "README.txt").write_text("not a package\n")
    weird = inbox / "sparkly" / user
    weird.mkdir(parents=True)
    tarball(weird / "other_1.0.tar.gz", program("other", "1.0"))
    for d, _, files in os.walk(inbox):
        os.chmod(d, 0o755)
        for f in files:
            os.chmod(os.path.join(d, f), 0o644)
    return udir


def check_settled(udir: Path, inbox: Path, stderr: str) -> None:
    assert (udir / "done/good_1.0.tar.gz").is_file()
    assert (udir / "failed/evil_1.0.tar.gz").is_file()
    reason = (udir / "failed/evil_1.0.tar.gz.reason").read_text()
    assert "'../escape'" in reason
    assert (udir / "failed/README.txt").is_file()
    assert "not named <name>_<version>" in (udir / "failed/README.txt.reason").read_text()
    # An unknown profile is reported and left exactly where it was: never guessed.
    assert (inbox / "sparkly" / udir.name / "other_1.0.tar.gz").is_file()
    assert "unknown profile 'sparkly'" in stderr
    assert sorted(p.name for p in udir.iterdir()) == ["done", "failed"]


def test_inbox_rootless(fresh_rootless: Identity) -> None:
    user = pwd.getpwuid(fresh_rootless.uid).pw_name
    inbox = fresh_rootless.home / ".local/share/layershell/inbox"
    udir = populate(inbox, user)
    for d, _, files in os.walk(inbox):
        os.chown(d, fresh_rootless.uid, fresh_rootless.gid)
        for f in files:
            os.chown(os.path.join(d, f), fresh_rootless.uid, fresh_rootless.gid)
    r = fresh_rootless.run(python_cmd("inbox"))
    assert r.returncode == 1  # one failed
    check_settled(udir, inbox, r.stderr.decode())
    listing = json.loads(fresh_rootless.run(python_cmd("list", "--json")).stdout)
    assert [(x["name"], x["spec"]["profile"]) for x in listing] == [("good", "default")]
    again = fresh_rootless.run(python_cmd("inbox"))
    assert again.returncode == 0, again.stderr.decode()


def test_inbox_as_root_hands_each_tarball_to_its_account(
    system: SystemStack, shared_dir: Path
) -> None:
    inbox = shared_dir / "inbox"
    udir = populate(inbox, system.arne)
    r = system.core("inbox", str(inbox))
    assert r.returncode == 1
    check_settled(udir, inbox, r.stderr.decode())
    tree = system.root / "opt/pkgs/good_1.0"
    assert tree.stat().st_uid == pwd.getpwnam(system.arne).pw_uid
    r = system.core("list", "--json")
    assert [x["name"] for x in json.loads(r.stdout)] == ["good"]
    r = system.core("remove", "good")
    assert r.returncode == 0, r.stderr.decode()


INSTALL_SH = """\
id -u > "$PKG_DIR/installed-by"
touch /usr/bin/layershell-evil 2>/dev/null && exit 9
touch /etc/layershell-evil 2>/dev/null && exit 9
touch /usr/local/by-install-sh 2>/dev/null && exit 9
exit 0
"""


def test_root_install_runs_as_the_layer_account(system: SystemStack, shared_dir: Path) -> None:
    path = tarball(
        shared_dir / "tool_1.0.tar.gz", {**program("tool", "1.0"), "install.sh": INSTALL_SH}
    )
    r = system.core("install", str(path))
    assert r.returncode == 0, r.stderr.decode()
    arne = pwd.getpwnam(system.arne)
    tree = system.root / "opt/pkgs/tool_1.0"
    assert (tree / "installed-by").read_text() == "0\n"  # pseudo-root inside layer 1
    for p in (tree, tree / "bin/tool", tree / "installed-by"):
        assert p.stat().st_uid == arne.pw_uid  # the account on the host, never root
    # install.sh writes its own tree only (docs/packages.md), not layer 1's /usr/local
    assert not (system.root / "var/lib/layershell/layers/arne/usr-local/by-install-sh").exists()
    assert not os.path.exists("/usr/bin/layershell-evil")
    assert not os.path.exists("/etc/layershell-evil")
    db = system.root / "var/lib/layershell/layers/arne/state.db"
    assert db.stat().st_uid == arne.pw_uid
    r = system.in_layer(system.otto, "/opt/pkgs/tool/bin/tool")
    assert r.stdout.decode().strip() == "tool 1.0", r.stderr.decode()
    assert system.core("remove", "tool").returncode == 0


def test_other_accounts_cannot_install_into_arne(system: SystemStack, shared_dir: Path) -> None:
    import sys

    path = tarball(shared_dir / "tool_2.0.tar.gz", program("tool", "2.0"))
    r = system.as_user(system.otto, [sys.executable, "-m", "layershell", "install", str(path)])
    assert r.returncode == 1
    assert f"cannot change layer arne: it belongs to {system.arne}" in r.stderr.decode()


def test_other_accounts_can_list(system: SystemStack, shared_dir: Path) -> None:
    import sys

    path = tarball(shared_dir / "seen_1.0.tar.gz", program("seen", "1.0"))
    assert system.core("install", str(path)).returncode == 0
    try:
        r = system.as_user(system.otto, [sys.executable, "-m", "layershell", "list", "--json"])
        assert r.returncode == 0, r.stderr.decode()
        assert [x["name"] for x in json.loads(r.stdout)] == ["seen"]
    finally:
        assert system.core("remove", "seen").returncode == 0


def test_system_shims_run_for_other_users_never_root(system: SystemStack, shared_dir: Path) -> None:
    import subprocess

    bin_dir = system.root / "usr/local/bin"
    foreign = bin_dir / "foreigntool"
    foreign.write_bytes(b"#!/bin/sh\necho admin's own\n")
    path = tarball(
        shared_dir / "sys_1.0.tar.gz",
        {"bin/systool": '#!/bin/sh\necho "systool as $(id -u)"\n', "bin/foreigntool": "x\n"},
    )
    try:
        r = system.core("install", str(path))
        assert r.returncode == 0, r.stderr.decode()
        assert f"{foreign} exists and was not written by layershell: left alone" in (
            r.stderr.decode()
        )
        assert foreign.read_bytes() == b"#!/bin/sh\necho admin's own\n"
        shim = bin_dir / "systool"
        assert shim.stat().st_uid == 0  # root wrote it; layer accounts cannot
        otto = pwd.getpwnam(system.otto).pw_uid
        r = system.as_user(system.otto, [str(shim)])
        assert r.stdout.decode().strip() == f"systool as {otto}", r.stderr.decode()
        r2 = subprocess.run([str(shim)], capture_output=True, check=False)
        assert r2.returncode == 1 and b"refusing to run a layer program as root" in r2.stderr
        listing = json.loads(system.core("list", "--json").stdout)
        assert [x["exposes"] for x in listing if x["name"] == "sys"] == [["systool"]]
    finally:
        system.core("remove", "sys")
        foreign.unlink()
    assert not (bin_dir / "systool").exists()


def test_a_directory_of_drops_is_one_install_and_each_settles_on_its_own(
    system: SystemStack, shared_dir: Path
) -> None:
    """The drops of one <profile>/<user> directory go to one `core install --json` of
    the account's (inbox_cmd.install_drops); each still lands in done/ or failed/ with
    its own reason, whatever the others did."""
    inbox = shared_dir / "inbox-batch"
    udir = inbox / "default" / system.arne
    udir.mkdir(parents=True)
    tarball(udir / "batcha_1.0.tar.gz", program("batcha", "1.0"))
    tarball(udir / "batchb_2.0.tar.gz", program("batchb", "2.0"))
    tarball(udir / "batchc_1.0.tar.gz", {**program("batchc", "1.0"), "install.sh": "exit 4\n"})
    (udir / "batchd_1.0.tar.gz").write_text("not an archive\n")
    for d, _, files in os.walk(inbox):
        os.chmod(d, 0o755)
        for f in files:
            os.chmod(os.path.join(d, f), 0o644)
    r = system.core("inbox", str(inbox))
    assert r.returncode == 1, r.stderr.decode()
    for name in ("batcha_1.0", "batchb_2.0"):
        assert (udir / f"done/{name}.tar.gz").is_file(), r.stderr.decode()
    c = (udir / "failed/batchc_1.0.tar.gz.reason").read_text()
    d = (udir / "failed/batchd_1.0.tar.gz.reason").read_text()
    assert "install.sh" in c and "4" in c, c
    assert "not a package archive" in d, d
    listed = {x["name"]: x["version"] for x in json.loads(system.core("list", "--json").stdout)}
    assert {k: v for k, v in listed.items() if k.startswith("batch")} == {
        "batcha": "1.0", "batchb": "2.0"
    }  # fmt: skip
    for name in ("batcha", "batchb"):
        assert system.core("remove", name).returncode == 0
