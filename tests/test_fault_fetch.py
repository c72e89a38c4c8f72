"""Issue 11, items 5, 6 and 7 (fetch): each defect of the fault review as the failing case.

5. Downloads without limits: a server sending 1 byte/s, a 10 GB Content-Length without an
   index size, a redirect to ftp://, a Content-Length smaller than the file.
6. Credentials: a password in a repository URL or a reference, printed and recorded;
   the credentials file that replaces them, and who may read it.
7. Full disk: a failed download's partial file, stale lock files, a bare ENOSPC.

Real loopback servers (tests/servers.py); a hang guard where a fetch could run forever,
never a timing assert.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import io
import os
import pwd
import random
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from layershell.errors import ConfigError, LayershellError
from layershell.layers import sandbox
from layershell.packages import manifest, repo, verify
from layershell.packages.fetch import Fetcher, FetchError
from layershell.packages.fetch.progress import LogProgress
from layershell.packages.repo.reference import BadReference
from tests.packages import program, tarball
from tests.servers import Servers
from tests.support import Identity, SystemStack, needs_root, python_cmd

NAME = "x86_64/goss_v0.0.1.tar.gz"
DATA = random.Random(5).randbytes(300_000)
DIGEST = hashlib.sha256(DATA).hexdigest()
SMALL = random.Random(6).randbytes(2000)
SMALL_DIGEST = hashlib.sha256(SMALL).hexdigest()
PASSWORD = "s3cret-Pw"
GUARD = 60  # seconds: only tells an end from a hang


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "repo"
    (r / "x86_64").mkdir(parents=True)
    (r / NAME).write_bytes(DATA)
    (r / "x86_64" / "small_1.tar.gz").write_bytes(SMALL)
    return r


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home of the fetching account's own, with no credentials file yet."""
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("HOME", str(h))
    return h


def fetcher(tmp_path: Path, **kwargs: object) -> Fetcher:
    options: dict[str, object] = {
        "connect_timeout": 5,
        "read_timeout": 5,
        "retries": 1,
        "backoff": 0.01,
        **kwargs,
    }
    return Fetcher(str(tmp_path / "cache"), **options)  # type: ignore[arg-type]


def partial_files(tmp_path: Path, *, locks: bool = False) -> list[str]:
    partial = tmp_path / "cache" / "partial"
    if not partial.exists():
        return []
    return sorted(p.name for p in partial.iterdir() if locks or not p.name.endswith(".lock"))


def cached_files(tmp_path: Path) -> list[str]:
    store = tmp_path / "cache" / "sha256"
    return sorted(p.name for p in store.iterdir()) if store.exists() else []


def guarded(call: Callable[[], object]) -> BaseException | None:
    """Run `call` in a thread; the exception it ended with (None: it returned)."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
            outcome.append(None)
        except BaseException as e:  # handed to the test
            outcome.append(e)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(GUARD)
    assert not worker.is_alive(), f"the fetch was still running after {GUARD} s"
    return outcome[0]


def everything_under(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file())


# --- 5. deadlines ----------------------------------------------------------------------


def test_a_server_sending_one_byte_at_a_time_is_abandoned_at_the_deadline(
    root: Path, tmp_path: Path, servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It kept `core install --read-timeout 3` running (killed at 40 s): every byte came
    before the read timeout. Deadline: 2000 bytes at 1 KiB/s, floor 2 s here."""
    monkeypatch.setenv("LAYERSHELL_FETCH_MIN_RATE", "1024")
    monkeypatch.setenv("LAYERSHELL_FETCH_GRACE", "2")
    http = servers.http(root)
    http.slow("x86_64/small_1.tar.gz", 0.2)
    url = http.url_for("x86_64/small_1.tar.gz")
    f = fetcher(tmp_path, read_timeout=3)
    error = guarded(lambda: f.fetch(url, sha256=SMALL_DIGEST, size=len(SMALL)))
    assert isinstance(error, FetchError), repr(error)
    message = str(error)
    assert message.startswith(f"{url} gave ")
    assert " of 2000 bytes in " in message
    assert message.endswith(", slower than the minimum 1 KiB/s; the download was abandoned")
    assert "LAYERSHELL_FETCH_MIN_RATE" in error.hint
    assert partial_files(tmp_path) == []  # a deadline is not resumed: nothing kept
    assert http.count() == 1  # not retried either


def test_without_a_known_size_the_average_rate_is_checked_after_the_grace(
    root: Path, tmp_path: Path, servers: Servers
) -> None:
    http = servers.http(root)
    http.slow("x86_64/small_1.tar.gz", 0.2, length=False)  # no Content-Length at all
    url = http.url_for("x86_64/small_1.tar.gz")
    f = fetcher(tmp_path, read_timeout=3, min_rate=1024, grace=2)
    error = guarded(lambda: f.fetch(url, sha256=SMALL_DIGEST))
    assert isinstance(error, FetchError), repr(error)
    assert " of " not in str(error)
    assert str(error).startswith(f"{url} gave ")
    assert str(error).endswith(", slower than the minimum 1 KiB/s; the download was abandoned")
    assert partial_files(tmp_path) == []


# --- 5. caps ---------------------------------------------------------------------------


def test_a_10_gb_content_length_is_refused_before_anything_is_kept(
    tmp_path: Path, servers: Servers
) -> None:
    """Without an index size it was downloaded until the server stopped (here after
    4 MiB, each time), and the .part was kept."""
    http = servers.http(tmp_path)
    http.huge(NAME, 10 << 30, sends=4 << 20)
    url = http.url_for(NAME)
    error = guarded(lambda: fetcher(tmp_path).fetch(url, sha256=DIGEST))
    assert isinstance(error, FetchError), repr(error)
    assert str(error) == (
        f"{url} is 10737418240 bytes, more than the limit of 4 GiB for one download"
    )
    assert "LAYERSHELL_FETCH_MAX_SIZE" in error.hint
    assert partial_files(tmp_path) == []
    assert cached_files(tmp_path) == []
    assert http.count() == 1


def test_a_body_without_a_length_stops_at_the_cap_and_keeps_nothing(
    tmp_path: Path, servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAYERSHELL_FETCH_MAX_SIZE", str(1 << 20))
    http = servers.http(tmp_path)
    http.huge(NAME, None, sends=4 << 20)
    url = http.url_for(NAME)
    error = guarded(lambda: fetcher(tmp_path).fetch(url, sha256=DIGEST))
    assert isinstance(error, FetchError), repr(error)
    assert str(error) == f"{url} is larger than the limit of 1 MiB for one download"
    assert partial_files(tmp_path) == []
    assert cached_files(tmp_path) == []


def test_an_ftp_size_over_the_cap_is_refused_before_retr(
    root: Path, tmp_path: Path, servers: Servers
) -> None:
    ftp = servers.ftp(root)
    ftp.advertise_size(NAME, 10 << 30)
    url = ftp.url_for(NAME)
    error = guarded(lambda: fetcher(tmp_path).fetch(url, sha256=DIGEST))
    assert isinstance(error, FetchError), repr(error)
    assert str(error) == (
        f"{url} is 10737418240 bytes, more than the limit of 4 GiB for one download"
    )
    assert ftp.count("RETR") == 0
    assert partial_files(tmp_path) == []


def test_a_length_over_the_index_size_is_refused_before_the_body(
    root: Path, tmp_path: Path, servers: Servers
) -> None:
    http = servers.http(root)
    url = http.url_for(NAME)
    with pytest.raises(FetchError) as caught:
        fetcher(tmp_path).fetch(url, sha256=DIGEST, size=1000)
    assert str(caught.value) == (
        f"{url} is larger than the expected 1000 bytes (the server announces 300000)"
    )
    assert partial_files(tmp_path) == []


# --- 5. redirects and short bodies -------------------------------------------------------


@pytest.mark.parametrize("target", ["ftp", "file"])
def test_a_redirect_to_another_protocol_is_refused_naming_both_urls(
    target: str, root: Path, tmp_path: Path, servers: Servers
) -> None:
    """A redirect to ftp:// gave `AttributeError: '_io.BufferedReader' object has no
    attribute 'reason'`."""
    http = servers.http(root)
    where = servers.ftp(root).url_for(NAME) if target == "ftp" else (root / NAME).as_uri()
    http.redirect(NAME, where)
    url = http.url_for(NAME)
    with pytest.raises(FetchError) as caught:
        fetcher(tmp_path).fetch(url, sha256=DIGEST)
    assert str(caught.value) == (
        f"{url} redirects to {where}: a redirect may not change the protocol from http to {target}"
    )
    assert partial_files(tmp_path) == []


@pytest.mark.parametrize(
    ("old", "new", "refused"),
    [
        ("http://a/x", "https://a/x", False),  # an upgrade
        ("http://a/x", "http://b/y", False),
        ("https://a/x", "http://a/x", True),
        ("https://a/x", "ftp://a/x", True),
        ("http://a/x", "file:///etc/passwd", True),
        ("http://a/x", "https://u:p@b/x", True),
    ],
)
def test_which_redirects_are_followed(old: str, new: str, refused: bool) -> None:
    from layershell.packages.fetch.http import redirect_refusal

    reason = redirect_refusal(old, new)
    assert (reason is not None) == refused, reason
    if reason is not None:
        assert ":p@" not in reason


def test_a_content_length_shorter_than_the_file_is_not_a_bare_hash_mismatch(
    root: Path, tmp_path: Path, servers: Servers
) -> None:
    """It was reported as a bare `sha256 mismatch` though the index said how long the
    file is. A complete answer shorter than that is no network fault (not retried): the
    sizes come first, the digests after."""
    http = servers.http(root)
    http.short(NAME, 1000)
    url = http.url_for(NAME)
    with pytest.raises(verify.HashMismatch) as caught:
        fetcher(tmp_path).fetch(url, sha256=DIGEST, size=len(DATA), name="goss")
    assert str(caught.value).startswith(
        f"{url}: the server sent 1000 of the 300000 bytes the index records"
        f" (sha256 mismatch for goss from {url}: expected {DIGEST}, got "
    )
    assert "cut short" in caught.value.hint
    assert http.count() == 1
    assert partial_files(tmp_path) == []


def test_a_body_shorter_than_its_content_length_says_so_and_resumes(
    root: Path, tmp_path: Path, servers: Servers
) -> None:
    http = servers.http(root)
    http.fail_once_mid_body(NAME, 1000)
    url = http.url_for(NAME)
    with pytest.raises(FetchError) as caught:
        fetcher(tmp_path, retries=0).fetch(url, sha256=DIGEST, size=len(DATA))
    assert str(caught.value) == (
        f"could not fetch {url}: the connection closed after 1000 of 300000 bytes (1 attempt)"
    )
    assert len(partial_files(tmp_path)) == 2  # a strong ETag: kept for a Range request


# --- 6. credentials in URLs ----------------------------------------------------------------


MANIFEST = """\
composable:
  default_repository: {default}
  packages:
    - name: goss
      repository: {package}
      version: v0.0.1
      sha256: {digest}
"""


def test_credentials_in_a_manifest_are_refused_without_printing_them(tmp_path: Path) -> None:
    path = tmp_path / "composable.yaml"
    path.write_text(
        MANIFEST.format(
            default=f"ftp://user:{PASSWORD}@127.0.0.1:2121",
            package=f"https://admin:{PASSWORD}@repo.example/fcos",
            digest=DIGEST,
        )
    )
    with pytest.raises(ConfigError) as caught:
        manifest.load_manifest(str(path))
    text = str(caught.value) + " ".join(p.hint for p in caught.value.problems)
    assert PASSWORD not in text
    lines = [str(p) for p in caught.value.problems]
    assert lines[0].startswith(f"{path}:2:")
    assert "ftp://***@127.0.0.1:2121 has a user name or password" in lines[0]
    assert lines[1].startswith(f"{path}:5:")
    assert "https://***@repo.example/fcos has a user name or password" in lines[1]
    assert all("~/.config/layershell/credentials" in p.hint for p in caught.value.problems)


def test_core_check_refuses_credentials_in_a_manifest(tmp_path: Path) -> None:
    """`core check` passed it, then the install failed four times with the password in
    "nonnumeric port: 's3cret@repo.example'"."""
    path = tmp_path / "composable.yaml"
    path.write_text(
        MANIFEST.format(
            default="https://repo.example",
            package=f"https://admin:{PASSWORD}@repo.example/fcos",
            digest=DIGEST,
        )
    )
    from tests.support import python_cmd

    r = subprocess.run(
        python_cmd("--rootless", "check", str(path)),
        capture_output=True,
        timeout=GUARD,
        env={**os.environ, "HOME": str(tmp_path)},
        check=False,
    )
    out = (r.stdout + r.stderr).decode()
    assert r.returncode == 2, out
    assert PASSWORD not in out
    assert "Traceback" not in out
    assert f"{path}:5:" in out
    assert "https://***@repo.example/fcos" in out


@pytest.mark.parametrize(
    "text",
    [
        f"https://admin:{PASSWORD}@repo.example/fcos/x86_64/goss_v0.0.1",
        f"ftp://anonymous:{PASSWORD}@repo.example/x86_64/goss_v0.0.1",
        f"https://admin:{PASSWORD}/x@repo.example/fcos/x86_64/goss_v0.0.1",
        f"file://admin:{PASSWORD}@localhost/media/x86_64/goss_v0.0.1",
    ],
)
def test_credentials_in_a_reference_are_refused_without_printing_them(text: str) -> None:
    with pytest.raises(BadReference) as caught:
        repo.parse_reference(text)
    assert PASSWORD not in str(caught.value) + caught.value.hint
    assert "***@" in str(caught.value)
    with pytest.raises(BadReference) as again:
        repo.check_repository(text.rsplit("/", 2)[0])
    assert PASSWORD not in str(again.value) + again.value.hint


def test_the_fetcher_itself_refuses_a_url_with_credentials(tmp_path: Path) -> None:
    url = f"https://admin:{PASSWORD}@127.0.0.1:1/x86_64/goss_v0.0.1.tar.gz"
    with pytest.raises(FetchError) as caught:
        fetcher(tmp_path).fetch(url, sha256=DIGEST)
    assert PASSWORD not in str(caught.value) + caught.value.hint
    assert "https://***@127.0.0.1:1/" in str(caught.value)


# --- 6. the credentials file ------------------------------------------------------------------


def credentials(home: Path, text: str, *, name: str = ".config/layershell/credentials") -> Path:
    path = home / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_the_credentials_file_logs_in_over_http_and_the_password_is_nowhere(
    root: Path, tmp_path: Path, servers: Servers, home: Path
) -> None:
    http = servers.http(root, login=("admin", PASSWORD))
    credentials(home, f"# the mirror\nmachine 127.0.0.1\n  login admin\n  password {PASSWORD}\n")
    out = io.StringIO()
    url = http.url_for(NAME)
    path = fetcher(tmp_path, progress=LogProgress(out)).fetch(url, sha256=DIGEST)
    assert Path(path).read_bytes() == DATA
    assert fetcher(tmp_path).get_index(http.url_for(NAME)) == DATA  # small files too
    token = base64.b64encode(f"admin:{PASSWORD}".encode())
    assert PASSWORD not in out.getvalue()
    cache = everything_under(tmp_path / "cache")
    assert PASSWORD.encode() not in cache
    assert token not in cache


def test_the_credentials_file_logs_in_over_ftp(
    root: Path, tmp_path: Path, servers: Servers, home: Path
) -> None:
    ftp = servers.ftp(root, login=("ftpuser", PASSWORD))
    credentials(home, f"machine 127.0.0.1 login ftpuser password {PASSWORD}\n", name=".netrc")
    out = io.StringIO()
    path = fetcher(tmp_path, progress=LogProgress(out)).fetch(ftp.url_for(NAME), sha256=DIGEST)
    assert Path(path).read_bytes() == DATA
    assert PASSWORD not in out.getvalue()
    assert ("USER", "ftpuser") in ftp.commands


def test_a_wrong_password_is_refused_without_printing_it(
    root: Path, tmp_path: Path, servers: Servers, home: Path
) -> None:
    ftp = servers.ftp(root, login=("ftpuser", "other"))
    credentials(home, f"machine 127.0.0.1 login ftpuser password {PASSWORD}\n")
    with pytest.raises(FetchError) as caught:
        fetcher(tmp_path).fetch(ftp.url_for(NAME), sha256=DIGEST)
    assert PASSWORD not in str(caught.value) + caught.value.hint
    assert ".config/layershell/credentials" in caught.value.hint


def test_credentials_are_not_sent_across_a_redirect_to_another_port(
    root: Path, tmp_path: Path, servers: Servers, home: Path
) -> None:
    first = servers.http(root, login=("admin", PASSWORD))
    other = servers.http(root)
    first.redirect(NAME, other.url_for(NAME))
    credentials(home, f"machine 127.0.0.1 login admin password {PASSWORD}\n")
    fetcher(tmp_path).fetch(first.url_for(NAME), sha256=DIGEST)
    assert "Authorization" in first.requests[0].headers
    assert [r.status for r in other.requests] == [200]
    assert "Authorization" not in other.requests[0].headers


@pytest.mark.parametrize("defect", ["mode 0644", "mode 0640", "a symlink", "another owner"])
def test_a_credentials_file_others_could_read_or_plant_is_refused(
    defect: str, root: Path, tmp_path: Path, servers: Servers, home: Path
) -> None:
    http = servers.http(root)
    path = credentials(home, f"machine 127.0.0.1 login admin password {PASSWORD}\n")
    if defect.startswith("mode"):
        path.chmod(int(defect[5:], 8))
    elif defect == "a symlink":
        real = tmp_path / "elsewhere"
        path.rename(real)
        path.symlink_to(real)
    else:
        if os.getuid() != 0:
            pytest.skip("needs root to give the file away")
        os.chown(path, 65534, 65534)
    with pytest.raises(LayershellError) as caught:
        fetcher(tmp_path).fetch(http.url_for(NAME), sha256=DIGEST)
    text = str(caught.value) + caught.value.hint
    assert str(path) in str(caught.value)
    assert PASSWORD not in text
    assert http.count() == 0


def test_a_malformed_credentials_file_names_the_line_not_the_secret(
    root: Path, tmp_path: Path, servers: Servers, home: Path
) -> None:
    http = servers.http(root)
    path = credentials(home, f"machine 127.0.0.1\nlogin admin {PASSWORD}\n")
    with pytest.raises(LayershellError) as caught:
        fetcher(tmp_path).fetch(http.url_for(NAME), sha256=DIGEST)
    assert str(caught.value).startswith(f"{path}:2: ")
    assert PASSWORD not in str(caught.value) + caught.value.hint


def test_layer_views_hide_the_credentials_files(tmp_path: Path) -> None:
    """The home is bound into layer 1 (install.sh, layer-shell): the files are masked."""
    home = tmp_path / "arne"
    credentials(home, "machine x login y password z\n")
    credentials(home, "machine x login y password z\n", name=".netrc")
    mounts = sandbox.layer_mounts((("arne", ()),), str(home), "/s", "/p", "/st")
    masked = {m[1]: m for m in mounts if m[1].startswith(str(home) + "/")}
    assert set(masked) == {
        str(home / ".config/layershell/credentials"),
        str(home / ".netrc"),
    }
    assert all(m[0] == sandbox.RO_BIND and m[2] == "/dev/null" for m in masked.values())
    assert mounts.index(masked[str(home / ".netrc")]) > mounts.index(
        (sandbox.BIND, str(home), str(home), 0)
    )


PEEK_SH = """\
cat "$HOME/.config/layershell/credentials" > leak-config 2>&1 || true
cat "$HOME/.netrc" > leak-netrc 2>&1 || true
"""


@needs_root
def test_install_sh_and_layer_programs_cannot_read_the_accounts_credentials(
    system: SystemStack, shared_dir: Path
) -> None:
    """The attack: a package's install.sh (arne's pseudo-root in layer 1) reads the
    credentials file of the account that fetched it, and keeps a copy in its tree."""
    pw = pwd.getpwnam(system.arne)
    home = Path(pw.pw_dir)
    for name in (".config/layershell/credentials", ".netrc"):
        path = credentials(
            home, f"machine repo.example login arne password {PASSWORD}\n", name=name
        )
        for p in (path, *path.relative_to(home).parents):
            os.chown(home / p, pw.pw_uid, pw.pw_gid)
    package = tarball(
        shared_dir / "peek_1.0.tar.gz", {**program("peek", "1.0"), "install.sh": PEEK_SH}
    )
    r = system.core("install", str(package))
    assert r.returncode == 0, r.stderr.decode()
    try:
        tree = system.root / "opt/pkgs/peek_1.0"
        for leak in ("leak-config", "leak-netrc"):
            assert PASSWORD not in (tree / leak).read_text(errors="replace"), leak
        shell = system.in_layer(system.arne, "cat ~/.netrc ~/.config/layershell/credentials")
        assert PASSWORD not in (shell.stdout + shell.stderr).decode(errors="replace")
        # On the host, the account still reads its own file.
        host = system.as_user(system.arne, ["cat", str(home / ".netrc")])
        assert PASSWORD in host.stdout.decode()
    finally:
        system.core("remove", "peek")


# --- 7. full disk, partials and locks --------------------------------------------------------


def test_a_finished_download_leaves_no_lock_file(
    root: Path, tmp_path: Path, servers: Servers
) -> None:
    http = servers.http(root)
    fetcher(tmp_path).fetch(http.url_for(NAME), sha256=DIGEST)
    with pytest.raises(FetchError):
        fetcher(tmp_path).fetch(http.url_for("x86_64/none.tar.gz"), sha256="0" * 64)
    assert partial_files(tmp_path, locks=True) == []


def test_a_download_refused_with_4xx_keeps_no_partial(
    root: Path, tmp_path: Path, servers: Servers
) -> None:
    http = servers.http(root)
    http.status(NAME, 403)
    with pytest.raises(FetchError):
        fetcher(tmp_path).fetch(http.url_for(NAME), sha256=DIGEST)
    assert partial_files(tmp_path, locks=True) == []


def test_prune_cache_removes_stale_partials_and_locks_but_not_a_held_one(tmp_path: Path) -> None:
    from layershell.packages.fetch import prune_cache

    partial = tmp_path / "cache" / "partial"
    partial.mkdir(parents=True)
    old = time.time() - 3 * 86400
    for key, size in (("a" * 64, 5000), ("b" * 64, 0), ("c" * 64, 7)):
        (partial / f"{key}.part").write_bytes(b"x" * size)
        (partial / f"{key}.json").write_text('{"url": "https://***@h/x", "bytes": 1}\n')
        (partial / f"{key}.lock").write_bytes(b"")
        for suffix in (".part", ".json", ".lock"):
            os.utime(partial / f"{key}{suffix}", (old, old))
    (partial / ("d" * 64 + ".lock")).write_bytes(b"")  # a lock alone, fresh
    held = os.open(partial / f"{'c' * 64}.lock", os.O_RDWR)
    fcntl.flock(held, fcntl.LOCK_EX)
    try:
        removed = prune_cache(str(tmp_path / "cache"), older_than=86400)
        left = sorted(p.name for p in partial.iterdir())
        assert left == sorted(
            [f"{'c' * 64}{s}" for s in (".json", ".lock", ".part")] + ["d" * 64 + ".lock"]
        )
        assert len(removed) == 2
        assert any("5000 bytes" in line and "a" * 64 in line for line in removed)
        assert any("b" * 64 in line for line in removed)
        everything = prune_cache(str(tmp_path / "cache"), older_than=None)
        assert len(everything) == 1 and "d" * 64 in everything[0]
        assert sorted(p.name for p in partial.iterdir()) == [
            f"{'c' * 64}{s}" for s in (".json", ".lock", ".part")
        ]
    finally:
        os.close(held)


@needs_root
def test_a_full_disk_names_the_path_keeps_nothing_and_says_what_to_free(
    tmp_path: Path, servers: Servers
) -> None:
    """It left a 20 MB .part behind and said only "No space left on device"."""
    big = tmp_path / "repo"
    (big / "x86_64").mkdir(parents=True)
    (big / NAME).write_bytes(DATA * 8)  # 2.4 MB
    cache = tmp_path / "cache"
    cache.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(cache)], check=True)
    try:
        http = servers.http(big)
        with pytest.raises(FetchError) as caught:
            fetcher(tmp_path).fetch(http.url_for(NAME), sha256=None)
        message = str(caught.value)
        assert message.startswith(f"cannot write {cache}/partial/")
        assert "no space left on the device" in message
        assert "core gc --partial" in caught.value.hint
        assert "core gc" in caught.value.hint
        assert os.listdir(cache / "partial") == []
    finally:
        subprocess.run(["umount", "-l", str(cache)], check=False)


def test_a_rootless_shim_cannot_read_the_callers_credentials(
    fresh_rootless: Identity, shared_dir: Path
) -> None:
    """The attack, rootless: a package's program (default profile, the caller's home
    bound read-only) reads the caller's logins for its repositories."""
    from tests.packages import ARCH, Repository

    home = fresh_rootless.home
    for name in (".config/layershell/credentials", ".netrc"):
        path = credentials(home, "machine repo.example login me password s3cret-Pw\n", name=name)
        os.chown(path, fresh_rootless.uid, fresh_rootless.gid)
    repo_dir = Repository(shared_dir / "repo")
    repo_dir.add(
        "peek", "1", {"bin/peek": "#!/bin/sh\ncat ~/.netrc ~/.config/layershell/credentials\n"}
    )
    repo_dir.index()
    r = fresh_rootless.run(python_cmd("install", f"{repo_dir.file_url}/{ARCH}/peek_1"))
    assert r.returncode == 0, r.stderr.decode()
    r = fresh_rootless.run(["peek"])
    assert b"s3cret-Pw" not in r.stdout + r.stderr, r.stdout
    assert (home / ".netrc").read_text().endswith("s3cret-Pw\n")  # still the caller's
