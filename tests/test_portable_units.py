"""What root refuses in a package's units before attaching them (units.py), how it builds
the image portablectl gets (image.py), and `core check PACKAGE`. The real attach, with
systemd 252 and portablectl, is in test_portable.py and test_attack_units.py."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tarfile
from collections.abc import Mapping
from pathlib import Path

import pytest

from layershell.exposure import image, portable, units
from layershell.packages.state import Installed

UNITS = "usr/lib/systemd/system"


def package(root: Path, files: Mapping[str, str | bytes]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode() if isinstance(text, str) else text)
    return root


def problems(root: Path, name: str = "goss") -> list[str]:
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return [str(p) for p in units.check_tree(fd, name).problems]
    finally:
        os.close(fd)


SOCK = "[Socket]\n"
SOCKS = "[Socket]\nListenStream=/run/goss/s\n"


def service(body: str, head: str = "[Unit]\nDescription=goss\n[Service]\nExecStart=/x\n") -> str:
    return head + body


# unit file -> text -> the one problem expected ("" when the unit is fine). Line 5 is the
# first line of `body` in service(body).
ROWS: list[tuple[str, str, str]] = [
    ("goss.service", service("User=root\n"), ":5: User: would choose the service's user"),
    ("goss.service", service("Group=root\n"), ":5: Group: would choose"),
    ("goss.service", service("SupplementaryGroups=disk\n"), ":5: SupplementaryGroups: "),
    ("goss.service", service("DynamicUser=no\n"), ":5: DynamicUser: =no would run the"),
    ("goss.service", service("DynamicUser=0\n"), ":5: DynamicUser: =0 would run"),
    ("goss.service", service("PrivateUsers=no\n"), ":5: PrivateUsers: =no would map"),
    ("goss.service", service("NoNewPrivileges=false\n"), ":5: NoNewPrivileges: =false"),
    ("goss.service", service("ProtectSystem=no\n"), ":5: ProtectSystem: =no would relax"),
    ("goss.service", service("ProtectHome=off\n"), ":5: ProtectHome: =off would relax"),
    ("goss.service", service("PrivateTmp=no\n"), ":5: PrivateTmp: =no would relax"),
    ("goss.service", service("BindPaths=/:/host\n"), ":5: BindPaths: would bind host paths"),
    ("goss.service", service("BindReadOnlyPaths=/etc\n"), ":5: BindReadOnlyPaths: would"),
    ("goss.service", service("RootDirectory=/\n"), ":5: RootDirectory: would replace"),
    ("goss.service", service("RootImage=/x.raw\n"), ":5: RootImage: would replace"),
    ("goss.service", service("CapabilityBoundingSet=CAP_SYS_ADMIN\n"), ":5: Capability"),
    ("goss.service", service("AmbientCapabilities=CAP_NET_ADMIN\n"), ":5: AmbientCap"),
    ("goss.service", service("PermissionsStartOnly=yes\n"), ":5: PermissionsStartOnly: "),
    ("goss.service", service("ExecStartPre=+/bin/sh -c id\n"), ":5: ExecStartPre: a '+'"),
    ("goss.service", service("ExecStartPre=!/bin/true\n"), ":5: ExecStartPre: a '!'"),
    ("goss.service", service("ExecStartPost=!!/bin/true\n"), ":5: ExecStartPost: a '!'"),
    ("goss.service", service("ExecStopPost=-+/bin/true\n"), ":5: ExecStopPost: a '+'"),
    ("goss.service", service("ExecReload=@:!!/bin/true x\n"), ":5: ExecReload: a '!'"),
    ("goss.service", service("ExecStartPre=/bin/true ; +/bin/sh\n"), ":5: ExecStartPre: a '+'"),
    ("goss.service", service("ExecStart=\"+/bin/sh\" -c id\n"), ":5: ExecStart: '\"+/bin/sh\"': a"),
    ("goss.service", service("ExecStart=\\x2b/bin/sh\n"), ":5: ExecStart: '\\\\x2b/bin/sh': a"),
    ("goss.service", service("ExecStart=-%I -c id\n"), ":5: ExecStart: '-%I': a specifier"),
    ("goss.service", service("ExecStart=\\\n +/bin/sh\n"), ":5: ExecStart: a '+'"),
    ("goss.service", service("ExecStart=/bin/echo a;+b ';' +c\n"), ":5: ExecStart: a '+'"),
    ("goss.service", service("ExecStart=/bin/echo a;+b \\; c\n"), ""),
    ("goss.service", service("EnvironmentFile=/etc/shadow\n"), ":5: EnvironmentFile: "),
    ("goss.service", service("LoadCredential=k:/etc/shadow\n"), ":5: LoadCredential: "),
    ("goss.service", service("StandardOutput=file:/etc/passwd\n"), ":5: StandardOutput: "),
    ("goss.service", service("StateDirectory=layershell\n"), ":5: StateDirectory: "),
    ("goss.service", service("StateDirectory=goss:layershell\n"), ":5: StateDirectory: "),
    ("goss.service", service("LogsDirectory=gossip\n"), ":5: LogsDirectory: "),
    ("goss.service", service("SystemCallFilter=@mount\n"), ":5: SystemCallFilter: adds"),
    ("goss.service", service("RestrictAddressFamilies=AF_INET\n"), ":5: RestrictAddress"),
    ("goss.service", service("Slice=system.slice\n"), ":5: Slice: reaches outside"),
    ("goss.service", service("Nice=-20\n"), ":5: Nice: a negative Nice="),
    ("goss.service", service("PAMName=login\n"), ":5: PAMName: "),
    ("goss.service", service("FailureAction=reboot\n"), ":5: FailureAction: could reboot"),
    ("goss.service", service("Wants=debug-shell.service\n", "[Unit]\n"), ":2: Wants: "),
    ("goss.service", service("Conflicts=sshd.service\n", "[Unit]\n"), ":2: Conflicts: "),
    ("goss.service", service("[Install]\nAlso=sshd.service\n"), ":6: Also: sshd.service"),
    ("goss.service", service("[Install]\nAlias=sshd.service\n"), ":6: Alias: sshd.service"),
    ("goss.service", service("[Install]\nRequiredBy=multi-user.target\n"), ":6: Required"),
    ("goss.service", service("Frobnicate=yes\n"), ":5: Frobnicate: not a key layershell"),
    ("goss.service", service("user=root\n"), ":5: user: not a key"),  # keys are case-sensitive
    ("goss.service", service("  User \t=  root\n"), ":5: User: "),
    ("goss.service", service("[service]\nUser=root\n"), ":5: [service]: not a section"),
    ("goss.service", "User=root\n[Service]\nExecStart=/x\n", ":1: User: an assignment before"),
    ("goss.service", service("[Service\n"), ":5: syntax: not a section header"),
    ("goss.service", service("just words\n"), ":5: syntax: not KEY=VALUE"),
    # systemd's continuation rules: a comment inside a continuation is dropped first ...
    ("goss.service", service("# a comment \\\nUser=root\n"), ":6: User: "),
    ("goss.service", service("Environment=A=1 \\\n# note\n User=root\n"), ""),
    ("goss.service", service("Environment=A=1 \\\nUser=root\n"), ""),
    ("goss.service", service("Environment=A=1 \\\\\nUser=root\n"), ":6: User: "),
    ("goss.service", service("Exec\\\nStartPre=+/bin/sh\n"), ":5: Exec StartPre: "),
    ("goss.service", service("Environment=A=1 \\"), ""),  # a continuation at the end
    # ... a bare CR ends a line, control bytes and invalid UTF-8 are refused.
    ("goss.service", service("Environment=A=1\rUser=root\n"), ":6: User: "),
    ("goss.service", service("Environment=A=1\x0cUser=root\n"), ":5: text: a control char"),
    ("goss.service", "\ufeff" + service("User=root\n"), ":5: User: "),
    ("goss.service", service("X-Mine=User=root\n[X-Vendor]\nUser=root\n"), ""),
    ("goss.service", service("DynamicUser=yes\nPrivateUsers=true\nProtectSystem=strict\n"), ""),
    ("goss.service", service("Restart=on-failure\nStateDirectory=goss goss-cache\n"), ""),
    ("goss.service", service("ExecStartPre=-@/bin/sh sh -c true\n"), ""),
    ("goss.service", service("[Install]\nWantedBy=multi-user.target\nAlias=goss-x.service\n"), ""),
    ("goss.service", service("Wants=network-online.target\nAfter=sshd.service\n", "[Unit]\n"), ""),
    ("goss-w@.service", service("Wants=goss-w@%i.service\n", "[Unit]\n"), ""),
    ("goss-w@.service", service("Wants=goss-v@%i.service\n", "[Unit]\n"), ":2: Wants: goss-v"),
    ("goss.service", service("ConditionPathExists=/etc/goss\nAssertUser=root\n", "[Unit]\n"), ""),
    # Exec lines outside a .service run without the profile (systemd 252).
    ("goss.socket", "[Socket]\nListenStream=/run/goss/sock\nExecStartPre=/bin/true\n",
     ":3: ExecStartPre: in a .socket unit this would run outside the profile"),
    ("goss.socket", "[Socket]\nListenStream=/run/goss/sock\nExecStopPost=/bin/true\n",
     ":3: ExecStopPost: in a .socket unit"),
    ("goss.socket", "[Socket]\nListenStream=/run/goss/sock\nUser=root\n", ":3: User: "),
    ("goss.socket", "[Socket]\nListenStream=8080\n", ":2: ListenStream: '8080': systemd"),
    ("goss.socket", "[Socket]\nListenStream=/run/other.sock\n", ":2: ListenStream: "),
    ("goss.socket", "[Socket]\nListenStream=/run/goss/../x\n", ":2: ListenStream: "),
    ("goss.socket", "[Socket]\nListenStream=/run/goss-%I\n", ":2: ListenStream: "),
    ("goss.socket", "[Socket]\nListenStream=@goss\n", ":2: ListenStream: "),
    ("goss.socket", "[Socket]\nListenStream=/run/goss/s\nService=sshd.service\n", ":3: Serv"),
    ("goss.socket", "[Socket]\nListenStream=/run/goss/s\nSymlinks=/etc/x\n", ":3: Symlinks"),
    ("goss.socket", "[Socket]\nListenStream=/run/goss/s\nSocketUser=root\n", ":3: SocketUser"),
    ("goss.socket", "[Service]\nExecStart=/bin/sh\n", ":1: [Service]: not a section"),
    ("goss.socket", "[Socket]\nListenStream=/run/goss/sock\nService=goss.service\n", ""),
    # Keys that make systemd (root) create, chmod, chown or remove host paths: nothing it
    # makes may be writable by others, no path through a directory others can change.
    ("goss.socket", SOCK + "ListenStream=/run/goss/sub/x.service.d/sock\n", ":2: ListenStream: "),
    ("goss.socket", SOCK + "ListenDatagram=/run/goss/sub/sock\n", ":2: ListenDatagram: "),
    ("goss.socket", SOCK + "ListenSequentialPacket=/run/goss/a/b\n", ":2: ListenSequentialP"),
    ("goss.socket", SOCK + "ListenStream=/run/goss.sock\n", ":2: ListenStream: "),
    ("goss.socket", SOCK + "ListenStream=/run/goss-x/sock\n", ":2: ListenStream: "),
    ("goss.socket", SOCK + "ListenStream=/run/goss\n", ":2: ListenStream: "),
    ("goss.socket", SOCK + "ListenStream=/run/goss/\n", ":2: ListenStream: "),
    ("goss.socket", SOCK + "ListenStream=/run/goss//sock\n", ":2: ListenStream: "),
    ("goss.socket", SOCK + "ListenStream=/run/goss/..\n", ":2: ListenStream: "),
    ("goss.socket", SOCK + "ListenStream=/run/goss/.sock\n", ":2: ListenStream: "),
    ("goss.socket", SOCK + "ListenStream=/run/goss/%n\n", ":2: ListenStream: "),
    ("goss.socket", SOCK + "ListenStream=/run/goss/a\\x2fb\n", ":2: ListenStream: "),
    ("goss.socket", SOCK + "ListenStream=/var/run/goss/sock\n", ":2: ListenStream: "),
    ("goss.socket", SOCK + "ListenStream=/run/goss/" + "s" * 100 + "\n", ":2: ListenStream: "),
    ("goss.socket", SOCKS + "DirectoryMode=0777\n", ":3: DirectoryMode: =0777"),
    ("goss.socket", SOCKS + "DirectoryMode=0775\n", ":3: DirectoryMode: "),
    ("goss.socket", SOCKS + "DirectoryMode=0757\n", ":3: DirectoryMode: "),
    ("goss.socket", SOCKS + "DirectoryMode=1755\n", ":3: DirectoryMode: "),
    ("goss.socket", SOCKS + "DirectoryMode=2755\n", ":3: DirectoryMode: "),
    ("goss.socket", SOCKS + "DirectoryMode=0o755\n", ":3: DirectoryMode: "),
    ("goss.socket", SOCKS + "DirectoryMode=17777\n", ":3: DirectoryMode: "),
    ("goss.socket", SOCKS + "SocketMode=0777\n", ":3: SocketMode: =0777"),
    ("goss.socket", SOCKS + "SocketMode=0766\n", ":3: SocketMode: "),
    ("goss.socket", SOCKS + "SocketMode=4666\n", ":3: SocketMode: "),
    ("goss.socket", SOCKS + "RemoveOnStop=yes\n", ":3: RemoveOnStop: =yes"),
    ("goss.socket", SOCKS + "RemoveOnStop=on\n", ":3: RemoveOnStop: "),
    ("goss.socket", SOCKS + "SocketGroup=disk\n", ":3: SocketGroup"),
    ("goss.socket", SOCKS + "DirectoryMode=0755\nSocketMode=0666\n"
     "RemoveOnStop=no\nFileDescriptorName=goss\n", ""),
    ("goss.socket", SOCK + "ListenStream=/run/goss/goss.sock\nDirectoryMode=0700\n"
     "SocketMode=0600\n", ""),
    ("goss.socket", SOCKS + "DirectoryMode=750\nSocketMode=0660\n", ""),
    ("goss.socket", SOCKS + "DirectoryMode=\nSocketMode=\n", ""),
    ("goss.service", service("StateDirectory=goss/sub\n"), ":5: StateDirectory: goss/sub"),
    ("goss.service", service("RuntimeDirectory=goss/../x\n"), ":5: RuntimeDirectory: "),
    ("goss.service", service("RuntimeDirectory=goss-%n\n"), ":5: RuntimeDirectory: "),
    ("goss.service", service("CacheDirectory=\"goss\"\n"), ":5: CacheDirectory: "),
    ("goss.service", service("LogsDirectory=goss\\x2fx\n"), ":5: LogsDirectory: "),
    ("goss.service", service("RuntimeDirectory=goss:x\n"), ":5: RuntimeDirectory: "),
    ("goss.service", service("StateDirectoryMode=0777\n"), ":5: StateDirectoryMode: =0777"),
    ("goss.service", service("RuntimeDirectoryMode=0775\n"), ":5: RuntimeDirectoryMode: "),
    ("goss.service", service("CacheDirectoryMode=1777\n"), ":5: CacheDirectoryMode: "),
    ("goss.service", service("LogsDirectoryMode=0757\n"), ":5: LogsDirectoryMode: "),
    ("goss.service", service("RuntimeDirectoryMode=4755\n"), ":5: RuntimeDirectoryMode: "),
    ("goss.service", service("RuntimeDirectoryPreserve=yes\n"), ":5: RuntimeDirectoryPreserve"),
    ("goss.service", service("RuntimeDirectoryPreserve=restart\n"), ":5: RuntimeDirectoryPres"),
    ("goss.service", service("ConfigurationDirectory=goss\n"), ":5: ConfigurationDirectory: "),
    ("goss.service", service("ConfigurationDirectoryMode=0755\n"), ":5: ConfigurationDirectoryM"),
    ("goss.service", service("RuntimeDirectory=goss goss-x\nRuntimeDirectoryMode=0750\n"
     "StateDirectoryMode=0700\nCacheDirectoryMode=0755\nLogsDirectoryMode=\n"
     "RuntimeDirectoryPreserve=no\n"), ""),
    # A unit starts, stops or holds up only the package's own units.
    ("goss.service", service("Before=sshd.service\n", "[Unit]\n"), ":2: Before: sshd.service"),
    ("goss.service", service("OnFailure=some-host.service\n", "[Unit]\n"), ":2: OnFailure: "),
    ("goss.service", service("Requires=sshd.service\n", "[Unit]\n"), ":2: Requires: "),
    ("goss.service", service("BindsTo=sshd.service\n", "[Unit]\n"), ":2: BindsTo: "),
    ("goss.service", service("Upholds=sshd.service\n", "[Unit]\n"), ":2: Upholds: "),
    ("goss.service", service("PropagatesStopTo=sshd.service\n", "[Unit]\n"), ":2: Propagates"),
    ("goss.service", service("OnSuccess=reboot.target\n", "[Unit]\n"), ":2: OnSuccess: "),
    ("goss.service", service("Conflicts=goss@../../x.service\n", "[Unit]\n"), ":2: Conflicts"),
    ("goss.service", service("OnFailureJobMode=flush\n", "[Unit]\n"), ":2: OnFailureJobMode: "),
    ("goss.service", service("OnFailureJobMode=isolate\n", "[Unit]\n"), ":2: OnFailureJob"),
    ("goss-w.service", service("OnFailure=goss.service\nOnFailureJobMode=replace\n"
     "Before=goss.service multi-user.target\nConflicts=goss.service\n", "[Unit]\n"), ""),
    # ... After=, PartOf=, StopPropagatedFrom= act on this unit only.
    ("goss.service", service("After=sshd.service\nPartOf=sshd.service\n"
     "StopPropagatedFrom=sshd.service\nReloadPropagatedFrom=sshd.service\n", "[Unit]\n"), ""),
    # [Install] makes links in /etc/systemd/system: plain unit names only.
    ("goss.service", service("[Install]\nWantedBy=../../x.target\n"), ":6: WantedBy: "),
    ("goss.service", service("[Install]\nWantedBy=%i.target\n"), ":6: WantedBy: "),
    ("goss.service", service("[Install]\nAlias=goss-a.service.wants/goss.service\n"),
     ":6: Alias: "),
    ("goss.service", service("[Install]\nDefaultInstance=../x\n"), ":6: DefaultInstance: "),
    ("goss.service", service("[Install]\nWantedBy=multi-user.target sshd.service\n"
     "DefaultInstance=a1\n"), ""),
    ("goss.timer", "[Timer]\nOnCalendar=daily\nPersistent=yes\nUnit=goss.service\n", ""),
    ("goss.timer", "[Timer]\nOnCalendar=daily\nUnit=sshd.service\n", ":3: Unit: sshd.service"),
    ("goss.timer", "[Timer]\nOnCalendar=daily\nWakeSystem=yes\n", ":3: WakeSystem: could"),
    ("goss.timer", "[Timer]\nOnCalendar=daily\nUnit=goss.service\n", ""),
    ("goss.target", "[Unit]\nAllowIsolate=yes\n", ":2: AllowIsolate: could reboot"),
    ("goss.target", "[Unit]\nExecStartPre=/bin/sh\n", ":2: ExecStartPre: in a .target unit"),
]  # fmt: skip


@pytest.mark.parametrize(("unit", "text", "expected"), ROWS)
def test_unit_rules(tmp_path: Path, unit: str, text: str, expected: str) -> None:
    files = {f"{UNITS}/{unit}": text, f"{UNITS}/goss.service": service("")}
    files[f"{UNITS}/{unit}"] = text  # the row's own unit wins over the companion
    found = problems(package(tmp_path, files))
    if not expected:
        assert found == []
        return
    assert len(found) == 1, found
    assert found[0].startswith(f"{UNITS}/{unit}{expected}"), found


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"etc/systemd/system.control/goss.service": service("")},
         "etc/systemd/system.control/goss.service:1: path: etc/systemd/system.control is a "
         "unit search path systemd reads before the others"),
        ({"usr/local/lib/systemd/system/goss.service": service("")},
         "usr/local/lib/systemd/system/goss.service:1: path: "),
        ({"run/systemd/system/goss.service": service("")}, "run/systemd/system/goss.service:1"),
        ({"etc/systemd/system.attached/goss.service": service("")}, "etc/systemd/system.att"),
        ({f"{UNITS}/goss.service.d/x.conf": "[Service]\nUser=root\n"},
         f"{UNITS}/goss.service.d: path: a drop-in directory"),
        ({f"{UNITS}/multi-user.target.wants/goss.service": ""}, "a dependency directory"),
        ({f"{UNITS}/goss.path": "[Path]\nPathExists=/x\n"}, "goss.path: path: a .path unit"),
        ({f"{UNITS}/goss-m.path": "[Path]\nMakeDirectory=yes\nDirectoryMode=0777\n"},
         "goss-m.path: path: a .path unit"),
        ({f"{UNITS}/goss.mount": "[Mount]\nWhat=/\n"}, "a .mount unit"),
        ({f"{UNITS}/other.service": service("")}, "other.service: name: other.service does"),
        ({"etc/systemd/system/goss.service": service("")},
         f"{UNITS}/goss.service: path: goss.service is also in etc/systemd/system/"),
        ({f"{UNITS}/goss-big.service": service("Environment=A=" + "x" * 70000 + "\n")},
         "goss-big.service: path: larger than 64 KiB"),
        ({f"{UNITS}/goss-bad.service": b"[Service]\nExecStart=/x\xff\n"},
         "goss-bad.service:2: text: not valid UTF-8"),
    ],
)  # fmt: skip
def test_where_units_live(tmp_path: Path, files: dict[str, str | bytes], expected: str) -> None:
    found = problems(package(tmp_path, {f"{UNITS}/goss.service": service(""), **files}))
    assert len(found) == 1, found
    assert expected in found[0], found


def test_links_on_unit_paths(tmp_path: Path) -> None:
    tree = package(tmp_path / "tree", {f"{UNITS}/goss.service": service("")})
    (tmp_path / "hidden").mkdir()
    (tmp_path / "hidden/goss.service").write_text(service("User=root\n"))
    (tree / "etc/systemd").mkdir(parents=True)
    os.symlink("../../../hidden", tree / "etc/systemd/system.control")
    os.symlink("/etc/shadow", tree / UNITS / "goss-x.service")
    found = problems(tree)
    assert found == [
        "etc/systemd/system.control: path: a link on systemd's unit search path "
        "etc/systemd/system.control: systemd would read units where it points (make "
        "etc/systemd/system.control a directory; units go in usr/lib/systemd/system)",
        f"{UNITS}/goss-x.service: path: a link (an alias or a mask): layershell attaches "
        "plain unit files only (ship the unit itself; Alias= in [Install] names an alias)",
    ]


def test_only_the_packages_own_files_are_read(tmp_path: Path) -> None:
    """A hard link to one of root's files is owned by root, not by the layer account."""
    tree = package(tmp_path / "goss_1.0", {f"{UNITS}/goss.service": service(""), "etc/x": "x"})
    for path in [tree, *tree.rglob("*")]:
        os.lchown(path, 12345, 12345)
    os.chown(tree / UNITS / "goss.service", 0, 0)
    os.chown(tree / "etc/x", 0, 0)
    assert problems(tree) == [
        f"{UNITS}/goss.service: path: owned by uid 0, not by the package's owner (a hard "
        "link?) (a unit must be a plain file)"
    ]
    image.build(str(tree), str(tmp_path / "image"), {}, None)
    assert not (tmp_path / "image/etc/x").exists()


def test_merged_usr_link_is_fine(tmp_path: Path) -> None:
    tree = package(tmp_path, {f"{UNITS}/goss.service": service("")})
    os.symlink("usr/lib", tmp_path / "lib")
    assert problems(tree) == []
    os.unlink(tmp_path / "lib")
    os.symlink("usr/share", tmp_path / "lib")
    assert problems(tree)[0].startswith("lib: path: a link on systemd's unit search path")


def row(tree: Path, name: str = "goss", version: str = "1.0") -> Installed:
    return Installed(name, version, "arne", str(tree), "0" * 64, "x", 0, 0, 0, 0.0, True, {})


def test_portable_image_refuses_with_every_problem(tmp_path: Path) -> None:
    tree = package(
        tmp_path / "goss_1.0",
        {"usr/lib/os-release": "ID=x\n", f"{UNITS}/goss.service": service("User=root\n"),
         "etc/systemd/system.control/goss.service": service("")},
    )  # fmt: skip
    with pytest.raises(portable.PortableError) as info:
        portable.portable_image(row(tree))
    message = info.value.message
    assert message.startswith("goss 1.0: not attached, its units leave what layershell")
    assert f"  {UNITS}/goss.service:5: User: " in message
    assert "  etc/systemd/system.control/goss.service:1: path: " in message


def test_a_package_tree_that_is_a_link_is_not_read(tmp_path: Path) -> None:
    real = package(tmp_path / "real", {f"{UNITS}/goss.service": service("")})
    os.symlink(real, tmp_path / "goss_1.0")
    with pytest.raises(image.ImageError, match="not a directory"):
        portable.portable_image(row(tmp_path / "goss_1.0"))


def test_the_image_is_built_not_copied(tmp_path: Path) -> None:
    """Only plain files, directories and links; no setuid, no unit search path of the
    package; exactly the checked units, from the bytes checked."""
    tree = package(
        tmp_path / "goss_1.0",
        {"usr/lib/os-release": "ID=goss\n", "usr/bin/goss": "#!/bin/sh\n",
         f"{UNITS}/goss.service": service(""), "run/systemd/system/goss.service": "x",
         "usr/local/lib/systemd/system/goss-y.service": "x", "etc/goss.conf": "a=1\n"},
    )  # fmt: skip
    os.chmod(tree / "usr/bin/goss", 0o6777)
    os.mkfifo(tree / "fifo")
    os.symlink("usr/lib", tree / "lib")
    os.symlink("goss.conf", tree / "etc/goss-link.conf")
    checked = {"goss.service": service("").encode()}
    target = tmp_path / "image"
    assert image.build(str(tree), str(target), checked, None) == checked
    assert stat.S_IMODE((target / "usr/bin/goss").stat().st_mode) == 0o755
    assert not (target / "fifo").exists()
    assert os.readlink(target / "lib") == "usr/lib"
    assert os.readlink(target / "etc/goss-link.conf") == "goss.conf"
    assert sorted(os.listdir(target / UNITS)) == ["goss.service"]
    assert not (target / "usr/local/lib/systemd/system").exists()
    assert os.listdir(target / "run") == []
    assert image.image_units(str(target)) == checked


def test_a_deep_tree_is_refused_not_a_recursion_error(tmp_path: Path) -> None:
    tree = package(tmp_path / "goss_1.0", {f"{UNITS}/goss.service": service("")})
    fd = os.open(tree, os.O_RDONLY)
    for _ in range(image.MAX_DEPTH + 5):
        os.mkdir("d", dir_fd=fd)
        fd2 = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = fd2
    os.close(fd)
    with pytest.raises(image.ImageError, match="deeper than 256 directories"):
        image.build(str(tree), str(tmp_path / "image"), {}, None)


def test_a_generated_image_copies_the_tree(tmp_path: Path) -> None:
    tree = package(
        tmp_path / "webcode_1.0",
        {"bin/webcode": "#!/bin/sh\n", f"{UNITS}/webcode.service": service("")},
    )
    target = tmp_path / "image"
    portable.generate_image(row(tree, "webcode"), str(target), "/opt/pkgs")
    unit = (target / UNITS / "webcode.service").read_text()
    assert unit.startswith(service(""))
    assert "BindReadOnlyPaths=/usr /etc/passwd" in unit
    assert str(tree) not in unit  # never a bind of the layer's store
    assert (target / "opt/pkgs/webcode_1.0/bin/webcode").read_text() == "#!/bin/sh\n"
    assert os.readlink(target / "opt/pkgs/webcode") == "webcode_1.0"
    assert not (target / "opt/pkgs/webcode_1.0/usr/lib/systemd/system").exists()
    assert (target / "usr/lib/os-release").read_text().startswith("ID=layershell-webcode")


def test_what_is_attached_must_be_what_was_checked(tmp_path: Path) -> None:
    attached, target = tmp_path / "attached", tmp_path / "image"
    (target / UNITS).mkdir(parents=True)
    (target / UNITS / "goss.service").write_text("checked")
    attached.mkdir()
    before = image.attached_names(str(attached))
    texts = {"goss.service": b"checked", "goss.socket": b"sock"}
    os.symlink(target / UNITS / "goss.service", attached / "goss.service")
    (attached / "goss.service.d").mkdir()
    (attached / "goss.socket").write_text("hidden")
    (attached / "goss-hidden.service").write_text("x")
    assert image.verify_attached(str(attached), str(target), texts, before) == [
        "goss-hidden.service: attached, but not a unit layershell checked",
        "goss.service: attached without its profile's drop-in",
        "goss.socket: the attached file is not the unit layershell checked",
    ]
    (attached / "goss.service.d/10-profile.conf").write_text("")
    (attached / "goss.socket").write_text("sock")
    os.unlink(attached / "goss-hidden.service")
    assert image.verify_attached(str(attached), str(target), texts, before) == []


# --- core check PACKAGE ----------------------------------------------------------------


def core(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "layershell", "--rootless", *args],
        capture_output=True, text=True, check=False, env=env, timeout=60,
    )  # fmt: skip


HOSTILE = {
    f"{UNITS}/evil.service": service("User=root\nBindPaths=/:/host\nDynamicUser=no\n"
                                     "PrivateUsers=no\n"),
    f"{UNITS}/evil.socket": "[Socket]\nListenStream=/run/evil/s\nExecStartPre=/bin/sh\n",
    "etc/systemd/system.control/evil.service": service(""),
}  # fmt: skip


def test_core_check_refuses_a_hostile_package_directory(tmp_path: Path) -> None:
    tree = package(tmp_path / "evil_1.0", HOSTILE)
    r = core("check", str(tree), home=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.splitlines()
    unit = f"{tree}/{UNITS}/evil.service"
    for want in (f"{unit}:5: User: ", f"{unit}:6: BindPaths: ", f"{unit}:7: DynamicUser: =no",
                 f"{unit}:8: PrivateUsers: =no", f"{tree}/{UNITS}/evil.socket:3: ExecStartPre: ",
                 f"{tree}/etc/systemd/system.control/evil.service:1: path: "):  # fmt: skip
        assert any(line.startswith(want) for line in lines), (want, lines)
    assert len(lines) == 6, lines
    assert "Traceback" not in r.stderr


def test_core_check_reads_a_tarball(tmp_path: Path) -> None:
    tree = package(tmp_path / "src", HOSTILE)
    archive = tmp_path / "evil_1.0.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tree, arcname=".")
    r = core("check", str(archive), home=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"{archive}/{UNITS}/evil.service:5: User: would choose" in r.stderr
    assert f"{archive}/etc/systemd/system.control/evil.service:1: path: " in r.stderr


def test_core_check_accepts_a_good_package(tmp_path: Path) -> None:
    tree = package(
        tmp_path / "goss_2.1",
        {
            f"{UNITS}/goss.service": service(
                "DynamicUser=yes\n[Install]\nWantedBy=default.target\n"
            ),
            f"{UNITS}/goss.socket": "[Socket]\nListenStream=/run/goss/sock\n",
        },
    )
    r = core("check", str(tree), home=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ok (package goss: goss.service, goss.socket)" in r.stdout


def test_host_names_claimed_by_a_host_service_are_refused(tmp_path: Path) -> None:
    """A package named after a host service takes its directories: /var/lib/NAME-x is
    accepted for StateDirectory= too (polkit -> /var/lib/polkit-1), and a host unit owns
    its name's /run/NAME while the directory does not exist yet (after a boot)."""
    from layershell import paths as paths_mod

    host = tmp_path / "host"
    (host / "var/lib/polkit-1").mkdir(parents=True)
    (host / "usr/lib/systemd/system").mkdir(parents=True)
    (host / "usr/lib/systemd/system/sshd.service").write_text("[Service]\n")
    paths = paths_mod.Paths.system(str(tmp_path / "root"))
    os.makedirs(paths.state_dir)
    assert portable.host_claims(paths, "polkit", str(host)) == ["/var/lib/polkit-1"]
    assert portable.host_claims(paths, "sshd", str(host)) == [
        "/usr/lib/systemd/system/sshd.service"
    ]
    assert portable.host_claims(paths, "goss", str(host)) == []
