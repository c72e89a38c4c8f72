"""Issue 10, attacks 3 and 7, written as the attacks: the layer account (arne) tries to
make root act on its own record, and a package tries to shadow host tools.

System mode with real accounts on a relocated root (shims; root's view of the record),
and, for portable services, the systemd testbed with real portablectl. Every test here
failed against the code before grants.py (root took profile, enable and start from
arne's state.db, opened that file with SQLite through arne's links, and exposed `ls`
or `sudoedit` with a warning)."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import support, testbed
from tests.packages import Repository, tarball

# arne's hand on its own record: set a package's spec (the record's JSON column).
EDIT_SPEC = """\
import json, sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.execute("UPDATE packages SET spec = ? WHERE name = ?", (sys.argv[2], sys.argv[3]))
db.commit()
db.close()
"""


def err(r: object) -> str:
    return r.stderr.decode()  # type: ignore[attr-defined, no-any-return]


def store(s: support.SystemStack) -> Path:
    return s.root / "var/lib/layershell/layers/arne"


def as_arne(s: support.SystemStack, *args: str) -> subprocess.CompletedProcess[bytes]:
    return s.as_user(s.arne, [sys.executable, "-m", "layershell", *args], timeout=120)


def edit_spec(s: support.SystemStack, name: str, spec: dict[str, object]) -> None:
    db = str(store(s) / "state.db")
    r = s.as_user(s.arne, [sys.executable, "-c", EDIT_SPEC, db, json.dumps(spec), name])
    assert r.returncode == 0, err(r)


def shim_profile(s: support.SystemStack, name: str) -> str:
    head = (s.root / "usr/local/bin" / name).read_text().splitlines()[1]
    return head.split("profile ")[1].split(")")[0]


def package(shared: Path, name: str, programs: tuple[str, ...]) -> Path:
    files: dict[str, bytes | str] = {f"bin/{p}": f"#!/bin/sh\necho {p}\n" for p in programs}
    path = tarball(shared / f"{name}_1.0.tar.gz", files)
    shared.chmod(0o755)
    return path


# -- (1) arne's record says profile trusted: root's sync writes no trusted shim --------


def test_an_edited_record_grants_no_profile(stack: support.SystemStack, shared_dir: Path) -> None:
    path = package(shared_dir, "atkedit", ("atkedit",))
    r = stack.core("install", str(path))
    assert r.returncode == 0, err(r)
    try:
        assert shim_profile(stack, "atkedit") == "default"
        edit_spec(
            stack,
            "atkedit",
            {"profile": "trusted", "expose": ["atkedit", "ls"], "expose_over": ["ls"],
             "enable": ["/opt/pkgs/atkedit_1.0/x.service"], "install_method": "symlink"},
        )  # fmt: skip
        r = stack.core("expose", "--sync")
        assert r.returncode == 0, err(r)
        assert shim_profile(stack, "atkedit") == "default"
        assert not (stack.root / "usr/local/bin/ls").exists()
        rows = json.loads(stack.core("list", "--json").stdout)
        mine = next(x for x in rows if x["name"] == "atkedit")
        assert mine["spec"]["profile"] == "trusted"  # the account's record, shown as is
        assert mine["granted"]["profile"] == "default"  # what root acts on
        assert mine["granted"]["enable"] == [] and mine["granted"]["install_method"] == "auto"
    finally:
        stack.core("remove", "atkedit")


def test_a_record_may_ask_for_a_stricter_profile(
    stack: support.SystemStack, shared_dir: Path
) -> None:
    path = package(shared_dir, "atkstrict", ("atkstrict",))
    assert stack.core("install", str(path)).returncode == 0
    try:
        edit_spec(stack, "atkstrict", {"profile": "strict"})
        assert stack.core("expose", "--sync").returncode == 0
        assert shim_profile(stack, "atkstrict") == "strict"
    finally:
        stack.core("remove", "atkstrict")


# -- (2) arne installs with --profile trusted itself: root's sync writes a default shim


def test_the_account_cannot_grant_itself_trusted(
    stack: support.SystemStack, shared_dir: Path
) -> None:
    path = package(shared_dir, "atkself", ("atkself",))
    r = as_arne(stack, "install", "--profile", "trusted", str(path))
    assert r.returncode == 0, err(r)
    try:
        r = stack.core("expose", "--sync")
        assert r.returncode == 0, err(r)
        assert shim_profile(stack, "atkself") == "default"
        assert "profile trusted" not in (stack.root / "usr/local/bin/atkself").read_text()
    finally:
        stack.core("remove", "atkself")


def test_roots_own_profile_is_a_grant(stack: support.SystemStack, shared_dir: Path) -> None:
    path = package(shared_dir, "rootgrant", ("rootgrant",))
    r = stack.core("install", "--profile", "nonetwork", str(path))
    assert r.returncode == 0, err(r)
    try:
        edit_spec(stack, "rootgrant", {"profile": "trusted"})  # looser: not honoured
        assert stack.core("expose", "--sync").returncode == 0
        assert shim_profile(stack, "rootgrant") == "nonetwork"
    finally:
        stack.core("remove", "rootgrant")


# -- (3) arne's links in its store: root's listing follows none, changes nothing -------


def make_record(path: Path, name: str) -> None:
    """A layershell record (the real schema) holding one active package `name`."""
    from layershell.packages.state import Installed, State

    with State(str(path)) as st, st.transaction():
        st.record(
            Installed(name, "1.0", "arne", f"/nowhere/{name}_1.0", "0" * 64, "x", 0, 0, 0,
                      time.time(), True, {"profile": "trusted"}),
            activate=True,
        )  # fmt: skip


def snapshot(directory: Path) -> dict[str, tuple[int, int, bytes]]:
    out = {}
    for entry in sorted(os.listdir(directory)):
        st = os.lstat(directory / entry)
        regular = stat.S_ISREG(st.st_mode)
        data = (directory / entry).read_bytes() if regular else b""
        out[entry] = (st.st_uid, st.st_size, data)
    return out


def arne_sh(s: support.SystemStack, script: str) -> None:
    r = s.as_user(s.arne, ["sh", "-c", script])
    assert r.returncode == 0, err(r)


@pytest.fixture
def recorded(stack: support.SystemStack, shared_dir: Path) -> Iterator[Path]:
    """arne's record holds one package; the test's links are undone afterwards."""
    path = package(shared_dir, "atkdb", ("atkdb",))
    assert stack.core("install", str(path)).returncode == 0
    db = store(stack) / "state.db"
    shutil.copy2(db, shared_dir / "good.db")
    yield db
    for suffix in ("", "-wal", "-shm"):
        p = Path(f"{db}{suffix}")
        if p.is_symlink():
            p.unlink()
    if not db.exists():
        shutil.copy2(shared_dir / "good.db", db)
        os.chown(db, pwd.getpwnam(stack.arne).pw_uid, pwd.getpwnam(stack.arne).pw_gid)
    stack.core("remove", "atkdb")


def test_a_record_replaced_by_a_link_is_not_followed(
    stack: support.SystemStack, recorded: Path, shared_dir: Path
) -> None:
    canary_dir = shared_dir / "root-only"
    canary_dir.mkdir()
    canary = canary_dir / "canary.db"
    make_record(canary, "planted")  # root's own file, holding a package arne names
    before = snapshot(canary_dir)
    arne_sh(stack, f"mv {recorded} {recorded}.mine && ln -s {canary} {recorded}")
    try:
        r = stack.core("list", "--json")
        assert "planted" not in r.stdout.decode()
        assert r.returncode != 0 and "link" in err(r), err(r)
        r = stack.core("expose", "--sync")
        assert not (stack.root / "usr/local/bin/planted").exists()
        assert snapshot(canary_dir) == before  # not opened: no -wal/-shm beside it
    finally:
        arne_sh(stack, f"rm -f {recorded} && mv {recorded}.mine {recorded}")
    rows = json.loads(stack.core("list", "--json").stdout)
    assert [x["name"] for x in rows] == ["atkdb"]


@pytest.mark.parametrize("planted", ["-shm", "-wal", "-wal -shm"])
def test_planted_wal_and_shm_links_touch_no_host_file(
    stack: support.SystemStack, recorded: Path, shared_dir: Path, planted: str
) -> None:
    canary_dir = shared_dir / "root-only"
    canary_dir.mkdir()
    for suffix in planted.split():
        (canary_dir / f"canary{suffix}").write_bytes(b"root's own file\n" * 64)
    before = snapshot(canary_dir)
    links = " && ".join(f"ln -s {canary_dir}/canary{x} {recorded}{x}" for x in planted.split())
    arne_sh(stack, f"rm -f {recorded}-wal {recorded}-shm && {links}")
    entries = snapshot(store(stack))
    r = stack.core("list", "--json")
    if "-wal" in planted:
        # A WAL that is not the account's own file: refused, and said so.
        assert r.returncode != 0 and "state.db-wal" in err(r) and "link" in err(r), err(r)
    else:
        assert r.returncode == 0, err(r)
        assert [x["name"] for x in json.loads(r.stdout)] == ["atkdb"]
    stack.core("expose", "--sync")
    assert snapshot(canary_dir) == before
    assert snapshot(store(stack)) == entries  # root created nothing beside them


def test_roots_listing_creates_nothing_in_the_store(
    stack: support.SystemStack, recorded: Path
) -> None:
    def record_files() -> dict[str, int]:
        return {
            e: os.lstat(store(stack) / e).st_uid
            for e in os.listdir(store(stack))
            if e.startswith("state.db")
        }

    # arne's own last connection checkpoints and closes: its record is one file.
    close = "import sqlite3, sys; sqlite3.connect(sys.argv[1]).close()"
    r = stack.as_user(stack.arne, [sys.executable, "-c", close, str(recorded)])
    assert r.returncode == 0, err(r)
    assert record_files() == {"state.db": pwd.getpwnam(stack.arne).pw_uid}
    for args in (("list", "--json"), ("info", "atkdb"), ("expose", "--sync")):
        r = stack.core(*args)
        assert r.returncode == 0, err(r)
        # SQLite run by root would create -wal and -shm here (and chown them to arne).
        assert record_files() == {"state.db": pwd.getpwnam(stack.arne).pw_uid}, args
    r = as_arne(stack, "remove", "atkdb")  # the account's own next write still works
    assert r.returncode == 0, err(r)


def test_other_fields_of_the_record_are_checked(stack: support.SystemStack, recorded: Path) -> None:
    arne = pwd.getpwnam(stack.arne)
    code = (
        "import sqlite3, sys; db = sqlite3.connect(sys.argv[1]);"
        "db.execute(\"UPDATE packages SET source = 'x\\x1b]0;pwned\\x07'\"); db.commit()"
    )
    r = stack.as_user(stack.arne, [sys.executable, "-c", code, str(recorded)])
    assert r.returncode == 0, err(r)
    r = stack.core("list")
    assert "\x1b" not in r.stdout.decode() + err(r)  # never reaches root's terminal
    assert "its source is not printable text" in err(r)
    assert arne.pw_uid == os.stat(recorded).st_uid


# -- (4) shadowing host tools ---------------------------------------------------------

SHADOWS = ("ls", "python3")
IDENTITY = ("sudoedit", "run0", "machinectl", "systemd-run")


def test_host_tools_are_not_shadowed(stack: support.SystemStack, shared_dir: Path) -> None:
    path = package(shared_dir, "shadow", (*SHADOWS, *IDENTITY, "shadowok"))
    r = stack.core("install", str(path))
    try:
        assert r.returncode == 0, err(r)
        bin_dir = stack.root / "usr/local/bin"
        assert (bin_dir / "shadowok").exists()
        for name in (*SHADOWS, *IDENTITY):
            assert not (bin_dir / name).exists(), name
        for name in SHADOWS:
            assert f"{name}: shadow may not shadow the host's" in err(r), err(r)
            assert f"expose_over: [{name}]" in err(r)
        for name in IDENTITY:
            assert f"{name}: shadow may not put a command of that name on PATH" in err(r)
    finally:
        stack.core("remove", "shadow")


def test_expose_over_in_the_host_manifest_allows_shadowing_only(
    stack: support.SystemStack, shared_dir: Path
) -> None:
    repo = Repository(shared_dir / "repo")
    repo.add("shadow", "2.0", {f"bin/{p}": f"#!/bin/sh\necho {p}\n" for p in (*SHADOWS, *IDENTITY)})
    repo.index()
    manifest = stack.root / "etc/layershell/composable.yaml"
    names = ", ".join((*SHADOWS, *IDENTITY))
    manifest.write_text(
        f"composable:\n  default_repository: {repo.file_url}\n  packages:\n"
        f"    - name: shadow\n      version: '2.0'\n      expose: [{names}]\n"
        "      expose_over: [ls, python3]\n"
    )
    try:
        r = stack.core("install", "shadow")
        assert r.returncode == 0, err(r)
        bin_dir = stack.root / "usr/local/bin"
        for name in SHADOWS:
            assert (bin_dir / name).exists(), err(r)
        for name in IDENTITY:
            assert not (bin_dir / name).exists()
            assert f"{name}: shadow may not put a command of that name on PATH" in err(r)
        # expose_over may not name an identity tool at all.
        manifest.write_text(manifest.read_text().replace("[ls, python3]", "[ls, sudoedit]"))
        r = stack.core("check")
        assert r.returncode == 2
        assert "expose_over.1: 'sudoedit' asks for passwords or changes identity" in err(r)
    finally:
        manifest.unlink()
        stack.core("remove", "shadow")


# -- portable services, in the systemd testbed ----------------------------------------

ARNE_DB = "/var/lib/layershell/layers/arne/state.db"
ROOT_UNIT = """\
[Unit]
Description=arne's unit, meant to run as host root
[Service]
ExecStart=/bin/sh -c 'id -u > /root/pwned; exec sleep 600'
[Install]
WantedBy=multi-user.target
"""


@pytest.fixture(scope="module")
def bed() -> Iterator[testbed.Testbed]:
    with testbed.with_layershell() as (tb, arch):
        for name in ("svcatk", "svcother", "svcself"):
            tb.exec(
                "sh", "-c",
                f"mk-portable-package /srv/src/{name} {name} 1.0 && mkdir -p /srv/repo/{arch}",
                check=True, timeout=300,
            )  # fmt: skip
        tb.write("/srv/src/svcatk/evil/svcatk-root.service", ROOT_UNIT)
        for name in ("svcatk", "svcother", "svcself"):
            tb.exec(
                "tar", "-C", f"/srv/src/{name}", "-czf", f"/srv/repo/{arch}/{name}_1.0.tar.gz",
                ".", check=True,
            )  # fmt: skip
        tb.exec("chmod", "-R", "a+rX", "/srv", check=True)
        testbed.publish(tb, f"/srv/repo/{arch}")
        yield tb


def _ref(bed: testbed.Testbed, name: str) -> str:
    arch = bed.exec("uname", "-m", check=True).stdout.strip()
    return f"file:///srv/repo/{arch}/{name}_1.0"


def _arne(bed: testbed.Testbed, *argv: str) -> None:
    r = bed.exec("runuser", "-u", "arne", "--", *argv, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


def _state(bed: testbed.Testbed, unit: str) -> str:
    return bed.exec("systemctl", "is-active", unit).stdout.strip()


def _profile_of(bed: testbed.Testbed, unit: str) -> str:
    drop_in = bed.host_path(f"/etc/systemd/system.attached/{unit}.d/10-profile.conf")
    for profile in ("default", "nonetwork", "strict", "trusted"):
        shipped = bed.host_path(f"/usr/lib/systemd/portable/profile/{profile}/service.conf")
        if drop_in.read_text() == shipped.read_text():
            return profile
    return "?"


@pytest.mark.slow
def test_an_edited_record_enables_and_starts_nothing(bed: testbed.Testbed) -> None:
    r = bed.exec("core", "install", "--quiet", _ref(bed, "svcother"), timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert _state(bed, "svcother.service") != "active"  # a reference grants no start
    # arne installs svcatk itself, then writes into its own record what root should do.
    _arne(bed, "core", "install", "--quiet", _ref(bed, "svcatk"))
    spec = {
        "enable": ["/opt/pkgs/svcatk_1.0/evil/svcatk-root.service", "svcatk.service"],
        "start": ["svcatk-root.service", "svcother.service", "svcatk.service"],
        "install_method": "symlink",
    }
    _arne(bed, sys.executable, "-c", EDIT_SPEC, ARNE_DB, json.dumps(spec), "svcatk")
    try:
        for argv in (("core", "install", "--quiet", _ref(bed, "svcatk")),
                     ("core", "expose", "--sync")):  # fmt: skip
            r = bed.exec(*argv, timeout=300)
            assert not bed.host_path("/root/pwned").exists(), r.stdout + r.stderr
            assert not bed.host_path("/etc/systemd/system/svcatk-root.service").exists()
            assert _state(bed, "svcatk-root.service") != "active"
            assert _state(bed, "svcother.service") != "active"
            assert _state(bed, "svcatk.service") != "active"  # ungranted: attached only
            enabled = bed.exec("systemctl", "is-enabled", "svcatk.service").stdout.strip()
            assert enabled not in ("enabled", "linked"), enabled
        assert _profile_of(bed, "svcatk.service") == "default"
    finally:
        bed.exec("core", "remove", "svcatk", "svcother", timeout=300)


@pytest.mark.slow
def test_the_account_grants_its_service_nothing(bed: testbed.Testbed) -> None:
    # arne's own manifest says trusted and start: root's sync attaches under default,
    # and starts nothing; the host's manifest then grants the start.
    bed.write(
        "/srv/arne.yaml",
        "composable:\n  default_repository: file:///srv/repo\n  packages:\n"
        "    - name: svcself\n      version: '1.0'\n      profile: trusted\n"
        "      enable: [svcself.service]\n      start: [svcself.service]\n",
    )
    _arne(bed, "core", "install", "--quiet", "--config", "/srv/arne.yaml")
    try:
        r = bed.exec("core", "expose", "--sync", timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        assert _profile_of(bed, "svcself.service") == "default"
        assert _state(bed, "svcself.service") != "active"
        # Root's own word is checked too before systemctl sees it.
        for unit, why in (("../../etc/x.service", "is not a unit name"),
                          ("/opt/pkgs/svcself_1.0/usr/lib/systemd/system/svcself.service",
                           "is not a unit name"),
                          ("svcother.service", "is not one of svcself's units")):  # fmt: skip
            r = bed.exec("core", "expose", "svcself", "--service", unit, timeout=120)
            assert r.returncode != 0 and why in r.stderr, r.stdout + r.stderr
        r = bed.exec("core", "expose", "svcself", "--service", "svcself.service", timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        assert _state(bed, "svcself.service") == "active"
    finally:
        bed.exec("core", "remove", "svcself", timeout=300)


# -- the inbox: a directory's profile is root's word only if only root put the file there


@pytest.mark.parametrize("how", ["world-writable directory", "file of another account"])
def test_an_inbox_drop_not_put_there_by_root_is_not_granted(
    stack: support.SystemStack, shared_dir: Path, how: str
) -> None:
    udir = shared_dir / "inbox" / "trusted" / stack.arne
    udir.mkdir(parents=True)
    for d in (udir, udir.parent, udir.parent.parent):
        d.chmod(0o755)
    drop = package(udir, "atkinbox", ("atkinbox",))
    if how == "world-writable directory":
        udir.chmod(0o777)
    else:
        otto = pwd.getpwnam(stack.otto)
        os.chown(drop, otto.pw_uid, otto.pw_gid)
    r = stack.core("inbox", str(shared_dir / "inbox"))
    try:
        assert r.returncode == 1
        reason = (udir / "failed/atkinbox_1.0.tar.gz.reason").read_text()
        # Refused outright by the inbox (inbox.py): not root's alone, so not root's word.
        assert "not root's alone" in reason, reason
        assert not (stack.root / "usr/local/bin/atkinbox").exists()
    finally:
        stack.core("remove", "atkinbox")


def test_a_grant_ends_with_the_package(stack: support.SystemStack, shared_dir: Path) -> None:
    path = package(shared_dir, "atkregrant", ("atkregrant",))
    assert stack.core("install", "--profile", "trusted", str(path)).returncode == 0
    assert shim_profile(stack, "atkregrant") == "trusted"  # root's own word
    assert stack.core("remove", "atkregrant").returncode == 0
    r = as_arne(stack, "install", str(path))  # the account, on its own, later
    assert r.returncode == 0, err(r)
    try:
        assert stack.core("expose", "--sync").returncode == 0
        assert shim_profile(stack, "atkregrant") == "default"
    finally:
        stack.core("remove", "atkregrant")


def test_root_lists_no_directory_through_the_packages_links(
    stack: support.SystemStack, shared_dir: Path
) -> None:
    secret = shared_dir / "root-only"
    secret.mkdir(mode=0o700)
    (secret / "secret-name").write_text("x")
    (secret / "secret-name").chmod(0o755)
    path = package(shared_dir, "atklink", ("atklink",))
    assert stack.core("install", str(path)).returncode == 0
    try:
        tree = stack.root / "opt/pkgs/atklink_1.0"
        arne_sh(stack, f"rm -r {tree}/bin && ln -s {secret} {tree}/bin")
        r = stack.core("expose", "--sync")
        assert r.returncode == 0, err(r)
        assert not (stack.root / "usr/local/bin/secret-name").exists()
        assert "secret-name" not in err(r)
    finally:
        stack.core("remove", "atklink")


# -- from the attack review: a newline in a record field, a reference, a record's time --

PLANT_ROW = """\
import os, sqlite3, sys
db = sqlite3.connect(sys.argv[1])
cols = [c[1] for c in db.execute("PRAGMA table_info(packages)")]
row = dict(zip(cols, db.execute("SELECT * FROM packages LIMIT 1").fetchone()))
row.update(name=sys.argv[2], version=sys.argv[3], path=sys.argv[4], active=1)
db.execute(
    f"INSERT INTO packages ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
    [row[c] for c in cols],
)
db.commit()
os.makedirs(os.path.join(sys.argv[4], "bin"))
with open(os.path.join(sys.argv[4], "bin", "nltool"), "w") as f:
    f.write("#!/bin/sh\\necho nltool\\n")
os.chmod(os.path.join(sys.argv[4], "bin", "nltool"), 0o755)
"""


def test_a_newline_in_a_record_puts_no_command_into_a_shim(
    stack: support.SystemStack, shared_dir: Path
) -> None:
    """`^...$` also matched a trailing newline: arne recorded package "atknl\\n" version
    "id\\n" (and made the directory), and root's shim carried `id` on a line of its own,
    run by every caller outside the sandbox, root included."""
    path = package(shared_dir, "atkseed", ("atkseed",))
    assert stack.core("install", str(path)).returncode == 0
    bad = str(stack.root / "opt/pkgs" / "atknl\n_id\n")
    try:
        db = str(store(stack) / "state.db")
        r = stack.as_user(stack.arne, [sys.executable, "-c", PLANT_ROW, db, "atknl\n", "id\n", bad])
        assert r.returncode == 0, err(r)
        r = stack.core("expose", "--sync")
        assert not (stack.root / "usr/local/bin/nltool").exists(), err(r)
        assert "not a package name and version" in err(r)
        for shim in (stack.root / "usr/local/bin").iterdir():
            assert "\nid\n" not in shim.read_text(errors="replace"), shim
    finally:
        stack.as_user(stack.arne, ["rm", "-rf", bad])
        stack.core("remove", "atkseed")


def test_a_reference_keeps_the_host_manifests_profile(
    stack: support.SystemStack, shared_dir: Path
) -> None:
    """Installing by reference recorded a `default` grant that outranked the host
    manifest's `strict` for the same package."""
    repo = Repository(shared_dir / "repo")
    repo.add("atkref", "1.0", {"bin/atkref": "#!/bin/sh\necho atkref\n"})
    repo.index()
    host = stack.root / "etc/layershell/composable.yaml"
    host.write_text(
        f"composable:\n  default_repository: {repo.file_url}\n  packages:\n"
        "    - name: atkref\n      version: '1.0'\n      profile: strict\n"
    )
    try:
        ref = f"{repo.file_url}/{arch()}/atkref_1.0"
        r = stack.core("install", ref)
        assert r.returncode == 0, err(r)
        edit_spec(stack, "atkref", {})  # the record asks for nothing stricter
        assert stack.core("expose", "--sync").returncode == 0
        assert shim_profile(stack, "atkref") == "strict"
    finally:
        stack.core("remove", "atkref")
        host.unlink()


def arch() -> str:
    from layershell.packages import repo as repo_mod

    return repo_mod.host_arch()


SET_TIME = """\
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.execute("UPDATE packages SET installed_at = 1e300 WHERE name = ?", (sys.argv[2],))
db.commit()
"""


def test_a_record_from_the_far_future_gives_no_traceback(
    stack: support.SystemStack, shared_dir: Path
) -> None:
    path = package(shared_dir, "atktime", ("atktime",))
    assert stack.core("install", str(path)).returncode == 0
    try:
        db = str(store(stack) / "state.db")
        r = stack.as_user(stack.arne, [sys.executable, "-c", SET_TIME, db, "atktime"])
        assert r.returncode == 0, err(r)
        r = stack.core("list")
        assert "Traceback" not in err(r), err(r)
        assert "its time or active flag is not one" in err(r)
    finally:
        stack.core("remove", "atktime")
