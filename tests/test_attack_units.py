"""Issue 10, attack 2: portable units that escape their profile, as hostile packages
attached by root in the systemd testbed (real systemd 252, real portablectl).

(a) list settings merge with the profile: `User=root` + `BindPaths=/:/host` ran as uid 0
    over the whole host tree;
(b) systemd adds the profile's drop-in to `.service` units only: a `.socket` unit's
    `ExecStartPre=` ran as plain host root under `strict`;
(c) portabled reads every unit search path of an image and prefers
    etc/systemd/system.control and usr/local/lib/systemd/system: a hidden `+` unit there
    was attached instead of the checked one and wrote /root;
(d) a `.socket` whose every key was on the allow-list: `ListenStream=` two directories
    below /run/<name> with `DirectoryMode=0777` made systemd (root) create world-writable
    directories; the layer account swapped one for a link to /etc/systemd/system, the
    package's own timers restarted the socket, systemd created a host unit's drop-in
    directory through the link, mode 0777, and the account's drop-in ran as root.

Each test installs the hostile package the documented way (root's `core install`) and
asserts that the harm did not happen and that the refusal names the file, line and key.
A well-behaved package with a socket and a timer still attaches and runs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from tests import testbed

pytestmark = pytest.mark.slow

ATTACHED = "/etc/systemd/system.attached"
SERVICE = "[Unit]\nDescription={name}\n[Service]\nExecStart={exec}\n"
LOOP = "/usr/bin/sh -c 'while :; do sleep 1; done'"
# systemd 252 still applies RootDirectory= to a '+' line (it runs as full root inside the
# image), so the hidden unit reaches the host's /root through its own binds.
HIDDEN = (
    "[Service]\nUser=root\nBindPaths=/:/host\n"
    "ExecStartPre=-+/usr/bin/sh -c 'echo plus > /root/{name}-plus'\n"
    "ExecStart=/usr/bin/sh -c 'echo pwned > /host/root/{name}-pwned; exec sleep 1000'\n"
)

# name -> (profile, units to start, {path in the package: unit text})
HOSTILE: dict[str, tuple[str, list[str], dict[str, str]]] = {
    "evila": (
        "default",
        ["evila.service"],
        {
            "usr/lib/systemd/system/evila.service": "[Unit]\nDescription=evila\n[Service]\n"
            "User=root\nBindPaths=/:/host\n"
            "ExecStart=/usr/bin/sh -c 'echo pwned > /host/root/evila-pwned; "
            "while :; do sleep 1; done'\n",
        },
    ),
    "evilb": (
        "strict",
        ["evilb.socket"],
        {
            "usr/lib/systemd/system/evilb.service": SERVICE.format(name="evilb", exec=LOOP),
            "usr/lib/systemd/system/evilb.socket": "[Unit]\nDescription=evilb socket\n"
            "[Socket]\nListenStream=/run/evilb.sock\n"
            "ExecStartPre=/bin/sh -c 'id -u > /root/evilb-pwned'\n",
        },
    ),
    "evilc": (
        "default",
        ["evilc.service"],
        {
            "usr/lib/systemd/system/evilc.service": SERVICE.format(name="evilc", exec=LOOP),
            "etc/systemd/system.control/evilc.service": HIDDEN.format(name="evilc"),
        },
    ),
    "evild": (
        "default",
        ["evild.service"],
        {
            "usr/lib/systemd/system/evild.service": SERVICE.format(name="evild", exec=LOOP),
            "usr/local/lib/systemd/system/evild.service": HIDDEN.format(name="evild"),
        },
    ),
}
# (d): the review's package, unchanged but for timers that repeat (so the restart comes
# after the account's swap however long the install took).
SOCKD_DROPIN = "/etc/systemd/system/systemd-tmpfiles-clean.service.d"
SOCKD_UNITS = {
    "usr/lib/systemd/system/sockd.socket": "[Unit]\nDescription=sockd socket\n[Socket]\n"
    "ListenStream=/run/sockd/sub/systemd-tmpfiles-clean.service.d/sock\n"
    "DirectoryMode=0777\nSocketMode=0666\nRemoveOnStop=yes\n"
    "[Install]\nWantedBy=sockets.target\n",
    "usr/lib/systemd/system/sockd.service": "[Unit]\nDescription=sockd\n[Service]\n"
    "ExecStart=/usr/bin/sh -c 'exec sleep 1000'\n",
    "usr/lib/systemd/system/sockd-stop.service": "[Unit]\nDescription=stop it\n"
    "Conflicts=sockd.socket\n[Service]\nType=oneshot\nExecStart=/usr/bin/sleep 0\n",
    "usr/lib/systemd/system/sockd-start.service": "[Unit]\nDescription=start it\n"
    "Wants=sockd.socket\nAfter=sockd.socket\n[Service]\nType=oneshot\n"
    "ExecStart=/usr/bin/sleep 0\n",
    "usr/lib/systemd/system/sockd-stop.timer": "[Unit]\nDescription=t\n[Timer]\n"
    "OnActiveSec=2s\nOnUnitActiveSec=4s\nAccuracySec=1s\nUnit=sockd-stop.service\n"
    "[Install]\nWantedBy=timers.target\n",
    "usr/lib/systemd/system/sockd-start.timer": "[Unit]\nDescription=t\n[Timer]\n"
    "OnActiveSec=4s\nOnUnitActiveSec=4s\nAccuracySec=1s\nUnit=sockd-start.service\n"
    "[Install]\nWantedBy=timers.target\n",
}
SOCKD_START = ["sockd.socket", "sockd-stop.timer", "sockd-start.timer"]
GOOD_UNITS = {
    "usr/lib/systemd/system/goodsock.service": "[Unit]\nDescription=goodsock\n[Service]\n"
    "ExecStart=/usr/bin/sh -c 'while :; do echo alive; sleep 1; done'\nDynamicUser=yes\n"
    "ProtectSystem=strict\nRestart=on-failure\n[Install]\nWantedBy=multi-user.target\n",
    "usr/lib/systemd/system/goodsock.socket": "[Unit]\nDescription=goodsock socket\n"
    "[Socket]\nListenStream=/run/goodsock/sock\nSocketMode=0600\n"
    "[Install]\nWantedBy=sockets.target\n",
    "usr/lib/systemd/system/goodsock-tick.timer": "[Unit]\nDescription=tick\n"
    "[Timer]\nOnActiveSec=1h\nUnit=goodsock.service\n[Install]\nWantedBy=timers.target\n",
}


def manifest(name: str, profile: str, start: list[str]) -> str:
    return (
        "composable:\n  default_repository: file:///srv/repo\n  packages:\n"
        f"    - name: {name}\n      version: '1.0'\n      profile: {profile}\n"
        f"      install_method: copy\n      enable: [{', '.join(start)}]\n"
        f"      start: [{', '.join(start)}]\n"
    )


def build(tb: testbed.Testbed, arch: str, name: str, units: dict[str, str]) -> None:
    """A portable image from mk-portable-package, its units replaced by `units`."""
    src = f"/srv/src/{name}"
    tb.exec("mk-portable-package", src, name, "1.0", check=True, timeout=300)
    tb.exec("rm", "-f", f"{src}/usr/lib/systemd/system/{name}.service", check=True)
    for path, text in units.items():
        tb.write(f"{src}/{path}", text)
    tb.exec(
        "sh", "-c", f"mkdir -p /srv/repo/{arch} && "
        f"tar -C {src} -czf /srv/repo/{arch}/{name}_1.0.tar.gz .",
        check=True,
    )  # fmt: skip


@pytest.fixture(scope="module")
def bed() -> Iterator[testbed.Testbed]:
    with testbed.with_layershell() as (tb, arch):
        for name, (profile, start, units) in HOSTILE.items():
            build(tb, arch, name, units)
            tb.write(f"/srv/{name}.yaml", manifest(name, profile, start))
        build(tb, arch, "sockd", SOCKD_UNITS)
        tb.write("/srv/sockd.yaml", manifest("sockd", "strict", SOCKD_START))
        build(tb, arch, "goodsock", GOOD_UNITS)
        tb.write("/srv/goodsock.yaml", manifest("goodsock", "strict", ["goodsock.socket"]))
        testbed.publish(tb, f"/srv/repo/{arch}")
        yield tb


def install(bed: testbed.Testbed, name: str) -> str:
    """Root's core install of the package; then it is removed again, so that the next
    install's sync of every package does not report this one."""
    r = bed.exec("core", "install", "--quiet", "--config", f"/srv/{name}.yaml", timeout=300)
    out = f"exit {r.returncode}\n{r.stdout}{r.stderr}"
    if name in HOSTILE:
        gone = bed.exec("core", "remove", name, timeout=120)
        assert gone.returncode == 0, gone.stdout + gone.stderr
    return out


def not_attached(bed: testbed.Testbed, name: str) -> None:
    leftovers = sorted(p.name for p in bed.host_path(ATTACHED).glob(f"{name}*"))
    assert leftovers == [], leftovers
    assert not bed.host_path(f"/var/lib/portables/{name}_1.0").exists()


def test_a_user_root_and_bindpaths_do_not_reach_the_host(bed: testbed.Testbed) -> None:
    out = install(bed, "evila")
    assert not bed.host_path("/root/evila-pwned").exists(), out
    assert out.startswith("exit 1"), out
    assert "usr/lib/systemd/system/evila.service:4: User: " in out, out
    assert "usr/lib/systemd/system/evila.service:5: BindPaths: " in out, out
    not_attached(bed, "evila")


def test_b_socket_exec_lines_do_not_run_as_host_root(bed: testbed.Testbed) -> None:
    out = install(bed, "evilb")
    assert not bed.host_path("/root/evilb-pwned").exists(), out
    assert out.startswith("exit 1"), out
    assert "usr/lib/systemd/system/evilb.socket:5: ExecStartPre: " in out, out
    assert ".socket" in out and "outside the profile" in out, out
    not_attached(bed, "evilb")


@pytest.mark.parametrize(
    ("name", "hidden"),
    [
        ("evilc", "etc/systemd/system.control/evilc.service"),
        ("evild", "usr/local/lib/systemd/system/evild.service"),
    ],
)
def test_c_a_hidden_unit_path_is_never_attached(
    bed: testbed.Testbed, name: str, hidden: str
) -> None:
    out = install(bed, name)
    assert not bed.host_path(f"/root/{name}-pwned").exists(), out
    assert out.startswith("exit 1"), out
    assert f"{hidden}:1: " in out, out
    assert "usr/lib/systemd/system" in out, out  # where units must live
    not_attached(bed, name)


def layer_account(bed: testbed.Testbed) -> str:
    """The account that installed the packages (its home is under the layers)."""
    for line in bed.host_path("/etc/passwd").read_text().splitlines():
        if "/var/lib/layershell/layers/" in line.split(":")[5]:
            return line.split(":")[0]
    raise AssertionError("no layer account in /etc/passwd")


def test_d_socket_paths_make_nothing_others_can_write(bed: testbed.Testbed) -> None:
    r = bed.exec("core", "install", "--quiet", "--config", "/srv/sockd.yaml", timeout=300)
    out = f"exit {r.returncode}\n{r.stdout}{r.stderr}"
    try:
        if bed.host_path(f"{ATTACHED}/sockd.socket").exists():
            # Attached: the account (any local user could) swaps the world-writable
            # directory for a link; the package's timers restart the socket.
            account = layer_account(bed)
            bed.exec(
                "runuser", "-u", account, "--", "sh", "-c",
                "mv /run/sockd/sub /run/sockd/old; ln -s /etc/systemd/system /run/sockd/sub",
                check=True,
            )  # fmt: skip
            for _ in range(60):
                if bed.host_path(SOCKD_DROPIN).exists():
                    break
                time.sleep(2)
            bed.exec(
                "runuser", "-u", account, "--", "sh", "-c",
                f"printf '[Service]\\nExecStartPre=/usr/bin/touch /root/sockd-pwned\\n' "
                f"> {SOCKD_DROPIN}/x.conf",
            )  # fmt: skip
            bed.exec("systemctl", "daemon-reload")
            bed.exec("systemctl", "start", "systemd-tmpfiles-clean.service", timeout=120)
        assert not bed.host_path("/root/sockd-pwned").exists(), out
        assert not bed.host_path(SOCKD_DROPIN).exists(), out
        assert out.startswith("exit 1"), out
        unit = "usr/lib/systemd/system/sockd.socket"
        for want in (f"{unit}:4: ListenStream: ", f"{unit}:5: DirectoryMode: ",
                     f"{unit}:7: RemoveOnStop: "):  # fmt: skip
            assert want in out, (want, out)
        assert f"{unit}:6: SocketMode" not in out, out  # 0666: anyone may connect
        assert not bed.host_path("/run/sockd").exists()
    finally:
        gone = bed.exec("core", "remove", "sockd", timeout=120)
        assert gone.returncode == 0, gone.stdout + gone.stderr
    not_attached(bed, "sockd")


def test_a_good_package_with_socket_and_timer_still_runs(bed: testbed.Testbed) -> None:
    out = install(bed, "goodsock")
    assert out.startswith("exit 0"), out
    assert bed.exec("systemctl", "is-active", "goodsock.socket").stdout.strip() == "active"
    attached = bed.host_path(ATTACHED)
    names = sorted(p.name for p in attached.glob("goodsock*"))
    assert names == [
        "goodsock-tick.timer",
        "goodsock-tick.timer.d",
        "goodsock.service",
        "goodsock.service.d",
        "goodsock.socket",
        "goodsock.socket.d",
    ], names
    for path, text in GOOD_UNITS.items():
        unit = path.rsplit("/", 1)[1]
        assert (attached / unit).read_text() == text
    # The service runs under strict's profile when the socket starts it.
    bed.exec("systemctl", "start", "goodsock.service", check=True)
    show = bed.exec("systemctl", "show", "-p", "DynamicUser", "goodsock.service").stdout
    assert show.strip() == "DynamicUser=yes"
    assert bed.host_path(f"{ATTACHED}/goodsock.service.d/10-profile.conf").exists()
    r = bed.exec("core", "remove", "goodsock", timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    not_attached(bed, "goodsock")


def test_e_a_package_named_after_a_host_service_cannot_take_its_directories(
    bed: testbed.Testbed,
) -> None:
    """A package whose name is a host service's (dbus, say) would have systemd bind its
    socket at /run/<name>/FILE, unlinking the host's socket there (the system bus), and
    take /var/lib/<name>. The goodsock package stands in for it: its /run/goodsock is
    made by the host first, as a host service would."""
    host_dir = bed.host_path("/run/goodsock")
    names = bed.host_path("/var/lib/layershell/portables-names.json")
    if names.exists():  # another test attached goodsock already: start from a new host
        data = json.loads(names.read_text())
        data.pop("goodsock", None)
        names.write_text(json.dumps(data))
    bed.exec("mkdir", "-p", "/run/goodsock", check=True)
    bed.write("/run/goodsock/host.sock", "the host's own\n")
    try:
        r = bed.exec("core", "install", "--quiet", "--config", "/srv/goodsock.yaml", timeout=300)
        out = f"exit {r.returncode}\n{r.stdout}{r.stderr}"
        assert r.returncode != 0, out
        assert "the host already has /run/goodsock" in out, out
        assert (host_dir / "host.sock").read_text() == "the host's own\n"
        not_attached(bed, "goodsock")
    finally:
        bed.exec("core", "remove", "goodsock", timeout=120)
        bed.exec("rm", "-rf", "/run/goodsock", check=True)
