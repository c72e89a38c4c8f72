"""`core ignition`: the rendered config, checked by the real ignition-validate, and once
provisioned for real by Ignition's fetch and files stages into a scratch root."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import stat
import subprocess
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from click.testing import CliRunner, Result

from layershell.cli import ignition_cmd
from layershell.cli.app import make_app
from layershell.cli.core import Group
from layershell.host import ignition
from layershell.layers import config, stack
from layershell.packages import manifest
from tests import ignition_tools
from tests.packages import ARCH, Repository
from tests.servers import Servers
from tests.servers import base_url as servers_base_url

SHELL = "/usr/local/bin/layer-shell"
ARNE_HOME = "/var/lib/layershell/layers/arne/home"


@click.group(cls=Group)
@click.option("--root", metavar="DIR")
@click.pass_context
def cli(ctx: click.Context, root: str | None) -> None:
    """`core` with only the command under test (core.py registers it for real)."""
    ctx.obj = make_app(root, None)


cli.add_command(ignition_cmd.ignition)


@pytest.fixture
def units(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """units/ as shipped; a unit not written yet is an empty placeholder in a copy."""
    real = Path(ignition.default_units_dir())
    copy = tmp_path / "units"
    copy.mkdir()
    for name in ignition.UNITS:
        source = real / name
        (copy / name).write_text(source.read_text() if source.is_file() else "")
    monkeypatch.setattr(ignition, "default_units_dir", lambda: str(copy))
    return copy


@pytest.fixture
def repository(tmp_path: Path) -> Repository:
    r = Repository(tmp_path / "repo")
    r.add("goss", "v0.0.1")
    r.add("goss", "v0.0.2")
    r.add("hello", "1.0")
    r.add("cowsay", "0.3")
    r.streams("goss:\n  v0.0.2: [testing]\n")
    r.index()
    return r


def base_url(kind: str, r: Repository, servers: Servers) -> str:
    return servers_base_url(kind, r.root, servers)


def write_manifest(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "composable.yaml"
    path.write_text(text)
    return path


def one_package(url: str, version: str = "v0.0.1", extra: str = "") -> str:
    return (
        f"composable:\n  default_repository: {url}\n  packages:\n"
        f"    - name: goss\n      version: {version}\n{extra}"
    )


def run(tmp_path: Path, *args: str) -> Result:
    root = tmp_path / "host"  # relocated: its etc/layershell/layers.yaml, if any, is used
    root.mkdir(exist_ok=True)
    if "--keys-dir" not in args:  # the admin's copy of the key the repositories are signed by
        args = (*args, "--keys-dir", str(admin_keys(tmp_path)))
    return CliRunner().invoke(cli, ["--root", str(root), "ignition", *args])


def admin_keys(tmp_path: Path) -> Path:
    from tests import signing

    keys = tmp_path / "admin-keys"
    signing.key().trust(keys)
    return keys


def render(tmp_path: Path, manifest_path: Path, *args: str, name: str = "config.ign") -> Path:
    out = tmp_path / name
    r = run(tmp_path, str(manifest_path), "--output", str(out), *args)
    assert r.exit_code == 0, r.output + r.stderr
    return out


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def decode(source: str) -> bytes:
    if source.startswith("data:;base64,"):
        return base64.b64decode(source.split(",", 1)[1])
    assert source.startswith("data:,"), source
    return urllib.parse.unquote_to_bytes(source.split(",", 1)[1])


def by_path(entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["path"]: e for e in entries}


def units_by_name(cfg: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {u["name"]: u for u in cfg["systemd"]["units"]}


@pytest.mark.parametrize("kind", ["file", "http", "ftp"])
def test_every_protocol_renders_a_valid_config(
    tmp_path: Path, units: Path, repository: Repository, servers: Servers, kind: str
) -> None:
    tools = ignition_tools.require()
    url = base_url(kind, repository, servers)
    source = write_manifest(tmp_path, one_package(url))
    out = render(tmp_path, source)
    ignition_tools.validate(tools, out)
    cfg = json.loads(out.read_text())
    assert cfg["ignition"] == {"version": "3.3.0"}
    files = by_path(cfg["storage"]["files"])
    tarball = (repository.arch_dir / "goss_v0.0.1.tar.gz").read_bytes()

    entry = files["/opt/inbox/default/arne/goss_v0.0.1.tar.gz"]
    assert entry["mode"] == 0o644
    assert "user" not in entry and "group" not in entry  # root's: core inbox checks it
    assert entry["contents"]["verification"] == {"hash": f"sha256-{sha256(tarball)}"}
    if kind == "http":  # Ignition fetches it
        assert entry["contents"]["source"] == f"{url}/{ARCH}/goss_v0.0.1.tar.gz"
    else:  # Ignition cannot fetch file:// or ftp://: embedded
        assert decode(entry["contents"]["source"]) == tarball

    composable = files["/etc/layershell/composable.yaml"]
    assert decode(composable["contents"]["source"]) == source.read_bytes()
    assert composable["mode"] == 0o644 and "user" not in composable

    assert cfg["passwd"]["users"] == [
        {"name": "arne", "homeDir": ARNE_HOME, "shell": SHELL},
        {"name": "otto", "homeDir": "/home/otto", "shell": SHELL},
    ]
    dirs = by_path(cfg["storage"]["directories"])
    assert dirs["/opt/inbox/default/arne"] == {
        "path": "/opt/inbox/default/arne", "mode": 0o750, "group": {"name": "arne"},
    }  # fmt: skip
    assert dirs["/opt/pkgs"] == {
        "path": "/opt/pkgs", "mode": 0o755, "user": {"name": "arne"}, "group": {"name": "arne"},
    }  # fmt: skip
    for root_owned in ("/var/lib/layershell", "/etc/layershell", "/opt/inbox"):
        assert dirs[root_owned] == {"path": root_owned, "mode": 0o755}

    found = units_by_name(cfg)
    assert sorted(found) == sorted(ignition.UNITS)
    assert found["layershell-firstboot.service"]["enabled"] is True
    assert found["layershell-inbox.path"]["enabled"] is True
    assert "enabled" not in found["layershell-inbox.service"]
    for name, unit in found.items():
        assert unit["contents"] == (units / name).read_text()
    dropins = found["layershell-firstboot.service"].get("dropins", [])
    if kind == "file":
        assert dropins == []
    else:  # a remote repository: first boot waits for the network
        assert dropins == [
            {
                "name": "10-layershell-network.conf",
                "contents": "[Unit]\nWants=network-online.target\nAfter=network-online.target\n",
            }
        ]


@pytest.mark.parametrize(
    ("version", "stream", "expect"),
    [
        ("latest", "stable", "v0.0.1"),
        ("latest", "testing", "v0.0.2"),
        ("v0.0.2", "stable", "v0.0.2"),
    ],
)
def test_versions_are_resolved_at_render_time(
    tmp_path: Path,
    units: Path,
    repository: Repository,
    servers: Servers,
    version: str,
    stream: str,
    expect: str,
) -> None:
    http = servers.http(repository.root)
    text = one_package(http.url, version, f"      track_stream: {stream}\n")
    cfg = json.loads(render(tmp_path, write_manifest(tmp_path, text)).read_text())
    inbox = [f for f in cfg["storage"]["files"] if f["path"].startswith("/opt/inbox/")]
    assert [f["path"] for f in inbox] == [f"/opt/inbox/default/arne/goss_{expect}.tar.gz"]
    assert inbox[0]["contents"]["source"] == f"{http.url}/{ARCH}/goss_{expect}.tar.gz"
    tarball = (repository.arch_dir / f"goss_{expect}.tar.gz").read_bytes()
    assert inbox[0]["contents"]["verification"]["hash"] == f"sha256-{sha256(tarball)}"


def test_an_invalid_manifest_is_refused_before_rendering(
    tmp_path: Path, units: Path, repository: Repository, servers: Servers
) -> None:
    http = servers.http(repository.root)
    bad = write_manifest(
        tmp_path,
        f"composable:\n  default_repository: {http.url}\n  packages:\n"
        "    - name: goss\n      version: v0.0.1\n      profile: sparkly\n",
    )
    out = tmp_path / "config.ign"
    r = run(tmp_path, str(bad), "--output", str(out))
    assert r.exit_code == 2
    assert f"{bad}:6:16: composable.packages.0.profile: unknown profile 'sparkly'" in r.stderr
    assert not out.exists()
    assert http.requests == []  # nothing was resolved or fetched

    out.write_text("previous\n")
    assert run(tmp_path, str(bad), "--output", str(out)).exit_code == 2
    assert out.read_text() == "previous\n"


def test_a_missing_manifest_is_a_problem_too(tmp_path: Path, units: Path) -> None:
    r = run(tmp_path, str(tmp_path / "nope.yaml"))
    assert r.exit_code == 2
    assert f"{tmp_path / 'nope.yaml'}: file not found" in r.stderr


@pytest.mark.parametrize("kind", ["file", "ftp"])
def test_embedding_has_a_size_limit(
    tmp_path: Path, units: Path, repository: Repository, servers: Servers, kind: str
) -> None:
    ftp = servers.ftp(repository.root) if kind == "ftp" else None
    url = ftp.url if ftp else repository.file_url
    size = (repository.arch_dir / "goss_v0.0.1.tar.gz").stat().st_size
    out = tmp_path / "config.ign"
    source = write_manifest(tmp_path, one_package(url))
    r = run(tmp_path, str(source), "--max-embed", str(size - 1), "--output", str(out))
    assert r.exit_code == 1
    assert (
        f"goss v0.0.1: {url}/{ARCH}/goss_v0.0.1.tar.gz is {size} bytes, over the limit of"
        f" {size - 1} bytes for a package embedded in the config"
    ) in r.stderr
    assert "serve the repository over http(s)" in r.stderr
    assert "--max-embed BYTES" in r.stderr
    assert not out.exists()
    if ftp is not None:
        # Refused on the size the index gives, before downloading the tarball.
        assert [a for c, a in ftp.commands if c == "RETR" and "goss_" in a] == []

    cfg = json.loads(render(tmp_path, source, "--max-embed", str(size)).read_text())
    assert "/opt/inbox/default/arne/goss_v0.0.1.tar.gz" in by_path(cfg["storage"]["files"])


def test_the_limit_is_only_for_embedding(
    tmp_path: Path, units: Path, repository: Repository, servers: Servers
) -> None:
    http = servers.http(repository.root)
    source = write_manifest(tmp_path, one_package(http.url))
    cfg = json.loads(render(tmp_path, source, "--max-embed", "0").read_text())
    entry = by_path(cfg["storage"]["files"])["/opt/inbox/default/arne/goss_v0.0.1.tar.gz"]
    assert entry["contents"]["source"].startswith("http://")
    assert http.count(f"/{ARCH}/goss_v0.0.1.tar.gz") == 0  # Ignition fetches it, not us


def test_butane_carries_the_same_data(
    tmp_path: Path, units: Path, repository: Repository, servers: Servers
) -> None:
    ftp = servers.ftp(repository.root)
    source = write_manifest(tmp_path, one_package(ftp.url))
    ign = json.loads(render(tmp_path, source).read_text())
    out = render(tmp_path, source, "--format", "butane", name="config.bu")
    text = out.read_text()
    but = yaml.safe_load(text)
    assert list(but)[:2] == ["variant", "version"]
    assert (but["variant"], but["version"]) == ("fcos", "1.4.0")
    assert "ignition" not in but
    assert "mode: 0644" in text  # octal, as Butane's documentation writes modes
    assert but["passwd"]["users"][0] == {"name": "arne", "home_dir": ARNE_HOME, "shell": SHELL}
    files = by_path(but["storage"]["files"])
    for path, entry in by_path(ign["storage"]["files"]).items():
        assert files[path] == entry  # same source (data: URLs), hash, mode, owner
        assert "inline" not in files[path]["contents"]
    assert by_path(but["storage"]["directories"]) == by_path(ign["storage"]["directories"])
    assert but["systemd"] == ign["systemd"]


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["--spec", "3.4.0"], {"ignition": {"version": "3.4.0"}}),
        (["--spec", "3.4.0", "--format", "butane"], {"variant": "fcos", "version": "1.5.0"}),
        (["--spec", "3.2.0", "--format", "butane"], {"variant": "fcos", "version": "1.3.0"}),
    ],
)
def test_spec_versions(
    tmp_path: Path, units: Path, repository: Repository, args: list[str], expect: dict[str, Any]
) -> None:
    source = write_manifest(tmp_path, one_package(repository.file_url))
    data = yaml.safe_load(render(tmp_path, source, *args).read_text())  # JSON is YAML too
    assert {k: data[k] for k in expect} == expect


def test_experimental_spec_passes_the_real_validator(
    tmp_path: Path, units: Path, repository: Repository
) -> None:
    tools = ignition_tools.require()
    source = write_manifest(tmp_path, one_package(repository.file_url))
    out = render(tmp_path, source, "--spec", "3.4.0-experimental")
    assert json.loads(out.read_text())["ignition"]["version"] == "3.4.0-experimental"
    ignition_tools.validate(tools, out)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--spec", "3.0.0"], "--spec '3.0.0': layershell writes Ignition spec 3.1.0 or newer"),
        (["--spec", "4"], "--spec '4': layershell writes Ignition spec 3.1.0 or newer"),
        (
            ["--spec", "3.9.0", "--format", "butane"],
            "--spec 3.9.0: no Butane fcos version is known to produce it",
        ),
    ],
)
def test_bad_spec_versions(
    tmp_path: Path, units: Path, repository: Repository, args: list[str], message: str
) -> None:
    out = tmp_path / "config.ign"
    source = write_manifest(tmp_path, one_package(repository.file_url))
    r = run(tmp_path, str(source), "--output", str(out), *args)
    assert r.exit_code == 2
    assert f"core: error: {message}" in r.stderr
    assert not out.exists()


def test_output_is_deterministic_and_sorted(
    tmp_path: Path, units: Path, repository: Repository, servers: Servers
) -> None:
    http = servers.http(repository.root)
    text = (
        f"composable:\n  default_repository: {repository.file_url}\n  packages:\n"
        "    - name: hello\n      version: '1.0'\n      profile: strict\n"
        f"    - name: goss\n      version: latest\n      repository: {http.url}\n"
        "    - name: cowsay\n      version: '0.3'\n"
    )
    source = write_manifest(tmp_path, text)
    first = run(tmp_path, str(source))
    second = run(tmp_path, str(source))
    assert first.exit_code == 0, first.stderr
    assert first.stdout == second.stdout
    cfg = json.loads(first.stdout)
    assert first.stdout == json.dumps(cfg, indent=2, sort_keys=True) + "\n"
    paths = [f["path"] for f in cfg["storage"]["files"]]
    assert paths == sorted(paths)
    assert "/opt/inbox/strict/arne/hello_1.0.tar.gz" in paths
    dirs = by_path(cfg["storage"]["directories"])
    assert dirs["/opt/inbox/strict"] == {"path": "/opt/inbox/strict", "mode": 0o755}
    assert dirs["/opt/inbox/strict/arne"]["mode"] == 0o750


def test_stdout_and_the_output_file_hold_the_same_text(
    tmp_path: Path, units: Path, repository: Repository
) -> None:
    source = write_manifest(tmp_path, one_package(repository.file_url))
    shown = run(tmp_path, str(source))
    assert shown.exit_code == 0, shown.stderr
    assert render(tmp_path, source).read_text() == shown.stdout


def test_rendering_writes_nothing_but_its_output(
    tmp_path: Path,
    units: Path,
    repository: Repository,
    servers: Servers,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where the fetch cache goes
    ftp = servers.ftp(repository.root)
    source = write_manifest(tmp_path, one_package(ftp.url))
    (tmp_path / "host").mkdir()
    admin_keys(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    out = render(tmp_path, source)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, out.name])
    assert list(scratch.iterdir()) == []  # the temporary cache is gone
    assert not (tmp_path / "host" / "etc").exists()


def test_user_must_be_the_installing_layers_account(
    tmp_path: Path, units: Path, repository: Repository
) -> None:
    source = write_manifest(tmp_path, one_package(repository.file_url, extra="      user: otto\n"))
    r = run(tmp_path, str(source))
    assert r.exit_code == 2
    assert (
        f"{source}:4: package goss is for user otto, but the installing layer arne belongs to arne"
    ) in r.stderr


def test_accounts_come_from_the_hosts_layers_yaml(
    tmp_path: Path, units: Path, repository: Repository
) -> None:
    etc = tmp_path / "host" / "etc" / "layershell"
    etc.mkdir(parents=True)
    (etc / "layers.yaml").write_text(
        "layers:\n"
        "  - {name: core, account: core}\n"
        "  - {name: build, account: builder, parent: core, home: '{state}/homes/builder'}\n"
        "  - {name: run, account: runner, parent: build}\n"
    )
    source = write_manifest(
        tmp_path, one_package(repository.file_url, extra="      user: builder\n")
    )
    cfg = json.loads(render(tmp_path, source).read_text())
    assert cfg["passwd"]["users"] == [
        {"name": "builder", "homeDir": "/var/lib/layershell/homes/builder", "shell": SHELL},
        {"name": "runner", "homeDir": "/home/runner", "shell": SHELL},
    ]
    files = by_path(cfg["storage"]["files"])
    assert "user" not in files["/opt/inbox/default/builder/goss_v0.0.1.tar.gz"]  # root's
    assert by_path(cfg["storage"]["directories"])["/opt/pkgs"]["user"] == {"name": "builder"}


def test_a_missing_unit_file_is_named(tmp_path: Path, units: Path, repository: Repository) -> None:
    (units / "layershell-inbox.path").unlink()
    source = write_manifest(tmp_path, one_package(repository.file_url))
    r = run(tmp_path, str(source))
    assert r.exit_code == 1
    assert f"cannot read the unit {units / 'layershell-inbox.path'}" in r.stderr


def test_an_empty_manifest_still_provisions_the_accounts_and_units(
    tmp_path: Path, units: Path
) -> None:
    tools = ignition_tools.require()
    source = write_manifest(tmp_path, "composable:\n  packages: []\n")
    out = render(tmp_path, source)
    ignition_tools.validate(tools, out)
    cfg = json.loads(out.read_text())
    assert [f["path"] for f in cfg["storage"]["files"]] == ["/etc/layershell/composable.yaml"]
    assert [u["name"] for u in cfg["passwd"]["users"]] == ["arne", "otto"]
    assert "dropins" not in units_by_name(cfg)["layershell-firstboot.service"]


def test_the_library_reports_each_package(
    tmp_path: Path, units: Path, repository: Repository, servers: Servers
) -> None:
    http = servers.http(repository.root)
    text = (
        f"composable:\n  packages:\n"
        f"    - {{name: goss, version: v0.0.1, repository: '{http.url}'}}\n"
        f"    - {{name: hello, version: '1.0', repository: '{repository.file_url}'}}\n"
    )
    loaded, data = ignition.read_manifest(str(write_manifest(tmp_path, text)))
    layers = config.load_stack(stack.shipped_layers_file())
    lines: list[str] = []
    rendered = ignition.render(loaded, data, layers, log=lines.append,
                               keys_dir=str(admin_keys(tmp_path)))  # fmt: skip
    assert [(p.name, p.version, p.embedded) for p in rendered.packages] == [
        ("goss", "v0.0.1", False),
        ("hello", "1.0", True),
    ]
    assert lines[0].startswith("goss v0.0.1: /opt/inbox/default/arne/goss_v0.0.1.tar.gz,")
    assert isinstance(loaded, manifest.Manifest)


# --- the real Ignition, provisioning a scratch root -----------------------------------------


def minimal_sysroot(root: Path, drop: set[str]) -> None:
    """Just what useradd --root and Ignition's user lookups need, from the host's files
    (without the accounts the config creates), plus the SELinux config Debian's Ignition
    reads before it relabels."""
    etc = root / "etc"
    (etc / "skel").mkdir(parents=True)
    for name in ("passwd", "group", "shadow", "gshadow"):
        lines = Path("/etc", name).read_text().splitlines(keepends=True)
        (etc / name).write_text("".join(x for x in lines if x.split(":", 1)[0] not in drop))
    for name in ("shadow", "gshadow"):
        (etc / name).chmod(0o640)
    shutil.copy("/etc/login.defs", etc / "login.defs")
    (etc / "selinux").mkdir()
    (etc / "selinux" / "config").write_text("SELINUX=disabled\nSELINUXTYPE=targeted\n")


def run_ignition(
    tools: ignition_tools.Tools, config_file: Path, root: Path, work: Path, *, check: bool = True
) -> str:
    """fetch-offline, fetch and files, as the initramfs runs them, stopping at the first
    failure (asserted unless check is False); returns their logs."""
    shim = work / "shim"
    shim.mkdir()
    setfiles = shim / "setfiles"  # Debian's build always relabels: make that a no-op
    setfiles.write_text("#!/bin/sh\ncat >/dev/null; exit 0\n")
    setfiles.chmod(0o755)
    run_dir = work / "run"
    run_dir.mkdir()
    env = {
        "PATH": f"{shim}:/usr/sbin:/usr/bin:/sbin:/bin",
        "IGNITION_CONFIG_FILE": str(config_file),
        "LANG": "C.UTF-8",
    }
    logs = []
    for stage in ("fetch-offline", "fetch", "files"):
        if stage == "fetch" and not (run_dir / "neednet").exists():
            continue
        argv = [
            "timeout", "--kill-after=5", "120",  # Ignition retries an unreachable URL forever
            str(tools.ignition), "-platform", "file", "-stage", stage, "-root", str(root),
            "-config-cache", str(run_dir / "ignition.json"),
            "-state-file", str(run_dir / "state"),
            "-neednet", str(run_dir / "neednet"),
            "-log-to-stdout",
        ]  # fmt: skip
        r = subprocess.run(
            argv, env=env, cwd=work, capture_output=True, text=True, timeout=180, check=False
        )
        logs.append(f"--- stage {stage}: exit status {r.returncode}\n{r.stdout}{r.stderr}")
        if r.returncode != 0:
            assert not check, "\n".join(logs)
            break
        assert "Ignition finished successfully" in logs[-1]
    return "\n".join(logs)


def account(root: Path, name: str) -> list[str]:
    for line in (root / "etc" / "passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return fields
    raise AssertionError(f"{name} is not in {root}/etc/passwd")


@pytest.mark.root
@pytest.mark.slow
def test_real_ignition_provisions_a_root(
    tmp_path: Path, units: Path, repository: Repository, servers: Servers
) -> None:
    if os.getuid() != 0:
        pytest.skip("needs root: Ignition's files stage creates accounts and chowns files")
    tools = ignition_tools.require()
    http, ftp = servers.http(repository.root), servers.ftp(repository.root)
    text = (
        "composable:\n  packages:\n"
        f"    - {{name: goss, version: latest, repository: '{http.url}'}}\n"
        f"    - {{name: hello, version: '1.0', repository: '{repository.file_url}',"
        " profile: strict}\n"
        f"    - {{name: cowsay, version: '0.3', repository: '{ftp.url}'}}\n"
    )
    source = write_manifest(tmp_path, text)
    config_file = render(tmp_path, source)
    ignition_tools.validate(tools, config_file)
    root = tmp_path / "sysroot"
    minimal_sysroot(root, {"arne", "otto"})
    log = run_ignition(tools, config_file, root, tmp_path)
    assert http.count(f"/{ARCH}/goss_v0.0.1.tar.gz", status=200) >= 1, log

    arne, otto = account(root, "arne"), account(root, "otto")
    assert arne[5:] == [ARNE_HOME, SHELL]
    assert otto[5:] == ["/home/otto", SHELL]
    uid, gid = int(arne[2]), int(arne[3])
    assert (root / ARNE_HOME.lstrip("/")).is_dir()
    assert (root / "home" / "otto").is_dir()

    for profile, name in (
        ("default", "goss_v0.0.1"),
        ("strict", "hello_1.0"),
        ("default", "cowsay_0.3"),
    ):
        landed = root / "opt" / "inbox" / profile / "arne" / f"{name}.tar.gz"
        expected = (repository.arch_dir / f"{name}.tar.gz").read_bytes()
        assert sha256(landed.read_bytes()) == sha256(expected), name
        st = landed.stat()
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o644, 0, 0)
        st = landed.parent.stat()
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o750, 0, gid)
    st = (root / "opt" / "pkgs").stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o755, uid, gid)
    for path in ("etc/layershell", "var/lib/layershell", "opt/inbox"):
        st = (root / path).stat()
        assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o755, 0), path

    placed = root / "etc" / "layershell" / "composable.yaml"
    assert placed.read_bytes() == source.read_bytes()
    assert stat.S_IMODE(placed.stat().st_mode) == 0o644

    system = root / "etc" / "systemd" / "system"
    for name in ignition.UNITS:
        assert (system / name).read_text() == (units / name).read_text()
    dropin = system / "layershell-firstboot.service.d" / "10-layershell-network.conf"
    assert "After=network-online.target" in dropin.read_text()
    preset = (root / "etc" / "systemd" / "system-preset" / "20-ignition.preset").read_text()
    assert "enable layershell-firstboot.service" in preset.splitlines()
    assert "enable layershell-inbox.path" in preset.splitlines()
    assert "layershell-inbox.service" not in preset


@pytest.mark.root
def test_real_ignition_refuses_a_tarball_changed_after_rendering(
    tmp_path: Path, units: Path, repository: Repository, servers: Servers
) -> None:
    if os.getuid() != 0:
        pytest.skip("needs root: Ignition's files stage creates accounts and chowns files")
    tools = ignition_tools.require()
    http = servers.http(repository.root)
    config_file = render(tmp_path, write_manifest(tmp_path, one_package(http.url)))
    repository.add("goss", "v0.0.1", {"bin/goss": "#!/bin/sh\necho replaced\n"})
    root = tmp_path / "sysroot"
    minimal_sysroot(root, {"arne", "otto"})
    log = run_ignition(tools, config_file, root, tmp_path, check=False)
    assert "--- stage files: exit status 1" in log
    assert "hash verification failed" in log
    assert not (root / "opt" / "inbox" / "default" / "arne" / "goss_v0.0.1.tar.gz").exists()


def test_a_signed_repository_gives_the_host_its_key(
    tmp_path: Path, units: Path, repository: Repository
) -> None:
    """The rendered config carries the key the repository was checked with, where the
    host's keys directory is, and passes ignition-validate."""
    from tests import signing

    tools = ignition_tools.require()
    out = render(tmp_path, write_manifest(tmp_path, one_package(repository.file_url)))
    ignition_tools.validate(tools, out)
    files = by_path(json.loads(out.read_text())["storage"]["files"])
    key = files[f"/etc/layershell/keys/{signing.TEST_KEY_FILE}"]
    assert decode(key["contents"]["source"]) == signing.key().public
    assert key["mode"] == 0o644


def test_a_repository_refused_at_render_renders_nothing(
    tmp_path: Path, units: Path, repository: Repository
) -> None:
    """The admin's machine checks the repository as the host would: one signed by a key
    it does not trust gives no config."""
    from tests import signing

    repository.index(sign=signing.other())
    out = tmp_path / "config.ign"
    r = run(
        tmp_path,
        str(write_manifest(tmp_path, one_package(repository.file_url))),
        "--output",
        str(out),
    )
    assert r.exit_code == 3, r.output
    assert "not trusted here" in r.output + r.stderr and not out.exists()


def test_only_the_keys_a_repository_names_are_embedded(
    tmp_path: Path, units: Path, repository: Repository
) -> None:
    from tests import signing

    keys = tmp_path / "keys"
    signing.other().trust(keys, name="unrelated.asc")
    signing.key().trust(keys, name="fleet.asc")
    extra = f"  repositories:\n    - url: {repository.file_url}\n      keys: [fleet.asc]\n"
    text = one_package(repository.file_url).replace("  packages:\n", extra + "  packages:\n")
    out = render(tmp_path, write_manifest(tmp_path, text), "--keys-dir", str(keys))
    files = by_path(json.loads(out.read_text())["storage"]["files"])
    embedded = sorted(p for p in files if p.startswith("/etc/layershell/keys/"))
    assert embedded == ["/etc/layershell/keys/fleet.asc"]
