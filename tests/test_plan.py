"""layershell.packages.plan: every resolution rule (pinned, latest, os), with an in-memory
repository standing in for get_index/get_text, and once over real files (file://)."""

from __future__ import annotations

import hashlib
import json
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from layershell.errors import ConfigError
from layershell.packages import plan, repo
from layershell.packages.plan import Artifact, Candidate, ResolveError

REPO = "https://repo.example/fcos"
ARCH = "x86_64"
BASE = f"{REPO}/{ARCH}"
INDEX_URL = f"{BASE}/index.json"
WHO = f"goss from {REPO}: "
ALL = ["stable", "next", "testing"]


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Server:
    """A repository in memory: URL -> bytes; records what was asked for."""

    def __init__(self, files: dict[str, bytes] | None = None) -> None:
        self.files = dict(files or {})
        self.asked: list[str] = []

    def get(self, url: str) -> bytes | None:
        self.asked.append(url)
        return self.files.get(url)


def index_bytes(
    *versions: tuple[str, list[str]],
    name: str = "goss",
    arch: str = ARCH,
    latest: str | None = None,
) -> bytes:
    """An index of `name` with (version, streams) pairs; sha256 = sha(version); `latest`:
    the version a <name>_latest file named when the index was built."""
    entries = [
        {
            "version": v,
            "file": f"{name}_{v}.tar.gz",
            "sha256": sha(v),
            "size": len(v),
            "streams": streams,
        }
        for v, streams in versions
    ]
    doc: dict[str, object] = {"format": 1, "arch": arch, "packages": {name: entries}}
    if latest is not None:
        doc["latest"] = {name: latest}
    return json.dumps(doc).encode()


# A package on its way through the streams: v0.0.3 is in testing, v0.0.2 reached next,
# v0.0.1 is stable.
STAGED_VERSIONS: tuple[tuple[str, list[str]], ...] = (
    ("v0.0.1", ALL),
    ("v0.0.2", ["next", "testing"]),
    ("v0.0.3", ["testing"]),
)
STAGED = index_bytes(*STAGED_VERSIONS)


def resolve(
    server: Server,
    kind: str = "pinned",
    version: str = "v0.0.1",
    stream: str = "stable",
    *,
    os_version: str | None = None,
    pin: str | None = None,
    repository: str = REPO,
    name: str = "goss",
) -> Artifact:
    return plan.resolve(
        name,
        repository,
        version,
        kind,
        stream,
        arch=ARCH,
        os_version=os_version,
        get_index=server.get,
        get_text=server.get,
        sha256_pin=pin,
    )


def refused(server: Server, *args: Any, **kwargs: Any) -> ResolveError:
    with pytest.raises(ResolveError) as err:
        resolve(server, *args, **kwargs)
    return err.value


def artifact(version: str, *, file: str | None = None, size: int | None = None) -> Artifact:
    file = file or f"goss_{version}.tar.gz"
    return Artifact(
        name="goss",
        version=version,
        url=f"{BASE}/{file}",
        file_name=file,
        sha256=sha(version),
        size=len(version) if size is None else size,
        repository=REPO,
        arch=ARCH,
    )


# --- pinned -----------------------------------------------------------------------------------


def test_pinned_takes_file_and_sha256_from_the_index() -> None:
    data = json.loads(STAGED)
    data["packages"]["goss"][0]["file"] = "goss_v0.0.1.tar.xz"
    server = Server({INDEX_URL: json.dumps(data).encode()})
    assert resolve(server, version="v0.0.1") == artifact("v0.0.1", file="goss_v0.0.1.tar.xz")
    assert server.asked == [INDEX_URL]


def test_pinned_ignores_streams() -> None:
    assert resolve(Server({INDEX_URL: STAGED}), version="v0.0.3") == artifact("v0.0.3")


def test_pinned_without_index_uses_the_pin() -> None:
    pin = sha("v0.0.1")
    got = resolve(Server(), version="v0.0.1", pin=pin.upper())
    assert got == Artifact(
        name="goss",
        version="v0.0.1",
        url=f"{BASE}/goss_v0.0.1.tar.gz",
        file_name="goss_v0.0.1.tar.gz",
        sha256=pin,
        size=None,
        repository=REPO,
        arch=ARCH,
    )


def test_pinned_without_index_or_pin_is_refused() -> None:
    err = refused(Server(), version="v0.0.1")
    assert err.message == (
        f"no sha256 for goss v0.0.1: there is no index at {INDEX_URL}"
        " and the manifest pins no checksum"
    )
    assert err.hint == "add `sha256:` to the manifest or publish an index (core repo index DIR)"


def test_pin_matching_the_index_is_fine() -> None:
    got = resolve(Server({INDEX_URL: STAGED}), version="v0.0.2", pin=sha("v0.0.2"))
    assert got == artifact("v0.0.2")


def test_pin_and_index_disagreeing_is_refused() -> None:
    pin = sha("something else")
    err = refused(Server({INDEX_URL: STAGED}), version="v0.0.2", pin=pin)
    assert err.message == (
        f"{WHO}v0.0.2: the manifest pins sha256 {pin}"
        f" but the index at {INDEX_URL} says {sha('v0.0.2')}"
    )
    assert "do not trust this repository" in err.hint


def test_pinned_version_missing_from_the_index_lists_the_versions() -> None:
    err = refused(Server({INDEX_URL: STAGED}), version="v0.0.9")
    assert err.message == (
        f"{WHO}version v0.0.9 is not in the index at {INDEX_URL} (it has v0.0.3, v0.0.2, v0.0.1)"
    )
    assert "core repo index" in err.hint


def test_package_missing_from_the_index() -> None:
    server = Server({INDEX_URL: index_bytes(("1", ALL), name="other")})
    err = refused(server, version="v0.0.1")
    assert err.message == f"{WHO}version v0.0.1 is not in the index at {INDEX_URL} (it has no goss)"


@pytest.mark.parametrize(
    ("pin", "version", "problem"),
    [
        ("abc", "v0.0.1", "sha256 'abc' is not 64 hexadecimal digits"),
        (None, "../v1", "'../v1' is not a version"),
        (None, "latest", "'latest' is not a version"),
    ],
)
def test_pinned_bad_input(pin: str | None, version: str, problem: str) -> None:
    err = refused(Server({INDEX_URL: STAGED}), version=version, pin=pin)
    assert err.message == WHO + problem
    assert err.hint


# --- latest -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stream", "version"),
    [("stable", "v0.0.1"), ("next", "v0.0.2"), ("testing", "v0.0.3")],
)
def test_latest_is_the_newest_on_the_stream(stream: str, version: str) -> None:
    server = Server({INDEX_URL: STAGED})
    assert resolve(server, "latest", "latest", stream) == artifact(version)


def test_latest_orders_versions_naturally() -> None:
    server = Server({INDEX_URL: index_bytes(("v1.9", ALL), ("v1.10", ALL), ("v1.10~rc1", ALL))})
    assert resolve(server, "latest", "latest").version == "v1.10"


def test_latest_file_names_the_stable_version() -> None:
    # The index has v0.0.4 on stable too, but the publisher's goss_latest said v0.0.2 when
    # the index was built: the index records it, and the file itself is not fetched.
    index = index_bytes(("v0.0.1", ALL), ("v0.0.2", ALL), ("v0.0.4", ALL), latest="v0.0.2")
    server = Server({INDEX_URL: index, f"{BASE}/goss_latest": b"v0.0.4\n"})
    assert resolve(server, "latest", "latest", "stable") == artifact("v0.0.2")
    assert server.asked == [INDEX_URL]  # one request: a fleet's check stays one 304


def test_latest_file_is_read_when_there_is_no_index() -> None:
    server = Server({f"{BASE}/goss_latest": b"goss_v0.0.2.tar.gz"})  # a symlink's target
    got = resolve(server, "latest", "latest", "stable", pin=sha("v0.0.2"))
    assert got.version == "v0.0.2"
    assert server.asked[0] == INDEX_URL


@pytest.mark.parametrize("stream", ["next", "testing"])
def test_latest_file_counts_only_for_stable(stream: str) -> None:
    server = Server({INDEX_URL: index_bytes(*STAGED_VERSIONS, latest="v0.0.1")})
    assert resolve(server, "latest", "latest", stream).version != "v0.0.1"
    assert f"{BASE}/goss_latest" not in server.asked


def test_latest_file_without_index_needs_a_pin() -> None:
    server = Server({f"{BASE}/goss_latest": b"v0.0.2"})
    got = resolve(server, "latest", "latest", pin=sha("v0.0.2"))
    assert (got.version, got.sha256, got.size) == ("v0.0.2", sha("v0.0.2"), None)
    err = refused(server, "latest", "latest")
    assert err.message.startswith("no sha256 for goss v0.0.2 (named by goss_latest): ")


def test_latest_file_naming_a_missing_version() -> None:
    server = Server({INDEX_URL: index_bytes(*STAGED_VERSIONS, latest="v0.0.9")})
    err = refused(server, "latest", "latest")
    assert err.message == (
        f"{WHO}version v0.0.9 (named by goss_latest) is not in the index at {INDEX_URL}"
        " (it has v0.0.3, v0.0.2, v0.0.1)"
    )


def test_latest_file_that_is_not_a_version() -> None:
    server = Server({f"{BASE}/goss_latest": b"<html>not found</html>"})
    err = refused(server, "latest", "latest")
    assert err.message == (
        f"{WHO}{BASE}/goss_latest: goss_latest does not hold a version: '<html>not found</html>'"
    )
    assert "symlink" in err.hint


def test_latest_with_nothing_on_the_stream_lists_versions_per_stream() -> None:
    server = Server({INDEX_URL: index_bytes(("v0.0.3", ["testing"]), ("v0.0.1", []))})
    err = refused(server, "latest", "latest", "next")
    assert err.message == (
        f"{WHO}no version on the next stream in the index at {INDEX_URL}"
        " (stable: none; next: none; testing: v0.0.3)"
    )
    assert "track_stream" in err.hint


def test_latest_without_index_or_latest_file() -> None:
    err = refused(Server(), "latest", "latest", "stable")
    assert err.message == (
        f"{WHO}version: latest needs an index; there is no {INDEX_URL} and no goss_latest"
    )
    assert "core repo index" in err.hint
    err = refused(Server(), "latest", "latest", "testing")
    assert err.message == f"{WHO}version: latest needs an index; there is no {INDEX_URL}"


def test_index_is_fetched_once_per_resolution() -> None:
    server = Server({INDEX_URL: STAGED})
    resolve(server, "latest", "latest", "testing")
    assert server.asked == [INDEX_URL]


# --- os ---------------------------------------------------------------------------------------

OS_INDEX = index_bytes(
    ("38.20231201.3.0", ALL),
    ("39.20240101.3.0", ALL),
    ("39.20240115.3.0", ["testing"]),
    ("39.20240201.3.0", ALL),
)


def test_os_takes_the_hosts_version() -> None:
    got = resolve(Server({INDEX_URL: OS_INDEX}), "os", "os", os_version="39.20240101.3.0")
    assert got == artifact("39.20240101.3.0")


def test_os_falls_back_to_the_previous_os_version() -> None:
    # The host runs 39.20240108, which the repository never built for: the newest older
    # one wins, never the newer 39.20240201.
    got = resolve(Server({INDEX_URL: OS_INDEX}), "os", "os", os_version="39.20240108.3.0")
    assert got.version == "39.20240101.3.0"


def test_os_exact_version_only_on_its_stream() -> None:
    server = Server({INDEX_URL: OS_INDEX})
    host = "39.20240115.3.0"
    assert resolve(server, "os", "os", "testing", os_version=host).version == host
    assert resolve(server, "os", "os", "stable", os_version=host).version == "39.20240101.3.0"


def test_os_major_version_build_serves_every_host_of_that_major() -> None:
    server = Server({INDEX_URL: index_bytes(("38", ALL), ("39", ALL), ("40", ALL))})
    assert resolve(server, "os", "os", os_version="39.20240101.3.0").version == "39"


def test_os_with_nothing_old_enough() -> None:
    err = refused(Server({INDEX_URL: OS_INDEX}), "os", "os", os_version="37.20230101.3.0")
    assert err.message == (
        f"{WHO}no version for OS version 37.20230101.3.0 or an older one on the stable stream"
        f" in the index at {INDEX_URL} (on stable: 39.20240201.3.0, 39.20240101.3.0,"
        " 38.20231201.3.0; it has 39.20240201.3.0, 39.20240115.3.0, 39.20240101.3.0,"
        " 38.20231201.3.0)"
    )
    assert err.hint == "publish goss_37.20230101.3.0, or pin a version"


def test_os_without_an_os_version() -> None:
    err = refused(Server({INDEX_URL: OS_INDEX}), "os", "os", os_version=None)
    assert err.message == (
        f"{WHO}version: os, but the host's OS version is unknown"
        " (os-release has neither OSTREE_VERSION nor VERSION_ID)"
    )
    assert err.hint == "pin a version instead, or fix /etc/os-release"


def test_os_without_an_index() -> None:
    err = refused(Server(), "os", "os", os_version="39")
    assert err.message == (
        f"{WHO}version: os needs an index listing the versions; there is no {INDEX_URL}"
    )


# --- the repository, the index, the inputs ---------------------------------------------------


def test_repository_is_normalised() -> None:
    server = Server({INDEX_URL: STAGED})
    assert resolve(server, repository=REPO + "/") == artifact("v0.0.1")
    local = Server({"file:///media/usb1/fcos/x86_64/index.json": STAGED})
    got = resolve(local, repository="/media/usb1/fcos")
    assert got.url == "file:///media/usb1/fcos/x86_64/goss_v0.0.1.tar.gz"
    assert got.repository == "file:///media/usb1/fcos"


def test_bad_repository_names_the_package() -> None:
    err = refused(Server(), repository="gopher://old.example")
    assert err.message.startswith("goss: repository 'gopher://old.example': unknown protocol")
    assert "file, http, https, ftp" in err.hint


def test_index_for_another_arch_is_refused() -> None:
    err = refused(Server({INDEX_URL: index_bytes(("v0.0.1", ALL), arch="aarch64")}))
    assert err.message == f"{WHO}the index at {INDEX_URL} is for aarch64, not x86_64"


def test_broken_index_is_a_config_error_naming_its_url() -> None:
    with pytest.raises(ConfigError) as err:
        resolve(Server({INDEX_URL: b"<html>"}))
    assert str(err.value).startswith(f"{INDEX_URL}:1:1: not valid JSON")


def test_unknown_stream_and_kind() -> None:
    server = Server({INDEX_URL: STAGED})
    assert refused(server, "latest", stream="beta").message == f"{WHO}unknown stream 'beta'"
    assert refused(server, "newest").message == f"{WHO}unknown version kind 'newest'"


class VersionKind(str, Enum):  # what manifest.py passes: str enums whose values are words
    PINNED = "pinned"
    LATEST = "latest"
    OS = "os"


class TrackStream(str, Enum):
    STABLE = "stable"
    NEXT = "next"
    TESTING = "testing"


def test_accepts_str_enums() -> None:
    server = Server({INDEX_URL: STAGED})
    got = resolve(server, VersionKind.LATEST, "latest", TrackStream.NEXT)
    assert got == artifact("v0.0.2")
    index = repo.parse_index(STAGED, INDEX_URL)
    found = plan.candidates("goss", index, version_kind=VersionKind.LATEST, stream=TrackStream.NEXT)
    assert [c.eligible for c in found] == [False, True, True]


# --- candidates -------------------------------------------------------------------------------


def test_candidates_for_latest() -> None:
    index = repo.parse_index(STAGED, INDEX_URL)
    assert plan.candidates("goss", index, version_kind="latest", stream="next") == [
        Candidate("v0.0.3", ("testing",), False, "not on next"),
        Candidate("v0.0.2", ("next", "testing"), True, ""),
        Candidate("v0.0.1", ("stable", "next", "testing"), True, ""),
    ]
    assert plan.candidates("other", index, version_kind="latest", stream="next") == []


def test_candidates_for_os_and_pinned() -> None:
    index = repo.parse_index(OS_INDEX, INDEX_URL)
    found = plan.candidates(
        "goss", index, version_kind="os", stream="stable", os_version="39.20240115.3.0"
    )
    assert [(c.version, c.reason) for c in found] == [
        ("39.20240201.3.0", "newer than the host's OS version 39.20240115.3.0"),
        ("39.20240115.3.0", "not on stable"),
        ("39.20240101.3.0", ""),
        ("38.20231201.3.0", ""),
    ]
    pinned = plan.candidates(
        "goss", index, version_kind="pinned", stream="stable", version="38.20231201.3.0"
    )
    assert [c.version for c in pinned if c.eligible] == ["38.20231201.3.0"]
    assert plan.describe(found[:2]) == [
        "39.20240201.3.0  [stable, next, testing]  newer than the host's OS version"
        " 39.20240115.3.0",
        "39.20240115.3.0  [testing]  not on stable",
    ]


# --- over real files --------------------------------------------------------------------------


def local_path(url: str) -> Path:
    parts = urlsplit(url)
    assert parts.scheme == "file"
    return Path(unquote(parts.path))


def file_index(url: str) -> bytes | None:
    """get_index for file: URLs, as the fetch stage will do it."""
    path = local_path(url)
    return path.read_bytes() if path.exists() else None


def file_text(url: str) -> bytes | None:
    """get_text for file: URLs: a symlink's target, never the tarball it points to."""
    return repo.read_latest(str(local_path(url)))


def test_resolve_over_a_real_file_repository(tmp_path: Path) -> None:
    arch_dir = tmp_path / "usb 1" / "fcos" / ARCH
    arch_dir.mkdir(parents=True)
    for version in ("v0.0.1", "v0.0.2", "v0.0.3"):
        (arch_dir / f"goss_{version}.tar.gz").write_bytes(version.encode() * 10)
    (arch_dir / "streams.yaml").write_text("goss: {v0.0.3: [testing]}\n")
    (arch_dir / "goss_latest").symlink_to("goss_v0.0.1.tar.gz")
    repo.write_index(str(arch_dir))
    repository = "file://" + str(tmp_path / "usb%201" / "fcos")

    def go(kind: str, stream: str) -> Artifact:
        return plan.resolve(
            "goss",
            repository,
            "latest",
            kind,
            stream,
            arch=ARCH,
            os_version=None,
            get_index=file_index,
            get_text=file_text,
            sha256_pin=None,
        )

    stable = go("latest", "stable")  # the symlink says v0.0.1, though v0.0.2 is on stable
    assert stable.version == "v0.0.1"
    assert stable.sha256 == hashlib.sha256(b"v0.0.1" * 10).hexdigest()
    assert stable.size == 60
    assert unquote(urlsplit(stable.url).path) == str(arch_dir / "goss_v0.0.1.tar.gz")
    assert go("latest", "next").version == "v0.0.2"
    assert go("latest", "testing").version == "v0.0.3"
