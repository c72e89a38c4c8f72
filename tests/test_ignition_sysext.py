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

from layershell import ignition, origin
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
        (["--sysext", "IMAGE", "--max-embed", "100"], "over the limit of 100 bytes", 1),
        (["--sysext", "IMAGE", "--arch", "aarch64"], "is not named layershell-<version>-arm64", 2),
        (["--sysext", "ftp://127.0.0.1/x.raw"], "Ignition fetches only http(s)", 2),
        (["--sysext", "MISSING"], "No such file", 2),
        (["--sysext", "RENAMED"], "is not named layershell-<version>-", 2),
        (["--sysext", "UNLISTED"], "lists no sha256 for", 1),
        (["--sysext", "NOSUMS"], "cannot read", 1),
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
    renamed = image.with_name("layershell.raw")
    renamed.write_bytes(IMAGE_BYTES)
    nosums = tmp_path / "nosums"
    nosums.mkdir()
    (nosums / IMAGE).write_bytes(IMAGE_BYTES)
    sources = {
        "IMAGE": str(image),
        "MISSING": str(image.with_name(f"layershell-0-{SYSTEMD_ARCH}.raw")),
        "RENAMED": str(renamed),
        "UNLISTED": f"{http.url}/images/layershell-2-{SYSTEMD_ARCH}.raw",
        "NOSUMS": f"{http.url}/nosums/{IMAGE}",
    }
    argv = [sources.get(a, a) for a in args]
    out = tmp_path / "config.ign"
    source = write_manifest(tmp_path, one_package(repository.file_url))
    r = run(tmp_path, str(source), "--output", str(out), *argv)
    assert r.exit_code == code, r.output
    assert words in r.output, r.output
    assert "hint:" in r.output and "Traceback" not in r.output
    assert not out.exists()


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
