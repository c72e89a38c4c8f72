"""Fetch and verify against real loopback servers: file://, HTTP and FTP, the cache,
resume, retries, timeouts, hash checks and conditional index requests."""

from __future__ import annotations

import hashlib
import io
import os
import random
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from layershell.packages import verify
from layershell.packages.fetch import Fetcher, FetchError, Progress, progress_for
from layershell.packages.fetch.errors import NotFound
from layershell.packages.fetch.progress import LogProgress, RichProgress
from layershell.packages.verify import integrity
from tests.servers import Servers, free_port

NAME = "x86_64/goss_v0.0.1.tar.gz"
DATA = random.Random(3).randbytes(300_000)
DIGEST = hashlib.sha256(DATA).hexdigest()
WRONG = "0" * 64


@pytest.fixture
def servers() -> Iterator[Servers]:
    with Servers() as s:
        yield s


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A repository directory holding one package and an index."""
    repo = tmp_path / "repo"
    (repo / "x86_64").mkdir(parents=True)
    (repo / NAME).write_bytes(DATA)
    (repo / "x86_64" / "index.yaml").write_text("goss: [v0.0.1]\n")
    return repo


class Sleeps:
    """Records the back-off delays instead of sleeping them."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def fetcher(tmp_path: Path, **kwargs: object) -> Fetcher:
    options: dict[str, object] = {
        "connect_timeout": 5,
        "read_timeout": 5,
        "retries": 3,
        "backoff": 0.01,
        **kwargs,
    }
    return Fetcher(str(tmp_path / "cache"), **options)  # type: ignore[arg-type]


def partial_files(tmp_path: Path) -> list[str]:
    partial = tmp_path / "cache" / "partial"
    if not partial.exists():
        return []
    return sorted(p.name for p in partial.iterdir() if not p.name.endswith(".lock"))


def cached_files(tmp_path: Path) -> list[str]:
    store = tmp_path / "cache" / "sha256"
    return sorted(p.name for p in store.iterdir()) if store.exists() else []


# --- the same file by every protocol --------------------------------------------------


@pytest.mark.parametrize("scheme", ["path", "file", "http", "ftp"])
def test_every_protocol_gives_the_same_cached_file(
    scheme: str, root: Path, tmp_path: Path, servers: Servers
) -> None:
    if scheme == "path":
        url = str(root / NAME)
    elif scheme == "file":
        url = (root / NAME).as_uri()
    elif scheme == "http":
        url = servers.http(root).url_for(NAME)
    else:
        url = servers.ftp(root).url_for(NAME)
    path = fetcher(tmp_path).fetch(url, sha256=DIGEST, size=len(DATA))
    assert path == str(tmp_path / "cache" / "sha256" / DIGEST)
    assert Path(path).read_bytes() == DATA
    assert partial_files(tmp_path) == []


def test_a_cached_file_costs_no_request(root: Path, tmp_path: Path, servers: Servers) -> None:
    repo = servers.http(root)
    first = fetcher(tmp_path).fetch(repo.url_for(NAME), sha256=DIGEST)
    assert repo.count() == 1
    again = fetcher(tmp_path).fetch(repo.url_for(NAME), sha256=DIGEST.upper())
    assert again == first
    assert repo.count() == 1


def test_without_a_pin_the_file_is_stored_by_its_own_hash(root: Path, tmp_path: Path) -> None:
    path = fetcher(tmp_path).fetch(str(root / NAME), sha256=None)
    assert Path(path).name == DIGEST
    assert verify.sha256_file(path)[0] == DIGEST


def test_without_a_pin_over_http_too(root: Path, tmp_path: Path, servers: Servers) -> None:
    repo = servers.http(root)
    path = fetcher(tmp_path).fetch(repo.url_for(NAME), sha256=None)
    assert path == str(tmp_path / "cache" / "sha256" / DIGEST)


# --- resume ---------------------------------------------------------------------------


def test_http_resumes_after_the_connection_closes_mid_body(
    root: Path, tmp_path: Path, servers: Servers
) -> None:
    repo = servers.http(root)
    repo.fail_once_mid_body(NAME, 100_000)
    path = fetcher(tmp_path).fetch(repo.url_for(NAME), sha256=DIGEST)
    assert Path(path).read_bytes() == DATA
    first, second = repo.requests
    assert (first.status, "Range" not in first.headers) == (200, True)
    assert second.status == 206
    assert second.headers["Range"] == "bytes=100000-"
    assert second.headers["If-Range"].startswith('"')  # the ETag the first answer gave


def test_http_resumes_on_the_next_run(root: Path, tmp_path: Path, servers: Servers) -> None:
    repo = servers.http(root)
    repo.fail_once_mid_body(NAME, 120_000)
    with pytest.raises(FetchError, match="closed after 120000 of 300000 bytes"):
        fetcher(tmp_path, retries=0).fetch(repo.url_for(NAME), sha256=DIGEST)
    assert len(partial_files(tmp_path)) == 2  # the .part and its sidecar stay
    assert cached_files(tmp_path) == []
    path = fetcher(tmp_path).fetch(repo.url_for(NAME), sha256=DIGEST)
    assert Path(path).read_bytes() == DATA
    assert repo.requests[-1].headers["Range"] == "bytes=120000-"
    assert repo.requests[-1].status == 206
    assert partial_files(tmp_path) == []


def test_http_starts_over_when_the_file_changed_meanwhile(
    root: Path, tmp_path: Path, servers: Servers
) -> None:
    repo = servers.http(root)
    repo.fail_once_mid_body(NAME, 50_000)
    with pytest.raises(FetchError):
        fetcher(tmp_path, retries=0).fetch(repo.url_for(NAME), sha256=None)
    new = DATA[::-1]
    (root / NAME).write_bytes(new)
    path = fetcher(tmp_path).fetch(repo.url_for(NAME), sha256=hashlib.sha256(new).hexdigest())
    assert Path(path).read_bytes() == new
    last = repo.requests[-1]
    assert "If-Range" in last.headers
    assert last.status == 200  # the old ETag no longer matches: the whole file again


def test_ftp_resumes_with_rest(root: Path, tmp_path: Path, servers: Servers) -> None:
    repo = servers.ftp(root)
    repo.drop_data_once(NAME, 100_000)
    path = fetcher(tmp_path).fetch(repo.url_for(NAME), sha256=DIGEST)
    assert Path(path).read_bytes() == DATA
    assert repo.count("RETR") == 2
    rests = [int(arg) for cmd, arg in repo.commands if cmd == "REST"]
    assert len(rests) == 1
    assert 0 < rests[0] <= 100_000


# --- failures -------------------------------------------------------------------------


def test_http_404_is_a_clear_error_without_retry(
    root: Path, tmp_path: Path, servers: Servers
) -> None:
    repo = servers.http(root)
    url = repo.url_for("x86_64/goss_v9.tar.gz")
    sleeps = Sleeps()
    with pytest.raises(NotFound) as caught:
        fetcher(tmp_path, sleep=sleeps).fetch(url, sha256=DIGEST)
    assert str(caught.value) == f"not found: {url}"
    assert "check the URL" in caught.value.hint
    assert repo.count() == 1
    assert sleeps.delays == []
    assert partial_files(tmp_path) == []


def test_http_403_is_not_retried(root: Path, tmp_path: Path, servers: Servers) -> None:
    repo = servers.http(root)
    repo.status(NAME, 403)
    with pytest.raises(FetchError, match="access denied"):
        fetcher(tmp_path).fetch(repo.url_for(NAME), sha256=DIGEST)
    assert repo.count() == 1


def test_ftp_missing_file_is_not_found(root: Path, tmp_path: Path, servers: Servers) -> None:
    repo = servers.ftp(root)
    url = repo.url_for("x86_64/nothing.tar.gz")
    with pytest.raises(NotFound, match="not found: ftp://"):
        fetcher(tmp_path).fetch(url, sha256=DIGEST)
    assert repo.count("RETR") == 1


def test_missing_local_file_is_not_found(tmp_path: Path) -> None:
    url = (tmp_path / "nothing.tar.gz").as_uri()
    with pytest.raises(NotFound, match=f"not found: {url}"):
        fetcher(tmp_path).fetch(url, sha256=None)


def test_503_once_is_retried_after_a_backoff(root: Path, tmp_path: Path, servers: Servers) -> None:
    repo = servers.http(root)
    repo.status(NAME, 503, times=1)
    sleeps = Sleeps()
    path = fetcher(tmp_path, backoff=0.5, sleep=sleeps).fetch(repo.url_for(NAME), sha256=DIGEST)
    assert Path(path).read_bytes() == DATA
    assert [r.status for r in repo.requests] == [503, 200]
    assert len(sleeps.delays) == 1
    assert 0.25 <= sleeps.delays[0] <= 0.5


def test_retries_back_off_exponentially_then_give_up(
    root: Path, tmp_path: Path, servers: Servers
) -> None:
    repo = servers.http(root)
    repo.status(NAME, 503)
    sleeps = Sleeps()
    url = repo.url_for(NAME)
    with pytest.raises(FetchError) as caught:
        fetcher(tmp_path, retries=3, backoff=1.0, sleep=sleeps).fetch(url, sha256=DIGEST)
    assert str(caught.value) == f"could not fetch {url}: HTTP 503 Service Unavailable (4 attempts)"
    assert "retry later" in caught.value.hint
    assert repo.count() == 4
    assert len(sleeps.delays) == 3
    for n, delay in enumerate(sleeps.delays):
        assert 2**n * 0.5 <= delay <= 2**n


def test_connection_refused_is_retried_then_reported(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/goss.tar.gz"
    sleeps = Sleeps()
    with pytest.raises(FetchError, match="connection refused"):
        fetcher(tmp_path, retries=2, sleep=sleeps).fetch(url, sha256=DIGEST)
    assert len(sleeps.delays) == 2


def test_a_stalled_server_ends_in_a_timeout_error(
    root: Path, tmp_path: Path, servers: Servers
) -> None:
    repo = servers.http(root)
    repo.stall(NAME, 1000, seconds=120)  # released when the server stops
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            # A long connect timeout: only the read (idle) timeout can end this quickly.
            f = fetcher(tmp_path, connect_timeout=60, read_timeout=0.3, retries=1)
            f.fetch(repo.url_for(NAME), sha256=DIGEST)
        except BaseException as e:
            outcome.append(e)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    # Not a timing assert: 30 s only tells the idle timeout (about 1 s in all) from a hang
    # or from waiting out the connect timeout (2 x 60 s).
    worker.join(30)
    assert not worker.is_alive(), "fetch hung on a stalled server"
    assert len(outcome) == 1
    assert isinstance(outcome[0], FetchError)
    assert "timed out" in str(outcome[0])
    assert repo.count() == 2
    assert repo.requests[1].headers["Range"] == "bytes=1000-"  # the retry resumed


def test_a_hash_mismatch_leaves_nothing_behind(
    root: Path, tmp_path: Path, servers: Servers
) -> None:
    repo = servers.http(root)
    url = repo.url_for(NAME)
    with pytest.raises(verify.HashMismatch) as caught:
        fetcher(tmp_path).fetch(url, sha256=WRONG, name="goss_v0.0.1.tar.gz")
    error = caught.value
    assert (error.expected, error.actual, error.source) == (WRONG, DIGEST, url)
    assert str(error) == (
        f"sha256 mismatch for goss_v0.0.1.tar.gz from {url}: expected {WRONG}, got {DIGEST}"
    )
    assert error.hint == "the file was corrupted or replaced; the installed version is kept"
    assert cached_files(tmp_path) == []
    assert partial_files(tmp_path) == []


def test_a_file_larger_than_its_size_pin_is_cut_off(
    root: Path, tmp_path: Path, servers: Servers
) -> None:
    repo = servers.http(root)
    with pytest.raises(FetchError, match="larger than the expected 1000 bytes"):
        fetcher(tmp_path).fetch(repo.url_for(NAME), sha256=None, size=1000)
    assert cached_files(tmp_path) == []
    assert partial_files(tmp_path) == []


def test_unsupported_schemes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="unsupported URL s3://bucket/goss"):
        fetcher(tmp_path).fetch("s3://bucket/goss", sha256=None)


def test_a_malformed_pin_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="not a sha256 digest"):
        fetcher(tmp_path).fetch("/nowhere", sha256="abc")


# --- small files ----------------------------------------------------------------------


def test_index_is_revalidated_with_one_conditional_request(
    root: Path, tmp_path: Path, servers: Servers
) -> None:
    repo = servers.http(root)
    url = repo.url_for("x86_64/index.yaml")
    first = fetcher(tmp_path).get_index(url)
    assert first == b"goss: [v0.0.1]\n"
    repo.clear_log()
    second = fetcher(tmp_path).get_index(url)
    assert second == first
    assert [r.status for r in repo.requests] == [304]
    assert "If-None-Match" in repo.requests[0].headers
    assert "If-Modified-Since" in repo.requests[0].headers


def test_a_changed_index_is_fetched_again(root: Path, tmp_path: Path, servers: Servers) -> None:
    repo = servers.http(root)
    url = repo.url_for("x86_64/index.yaml")
    assert fetcher(tmp_path).get_index(url) == b"goss: [v0.0.1]\n"
    index = root / "x86_64" / "index.yaml"
    index.write_text("goss: [v0.0.1, v0.0.2]\n")
    os.utime(index, (1, 2_000_000_000))  # a newer second: If-Modified-Since cannot mask it
    assert fetcher(tmp_path).get_index(url) == b"goss: [v0.0.1, v0.0.2]\n"
    assert repo.requests[-1].status == 200


def test_a_missing_index_is_none(root: Path, tmp_path: Path, servers: Servers) -> None:
    repo = servers.http(root)
    assert fetcher(tmp_path).get_index(repo.url_for("x86_64/none.yaml")) is None
    assert repo.count() == 1


def test_ftp_index_is_not_downloaded_again_when_unchanged(
    root: Path, tmp_path: Path, servers: Servers
) -> None:
    repo = servers.ftp(root)
    url = repo.url_for("x86_64/index.yaml")
    assert fetcher(tmp_path).get_index(url) == b"goss: [v0.0.1]\n"
    assert fetcher(tmp_path).get_index(url) == b"goss: [v0.0.1]\n"
    assert repo.count("RETR") == 1
    assert repo.count("MDTM") >= 2


def test_local_index_is_read_directly(root: Path, tmp_path: Path) -> None:
    f = fetcher(tmp_path)
    assert f.get_index((root / "x86_64" / "index.yaml").as_uri()) == b"goss: [v0.0.1]\n"
    assert f.get_index((root / "none.yaml").as_uri()) is None


def test_get_text_is_never_cached(root: Path, tmp_path: Path, servers: Servers) -> None:
    repo = servers.http(root)
    url = repo.url_for("x86_64/index.yaml")
    f = fetcher(tmp_path)
    assert f.get_text(url) == b"goss: [v0.0.1]\n"
    assert f.get_text(url) == b"goss: [v0.0.1]\n"
    assert [r.status for r in repo.requests] == [200, 200]
    assert all("If-None-Match" not in r.headers for r in repo.requests)
    assert f.get_text(repo.url_for("x86_64/none")) is None


# --- progress and verify --------------------------------------------------------------


def test_plain_progress_lines(root: Path, tmp_path: Path, servers: Servers) -> None:
    repo = servers.http(root)
    out = io.StringIO()
    url = repo.url_for(NAME)
    fetcher(tmp_path, progress=LogProgress(out)).fetch(url, sha256=DIGEST, name="goss")
    lines = out.getvalue().splitlines()
    assert lines[0] == f"fetching goss: {url}"
    assert lines[1].startswith(f"fetched goss: {len(DATA)} bytes in ")
    assert len(lines) == 2


def test_resumed_and_retried_downloads_say_so(root: Path, tmp_path: Path, servers: Servers) -> None:
    repo = servers.http(root)
    repo.fail_once_mid_body(NAME, 100_000)
    out = io.StringIO()
    url = repo.url_for(NAME)
    fetcher(tmp_path, progress=LogProgress(out)).fetch(url, sha256=DIGEST, name="goss")
    lines = out.getvalue().splitlines()
    assert lines[0] == f"fetching goss: {url}"
    assert lines[1].startswith("retrying goss in ")
    assert lines[1].endswith(": the connection closed after 100000 of 300000 bytes")
    assert lines[2] == f"resuming goss at 100000 bytes: {url}"
    assert lines[3].startswith(f"fetched goss: {len(DATA)} bytes in ")


def test_the_progress_bar_ends_with_a_summary(root: Path, tmp_path: Path) -> None:
    out = io.StringIO()
    progress = RichProgress(out)
    fetcher(tmp_path, progress=progress).fetch(str(root / NAME), sha256=DIGEST, name="goss")
    assert f"fetched goss: {len(DATA)} bytes in " in out.getvalue()


def test_progress_for_picks_by_terminal() -> None:
    assert type(progress_for(io.StringIO(), quiet=True)) is Progress
    assert isinstance(progress_for(io.StringIO()), LogProgress)


def test_sha256_file_streams_large_files(tmp_path: Path) -> None:
    big = tmp_path / "big"
    data = DATA * 8  # 2.4 MB: several 1 MiB blocks and a short last one
    big.write_bytes(data)
    assert verify.sha256_file(str(big)) == (hashlib.sha256(data).hexdigest(), len(data))


def test_check_names_the_file_and_both_digests(tmp_path: Path) -> None:
    f = tmp_path / "goss_v0.0.1.tar.gz"
    f.write_bytes(DATA)
    integrity.check(str(f), DIGEST.upper(), "file:///media/usb1/goss_v0.0.1.tar.gz")
    with pytest.raises(verify.HashMismatch) as caught:
        integrity.check(str(f), WRONG, "file:///media/usb1/goss_v0.0.1.tar.gz")
    assert str(caught.value) == (
        "sha256 mismatch for goss_v0.0.1.tar.gz from file:///media/usb1/goss_v0.0.1.tar.gz: "
        f"expected {WRONG}, got {DIGEST}"
    )


def test_a_local_index_over_the_limit_is_refused_not_cut(tmp_path: Path) -> None:
    """A file:// index over 16 MiB was cut at the limit and then reported as invalid
    JSON at 1:421; every protocol now refuses it, naming the limit (issue 11)."""
    index = tmp_path / "index.json"
    index.write_bytes(b'{"packages": "' + b"x" * (17 << 20) + b'"}')
    fetcher = Fetcher(str(tmp_path / "cache"))
    with pytest.raises(FetchError, match="larger than 16 MiB: not an index file"):
        fetcher.get_index(index.as_uri())
