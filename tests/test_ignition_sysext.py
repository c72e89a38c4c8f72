"""`core ignition --sysext`: the config delivers layershell itself as a system extension
(docs/boot.md). Checked by the real ignition-validate and, as root, by Ignition's real
files stage; the whole boot is tests/test_sysext_boot.py."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from layershell.host import ignition, origin
from tests import ignition_tools
from tests.packages import ARCH, Repository
from tests.servers import Servers
from tests.test_ignition import (
    by_path,
    decode,
    minimal_sysroot,
    one_package,
    render,
    run,
    run_ignition,
    sha256,
    units_by_name,
    write_manifest,
)

SYSTEMD_ARCH = origin.ARCHITECTURES[ARCH]
IMAGE = f"layershell-9.8.7-{SYSTEMD_ARCH}.raw"
IMAGE_BYTES = b"hsqs not really a squashfs, but bytes Ignition must place unchanged\n" * 10


@pytest.fixture
def repository(tmp_path: Path) -> Repository:
    r = Repository(tmp_path / "repo")
    r.add("goss", "v0.0.1")
    r.index()
    return r


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "images" / IMAGE
    path.parent.mkdir()
    path.write_bytes(IMAGE_BYTES)
    (path.parent / "SHA256SUMS").write_text(
        f"{'0' * 64}  layershell-1.0-{SYSTEMD_ARCH}.raw\n{sha256(IMAGE_BYTES)}  {IMAGE}\n"
    )
    return path


def check_extension_config(cfg: dict[str, Any], source: str) -> None:
    """What every --sysext config says, whatever the image's source."""
    storage = cfg["storage"]
    files = by_path(storage["files"])
    placed = files[f"/opt/extensions/layershell/{IMAGE}"]
    assert placed["mode"] == 0o644 and "user" not in placed  # root's
    assert placed["contents"]["verification"] == {"hash": f"sha256-{sha256(IMAGE_BYTES)}"}
    if source.startswith("http"):
        assert placed["contents"]["source"] == source
    else:
        assert decode(placed["contents"]["source"]) == IMAGE_BYTES
    assert storage["links"] == [
        {"path": "/etc/extensions/layershell.raw", "target": f"/opt/extensions/layershell/{IMAGE}"}
    ]
    users = cfg["passwd"]["users"]
    assert {u["shell"] for u in users} == {"/usr/bin/layer-shell"}
    units = units_by_name(cfg)
    # The image ships layershell's units: the config carries none of their texts, only
    # what systemd needs before the image is merged.
    assert sorted(units) == [
        "layershell-extension.service", "layershell-firstboot.service", "systemd-sysext.service",
    ]  # fmt: skip
    assert units["systemd-sysext.service"] == {"name": "systemd-sysext.service", "enabled": True}
    shipped = Path(ignition.default_units_dir(), "layershell-extension.service").read_text()
    assert units["layershell-extension.service"] == {
        "name": "layershell-extension.service", "contents": shipped, "enabled": True,
    }  # fmt: skip
    assert "contents" not in units["layershell-firstboot.service"]


def test_a_local_image_is_embedded_with_the_link_and_the_extension_units(
    tmp_path: Path, repository: Repository, image: Path
) -> None:
    tools = ignition_tools.require()
    source = write_manifest(tmp_path, one_package(repository.file_url))
    out = render(tmp_path, source, "--sysext", str(image))
    ignition_tools.validate(tools, out)
    cfg = json.loads(out.read_text())
    check_extension_config(cfg, str(image))
    # file:// repository: no network drop-in on the first-boot unit.
    assert "dropins" not in units_by_name(cfg)["layershell-firstboot.service"]


def test_an_http_image_is_fetched_by_ignition_with_the_sha256_of_its_sums(
    tmp_path: Path, repository: Repository, image: Path, servers: Servers
) -> None:
    tools = ignition_tools.require()
    http = servers.http(tmp_path)
    url = f"{http.url}/images/{IMAGE}"
    source = write_manifest(tmp_path, one_package(f"{http.url}/repo"))
    out = render(tmp_path, source, "--sysext", url)
    ignition_tools.validate(tools, out)
    cfg = json.loads(out.read_text())
    check_extension_config(cfg, url)
    assert http.count("/images/SHA256SUMS", status=200) == 1
    assert http.count(f"/images/{IMAGE}") == 0  # Ignition fetches it, not core
    firstboot = units_by_name(cfg)["layershell-firstboot.service"]
    assert firstboot["dropins"][0]["name"] == ignition.NETWORK_DROPIN
    # Butane says the same, links included.
    bu = render(tmp_path, source, "--sysext", url, "--format", "butane", name="config.bu")
    tree = yaml.safe_load(bu.read_text())
    assert tree["storage"]["links"] == cfg["storage"]["links"]
    assert tree["passwd"]["users"][0]["shell"] == "/usr/bin/layer-shell"


@pytest.mark.parametrize(
    ("args", "words", "code"),
    [
        (["--sysext", "IMAGE", "--sysext-sha256", "xyz"], "is not a sha256", 2),
        (["--sysext", "IMAGE", "--sysext-sha256", "a" * 64], "its sha256 is", 1),
        (["--sysext-sha256", "a" * 64], "no --sysext was given", 2),
        (["--sysext", "IMAGE", "--max-embed", "100"], "over the limit of 100 bytes", 1),
        (["--sysext", "IMAGE", "--arch", "aarch64"], "is not named layershell-<version>-arm64", 2),
        (["--sysext", "ftp://127.0.0.1/x.raw"], "Ignition fetches only http(s)", 2),
        (["--sysext", "MISSING"], "No such file", 2),
        (["--sysext", "RENAMED"], "is not named layershell-<version>-", 2),
        (["--sysext", "LONG"], "a version of at most 64 characters", 2),
        (["--sysext", "FOREIGN"], "not a squashfs or erofs image", 2),
        (["--sysext", "FIFO"], "not a regular file", 2),  # open() would block forever
        (["--sysext", "ENDLESS"], "not a regular file", 2),  # a link to /dev/zero
        (["--sysext", "PASSWORD", "--sysext-sha256", "a" * 64], "never takes one", 2),
        (["--sysext", "UNLISTED"], "lists no sha256 for", 1),
        (["--sysext", "NOSUMS"], "cannot read", 1),
        (["--sysext", "HUGESUMS"], "cannot read", 1),  # over 1 MiB: never read whole
    ],
)
def test_bad_images_are_refused_with_the_reason_and_nothing_written(
    tmp_path: Path,
    repository: Repository,
    image: Path,
    servers: Servers,
    args: list[str],
    words: str,
    code: int,
) -> None:
    http = servers.http(tmp_path)
    local = tmp_path / "local"
    local.mkdir()
    renamed = local / "layershell.raw"
    renamed.write_bytes(IMAGE_BYTES)
    foreign = local / IMAGE
    foreign.write_bytes(b"this is not a squashfs\n")
    fifo = tmp_path / "fifo" / IMAGE
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    endless = tmp_path / "endless" / IMAGE
    endless.parent.mkdir()
    endless.symlink_to("/dev/zero")
    nosums = tmp_path / "nosums"
    nosums.mkdir()
    (nosums / IMAGE).write_bytes(IMAGE_BYTES)
    huge = tmp_path / "huge"
    huge.mkdir()
    with open(huge / "SHA256SUMS", "wb") as f:
        f.truncate(2 << 20)
    sources = {
        "IMAGE": str(image),
        "MISSING": str(image.with_name(f"layershell-0-{SYSTEMD_ARCH}.raw")),
        "RENAMED": str(renamed),
        "LONG": f"{http.url}/images/layershell-{'1' * 300}-{SYSTEMD_ARCH}.raw",
        "FOREIGN": str(foreign),
        "FIFO": str(fifo),
        "ENDLESS": str(endless),
        "PASSWORD": f"http://bob:s3cret@127.0.0.1:{http.port}/images/{IMAGE}",
        "UNLISTED": f"{http.url}/images/layershell-2-{SYSTEMD_ARCH}.raw",
        "NOSUMS": f"{http.url}/nosums/{IMAGE}",
        "HUGESUMS": f"{http.url}/huge/{IMAGE}",
    }
    argv = [sources.get(a, a) for a in args]
    out = tmp_path / "config.ign"
    source = write_manifest(tmp_path, one_package(repository.file_url))
    r = run(tmp_path, str(source), "--output", str(out), *argv)
    assert r.exit_code == code, r.output
    assert words in r.output, r.output
    assert "hint:" in r.output and "Traceback" not in r.output
    assert "s3cret" not in r.output
    assert not out.exists()


def test_sums_in_upper_case_and_a_signed_url_whose_token_is_never_shown(
    tmp_path: Path, repository: Repository, image: Path, servers: Servers
) -> None:
    http = servers.http(tmp_path)
    sums = image.parent / "SHA256SUMS"
    sums.write_text(f"{sha256(IMAGE_BYTES).upper()}  {IMAGE}\r\n")
    url = f"{http.url}/images/{IMAGE}?token=s3cret"
    source = write_manifest(tmp_path, one_package(repository.file_url))
    out = tmp_path / "config.ign"
    r = run(tmp_path, str(source), "--output", str(out), "--sysext", url)
    assert r.exit_code == 0, r.output
    assert "s3cret" not in r.output  # the log line shows the URL without its query
    cfg = json.loads(out.read_text())
    placed = by_path(cfg["storage"]["files"])[f"/opt/extensions/layershell/{IMAGE}"]
    assert placed["contents"]["source"] == url  # Ignition needs the token
    assert placed["contents"]["verification"] == {"hash": f"sha256-{sha256(IMAGE_BYTES)}"}


@pytest.mark.root
def test_real_ignition_places_the_image_and_its_link(
    tmp_path: Path, repository: Repository, image: Path
) -> None:
    if os.getuid() != 0:
        pytest.skip("needs root: Ignition's files stage creates accounts and chowns files")
    tools = ignition_tools.require()
    source = write_manifest(tmp_path, one_package(repository.file_url))
    config_file = render(tmp_path, source, "--sysext", str(image))
    root = tmp_path / "sysroot"
    minimal_sysroot(root, {"arne", "otto"})
    run_ignition(tools, config_file, root, tmp_path)
    placed = root / "opt/extensions/layershell" / IMAGE
    assert placed.read_bytes() == IMAGE_BYTES
    st = placed.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o644, 0, 0)
    link = root / "etc/extensions/layershell.raw"
    assert os.readlink(link) == f"/opt/extensions/layershell/{IMAGE}"
    unit = root / "etc/systemd/system/layershell-extension.service"
    assert "ExecStart=systemctl daemon-reload" in unit.read_text()
    assert not (root / "etc/systemd/system/layershell-inbox.service").exists()
    preset = (root / "etc/systemd/system-preset/20-ignition.preset").read_text().splitlines()
    assert "enable systemd-sysext.service" in preset
    assert "enable layershell-extension.service" in preset
    for line in (root / "etc/passwd").read_text().splitlines():
        if line.split(":")[0] in ("arne", "otto"):
            assert line.endswith(":/usr/bin/layer-shell")
