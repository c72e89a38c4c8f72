"""Fetch: bytes from file://, http(s):// and ftp:// into a content-addressed cache.

Packages land in `CACHE/sha256/<hex>` once complete and verified, so a package already
fetched costs no network at all. A download in progress lives in
`CACHE/partial/<sha256 of url>.part` next to a small JSON sidecar (URL, validator, bytes so
far): an interrupted download resumes where it stopped, on the next attempt or on the next
run (HTTP `Range` guarded by `If-Range`, FTP `REST`). Small index files are fetched with
conditional requests against `CACHE/meta/<sha256 of url>.json`, so a fleet polling one
static server costs it a single 304 per host and poll.

Only kept libraries talk the protocols: urllib/http.client for HTTP(S), ftplib for FTP.
"""

from __future__ import annotations

import base64
import fcntl
import ftplib
import hashlib
import http.client
import json
import os
import random
import socket
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from email.message import Message
from typing import IO, Any, TextIO, TypeVar

from layershell import __version__
from layershell.atomic import write_atomic
from layershell.errors import LayershellError
from layershell.verify import HashMismatch, display_name

CHUNK = 64 * 1024
SMALL_LIMIT = 16 << 20  # index and text files: anything bigger is not an index
USER_AGENT = f"layershell/{__version__}"
SCHEMES = ("file", "http", "https", "ftp")
HEX = frozenset("0123456789abcdef")

T = TypeVar("T")

NETWORK_HINT = (
    "check the network and that the server is up, then retry later; "
    "a partial download resumes where it stopped"
)


class FetchError(LayershellError):
    """A URL could not be fetched. `url` names it; the message says what happened."""

    exit_code = 1

    def __init__(self, message: str, hint: str = "", *, url: str = "") -> None:
        super().__init__(message, hint)
        self.url = url


class NotFound(FetchError):
    """The server (or the file system) has no such file: retrying will not help."""

    def __init__(self, url: str) -> None:
        super().__init__(
            f"not found: {url}",
            "check the URL: repository, architecture, package name and version",
            url=url,
        )


class _Transient(Exception):
    """A failure worth retrying: refused or reset connection, timeout, 5xx, body cut short."""


# --- progress ------------------------------------------------------------------------


class Progress:
    """Where fetch reports what it does. This base class is silent (tests, --quiet)."""

    def start(self, name: str, url: str, total: int | None, offset: int = 0) -> None:
        """An attempt begins; `offset` bytes are already there (a resumed download)."""

    def advance(self, nbytes: int) -> None:
        """`nbytes` more bytes arrived."""

    def retry(self, name: str, url: str, reason: str, delay: float) -> None:
        """An attempt failed with `reason`; the next one starts in `delay` seconds."""

    def done(self, name: str, url: str, nbytes: int, seconds: float) -> None:
        """The file is complete and verified."""

    def abort(self, name: str, url: str) -> None:
        """The fetch failed for good (the error itself is raised, not reported here)."""


class LogProgress(Progress):
    """Plain lines, one per event: for logs, journals and pipes."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream

    def _line(self, text: str) -> None:
        stream = self.stream or sys.stderr
        stream.write(text + "\n")
        stream.flush()

    def start(self, name: str, url: str, total: int | None, offset: int = 0) -> None:
        if offset:
            self._line(f"resuming {name} at {offset} bytes: {url}")
        else:
            self._line(f"fetching {name}: {url}")

    def retry(self, name: str, url: str, reason: str, delay: float) -> None:
        self._line(f"retrying {name} in {delay:.1f} s: {reason}")

    def done(self, name: str, url: str, nbytes: int, seconds: float) -> None:
        self._line(f"fetched {name}: {nbytes} bytes in {seconds:.1f} s")


class RichProgress(Progress):
    """A transient progress bar on a terminal; the summary line stays."""

    def __init__(self, stream: TextIO | None = None) -> None:
        from rich.console import Console

        self.console = Console(
            file=stream or sys.stderr, markup=False, highlight=False, soft_wrap=True
        )
        self._bar: Any = None
        self._task: Any = None

    def start(self, name: str, url: str, total: int | None, offset: int = 0) -> None:
        if self._bar is None:
            from rich import progress as rp

            self._bar = rp.Progress(
                rp.TextColumn("{task.description}", markup=False),
                rp.BarColumn(),
                rp.DownloadColumn(),
                rp.TransferSpeedColumn(),
                rp.TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(name, total=total, completed=offset)
        else:
            self._bar.update(self._task, total=total, completed=offset)

    def advance(self, nbytes: int) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, nbytes)

    def retry(self, name: str, url: str, reason: str, delay: float) -> None:
        self.console.print(f"retrying {name} in {delay:.1f} s: {reason}")

    def done(self, name: str, url: str, nbytes: int, seconds: float) -> None:
        self._stop()
        self.console.print(f"fetched {name}: {nbytes} bytes in {seconds:.1f} s")

    def abort(self, name: str, url: str) -> None:
        self._stop()

    def _stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = self._task = None


def progress_for(stream: TextIO | None = None, *, quiet: bool = False) -> Progress:
    """The right reporter for `stream` (default stderr): a bar on a TTY, lines elsewhere."""
    if quiet:
        return Progress()
    stream = stream or sys.stderr
    return RichProgress(stream) if stream.isatty() else LogProgress(stream)


# --- HTTP plumbing -------------------------------------------------------------------


class _HTTPConnection(http.client.HTTPConnection):
    """Connects under the connect timeout, then reads under the idle (read) timeout."""

    read_timeout: float = 30.0

    def connect(self) -> None:
        super().connect()
        self.sock.settimeout(self.read_timeout)


class _HTTPSConnection(http.client.HTTPSConnection):
    read_timeout: float = 30.0

    def connect(self) -> None:
        super().connect()  # TCP and the TLS handshake, both under the connect timeout
        self.sock.settimeout(self.read_timeout)


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, read_timeout: float) -> None:
        super().__init__()
        self.read_timeout = read_timeout

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        def connection(host: str, /, **kwargs: Any) -> http.client.HTTPConnection:
            conn = _HTTPConnection(host, **kwargs)
            conn.read_timeout = self.read_timeout
            return conn

        return self.do_open(connection, req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, read_timeout: float) -> None:
        super().__init__()
        self.read_timeout = read_timeout
        self.context = ssl.create_default_context()

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        def connection(host: str, /, **kwargs: Any) -> http.client.HTTPConnection:
            conn = _HTTPSConnection(host, **kwargs)
            conn.read_timeout = self.read_timeout
            return conn

        return self.do_open(connection, req, context=self.context)


class _PassErrors(urllib.request.HTTPErrorProcessor):
    """Hand every status but redirects back as a response: we read the codes ourselves,
    and a 304 or a 404 is an answer here, not an exception."""

    def http_response(
        self, request: urllib.request.Request, response: http.client.HTTPResponse
    ) -> http.client.HTTPResponse:
        if response.status in (301, 302, 303, 307, 308):
            followed: http.client.HTTPResponse = super().http_response(request, response)
            return followed
        return response

    https_response = http_response


def _http_status_error(url: str, status: int, reason: str) -> Exception:
    """What a non-success status means: NotFound, a final FetchError, or _Transient."""
    if status in (404, 410):
        return NotFound(url)
    if status in (408, 425, 429) or status >= 500:
        return _Transient(f"HTTP {status} {reason}".rstrip())
    if status in (401, 403):
        return FetchError(
            f"access denied (HTTP {status}): {url}",
            "check the URL and that the server lets this host read it",
            url=url,
        )
    return FetchError(
        f"unexpected answer HTTP {status} {reason} for {url}".replace("  ", " "),
        "check the URL and the server's configuration",
        url=url,
    )


def _reason(exc: BaseException, read_timeout: float) -> str:
    """A short, human reason for a network failure."""
    if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException):
        exc = exc.reason
    if isinstance(exc, TimeoutError):
        return f"timed out (no data for {read_timeout:g} s)"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name ({exc.strerror})"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset by the server"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "the server closed the connection without answering"
    if isinstance(exc, http.client.IncompleteRead):
        return "the connection closed before the end of the file"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _strong_validator(headers: Message) -> str | None:
    """What If-Range may carry: a strong ETag, else Last-Modified (RFC 9110 13.1.5)."""
    etag = headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    return headers.get("Last-Modified")


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, complete length) of a `Content-Range: bytes A-B/N` or `bytes */N`."""
    if not value or not value.startswith("bytes "):
        return None, None
    span, _, total = value[6:].partition("/")
    first = span.split("-", 1)[0]
    try:
        return (int(first) if first != "*" else None), (int(total) if total != "*" else None)
    except ValueError:
        return None, None


def _content_length(headers: Message) -> int | None:
    value = headers.get("Content-Length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


# --- FTP plumbing --------------------------------------------------------------------


def _ftp_code(exc: ftplib.Error) -> str:
    return str(exc)[:3]


def _ftp_failure(url: str, exc: BaseException, read_timeout: float) -> Exception:
    """An FTP error as layershell's: 550 is a 404, another permanent reply a clear error,
    the rest (temporary replies, broken connections, timeouts) worth another attempt."""
    if isinstance(exc, ftplib.error_perm):
        if _ftp_code(exc) == "550":
            return NotFound(url)
        return FetchError(
            f"the FTP server refused {url}: {exc}", "check the URL and the server", url=url
        )
    if isinstance(exc, ftplib.Error):
        return _Transient(f"FTP {exc}")
    return _Transient(_reason(exc, read_timeout))


def _ftp_query(ftp: ftplib.FTP, command: str) -> str | None:
    """The argument of a 213 reply to SIZE/MDTM, or None when the server lacks it."""
    try:
        reply = ftp.sendcmd(command)
    except ftplib.error_perm:
        return None
    return reply[4:].strip() if reply.startswith("213") else None


def _ftp_path(url: str) -> str:
    """RFC 1738: the URL path is relative to the login directory; `//abs` is absolute."""
    path = urllib.parse.unquote(urllib.parse.urlsplit(url).path)
    return path[1:] if path.startswith("/") else path


@contextmanager
def _ftp_session(url: str, connect_timeout: float, read_timeout: float) -> Iterator[ftplib.FTP]:
    parts = urllib.parse.urlsplit(url)
    user = urllib.parse.unquote(parts.username or "anonymous")
    password = urllib.parse.unquote(parts.password or "anonymous@")
    # S321: ftp:// is one of the transports users choose; the sha256 pin, not the
    # channel, is what protects the bytes.
    with ftplib.FTP(timeout=connect_timeout) as ftp:  # noqa: S321
        ftp.connect(parts.hostname or "localhost", parts.port or 21)
        try:
            ftp.login(user, password)
        except ftplib.error_perm as e:
            raise FetchError(
                f"the FTP server refused the login for {url}: {e}",
                "check the user and password in the URL",
                url=url,
            ) from e
        # From here on every wait (replies, data connections) is an idle wait.
        ftp.timeout = read_timeout
        if ftp.sock is not None:
            ftp.sock.settimeout(read_timeout)
        ftp.voidcmd("TYPE I")
        yield ftp


# --- the partial download ------------------------------------------------------------


def _url_key(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()


class _Partial:
    """A download in progress: the .part file, its JSON sidecar and the running sha256.

    The hash covers exactly the bytes in the file, so the digest is ready when the last
    byte arrives; a resumed download hashes what is already there once, at the start.
    """

    def __init__(self, directory: str, url: str) -> None:
        key = _url_key(url)
        self.url = url
        self.path = os.path.join(directory, key + ".part")
        self.sidecar = os.path.join(directory, key + ".json")
        self.lock_path = os.path.join(directory, key + ".lock")
        self.validator: str | None = None
        self.size = 0
        self.hasher = hashlib.sha256()
        self._file: IO[bytes] | None = None

    def load(self) -> None:
        """Pick up what an earlier attempt left, if it was for this very URL."""
        try:
            with open(self.sidecar, encoding="utf-8") as f:
                state = json.load(f)
            if not isinstance(state, dict) or state.get("url") != self.url:
                raise ValueError("sidecar of another URL")
            validator = state.get("validator")
            self.validator = validator if isinstance(validator, str) else None
            self._file = open(self.path, "r+b")  # noqa: SIM115 (closed by close())
        except (OSError, ValueError):
            self.reset()
            return
        while block := self._file.read(CHUNK * 16):
            self.hasher.update(block)
        self.size = self._file.tell()

    def reset(self) -> None:
        """Start over: an empty file, no validator."""
        if self._file is None:
            self._file = open(self.path, "w+b")  # noqa: SIM115 (closed by close())
        self._file.seek(0)
        self._file.truncate()
        self.size = 0
        self.hasher = hashlib.sha256()
        self.validator = None

    def begin(self, validator: str | None) -> None:
        self.validator = validator
        self.save()

    def write(self, data: bytes) -> None:
        assert self._file is not None
        try:
            self._file.write(data)
        except OSError as e:
            raise FetchError(
                f"cannot write {self.path}: {e.strerror}",
                "free some space in the cache directory, then retry",
                url=self.url,
            ) from e
        self.hasher.update(data)
        self.size += len(data)

    def save(self) -> None:
        if self._file is None:
            return  # removed (or never begun): nothing to describe
        state = {"url": self.url, "validator": self.validator, "bytes": self.size}
        write_atomic(self.sidecar, json.dumps(state) + "\n")

    def finish(self) -> None:
        """Make the bytes durable before the file is renamed into the cache."""
        assert self._file is not None
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            try:
                self._file.flush()
            except OSError:
                pass
            self._file.close()
            self._file = None

    def remove(self) -> None:
        self.close()
        for path in (self.path, self.sidecar):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


@contextmanager
def _locked(path: str) -> Iterator[None]:
    """One download per URL at a time, across processes."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _scheme(url: str) -> str:
    if "://" not in url:
        return "file"  # a plain path, as a user types it for a local tarball
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in SCHEMES:
        raise FetchError(
            f"unsupported URL {url}",
            "use file://, http://, https:// or ftp://",
            url=url,
        )
    return scheme


def _local_path(url: str) -> str:
    if "://" not in url:
        return os.path.abspath(url)
    parts = urllib.parse.urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise FetchError(
            f"file URL names another host: {url}",
            "use file:///path (three slashes) for a file on this host",
            url=url,
        )
    return urllib.request.url2pathname(parts.path)


def _check_digest(sha256: str | None) -> str | None:
    if sha256 is None:
        return None
    digest = sha256.lower()
    if len(digest) != 64 or not HEX.issuperset(digest):
        raise FetchError(
            f"not a sha256 digest: {sha256!r}",
            "a sha256 pin is 64 hexadecimal digits (sha256sum prints it)",
        )
    return digest


# --- the fetcher ---------------------------------------------------------------------


class Fetcher:
    """Fetches URLs into the cache under `cache_dir`, with timeouts, retries and resume.

    `retries` is the number of attempts after the first; attempt n waits about
    `backoff * 2**n` seconds before it (with jitter, so a fleet does not retry in step).
    """

    def __init__(
        self,
        cache_dir: str,
        *,
        connect_timeout: float = 10,
        read_timeout: float = 30,
        retries: int = 3,
        backoff: float = 0.5,
        progress: Progress | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.cache_dir = cache_dir
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.retries = max(0, retries)
        self.backoff = backoff
        self.progress = progress or Progress()
        self.sleep = sleep
        self._opener = urllib.request.build_opener(
            _HTTPHandler(read_timeout), _HTTPSHandler(read_timeout), _PassErrors()
        )

    # -- paths

    def _dir(self, name: str) -> str:
        path = os.path.join(self.cache_dir, name)
        os.makedirs(path, mode=0o755, exist_ok=True)
        return path

    def cache_path(self, sha256: str) -> str:
        """Where a file with this sha256 lives in the cache (whether or not it is there)."""
        digest = _check_digest(sha256)  # never a path: "../x" must not leave the cache
        assert digest is not None
        return os.path.join(self.cache_dir, "sha256", digest)

    def cached(self, sha256: str) -> str | None:
        """The cached file with this sha256, or None."""
        path = self.cache_path(sha256)
        return path if os.path.isfile(path) else None

    # -- packages

    def fetch(
        self, url: str, *, sha256: str | None, size: int | None = None, name: str = ""
    ) -> str:
        """The path of the cached file that `url` holds, fetching it unless cached.

        With `sha256` the bytes are checked before they enter the cache (HashMismatch);
        without it (a local tarball named by the user) they are stored by their own hash.
        `size`, when known, caps the download and must match.
        """
        expected = _check_digest(sha256)
        if expected and (hit := self.cached(expected)):
            return hit
        scheme = _scheme(url)
        name = name or display_name(url)
        part = _Partial(self._dir("partial"), url)
        with _locked(part.lock_path):
            if expected and (hit := self.cached(expected)):
                return hit  # another process fetched it while we waited
            started = time.monotonic()
            try:
                if scheme == "file":
                    self._copy_local(url, part, name, size)
                else:
                    part.load()
                    attempt = self._http_attempt if scheme != "ftp" else self._ftp_attempt
                    self._retrying(url, name, lambda: attempt(url, part, name, size))
                path = self._commit(part, url, name, expected, size)
            except NotFound:
                part.remove()
                self.progress.abort(name, url)
                raise
            except BaseException:
                part.close()
                self.progress.abort(name, url)
                raise
        self.progress.done(name, url, os.path.getsize(path), time.monotonic() - started)
        return path

    def _commit(
        self, part: _Partial, url: str, name: str, expected: str | None, size: int | None
    ) -> str:
        """Verify, then move the finished download into the cache."""
        actual = part.hasher.hexdigest()
        if expected and actual != expected:
            part.remove()
            raise HashMismatch(name, url, expected, actual)
        if size is not None and part.size != size:
            part.remove()
            raise FetchError(
                f"size mismatch for {name} from {url}: expected {size} bytes, got {part.size}",
                "the file was truncated or replaced, or the size pin is wrong",
                url=url,
            )
        part.finish()
        part.close()
        final = os.path.join(self._dir("sha256"), actual)
        os.chmod(part.path, 0o644)
        os.replace(part.path, final)
        part.remove()  # the sidecar
        dfd = os.open(os.path.dirname(final), os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        return final

    def _retrying(self, url: str, name: str, attempt: Callable[[], T]) -> T:
        reason = ""
        for n in range(self.retries + 1):
            try:
                return attempt()
            except _Transient as e:
                reason = str(e)
                if n == self.retries:
                    break
                # Jitter: thousands of hosts that failed together must not retry together.
                delay = self.backoff * 2**n * random.uniform(0.5, 1.0)  # noqa: S311
                self.progress.retry(name, url, reason, delay)
                self.sleep(delay)
        attempts = self.retries + 1
        raise FetchError(
            f"could not fetch {url}: {reason} ({attempts} attempt{'s' if attempts > 1 else ''})",
            NETWORK_HINT,
            url=url,
        )

    def _receive(self, part: _Partial, data: bytes, url: str, size: int | None) -> None:
        if size is not None and part.size + len(data) > size:
            part.remove()
            raise FetchError(
                f"{url} is larger than the expected {size} bytes",
                "the file was replaced, or the size pin is wrong",
                url=url,
            )
        part.write(data)
        self.progress.advance(len(data))

    def _copy_local(self, url: str, part: _Partial, name: str, size: int | None) -> None:
        path = _local_path(url)
        try:
            src = open(path, "rb")  # noqa: SIM115 (closed below)
        except FileNotFoundError:
            raise NotFound(url) from None
        except OSError as e:
            raise FetchError(
                f"cannot read {path}: {e.strerror}",
                "check the path and its permissions (is the medium mounted?)",
                url=url,
            ) from e
        with src:
            part.reset()
            self.progress.start(name, url, os.fstat(src.fileno()).st_size)
            try:
                while data := src.read(CHUNK * 16):
                    self._receive(part, data, url, size)
            except OSError as e:
                raise FetchError(
                    f"cannot read {path}: {e.strerror}",
                    "the medium may be failing: copy the file elsewhere and retry",
                    url=url,
                ) from e

    # -- HTTP

    def _open(self, url: str, headers: dict[str, str]) -> http.client.HTTPResponse:
        """One request; network failures become _Transient, never a bare OSError."""
        request = urllib.request.Request(  # noqa: S310 (the scheme was checked)
            url, headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **headers}
        )
        try:
            response: http.client.HTTPResponse = self._opener.open(
                request, timeout=self.connect_timeout
            )
        except urllib.error.HTTPError as e:  # a redirect that went wrong
            e.close()
            raise _http_status_error(url, e.code, e.reason) from None
        except urllib.error.URLError as e:
            if isinstance(e.reason, ssl.SSLCertVerificationError):
                raise FetchError(
                    f"cannot verify the certificate of {url}: {e.reason.verify_message}",
                    "check the URL and the host's CA certificates",
                    url=url,
                ) from e
            raise _Transient(_reason(e, self.read_timeout)) from e
        except (OSError, http.client.HTTPException) as e:
            raise _Transient(_reason(e, self.read_timeout)) from e
        except ValueError as e:
            raise FetchError(f"invalid URL {url}: {e}", "check the URL", url=url) from e
        return response

    def _read(self, response: http.client.HTTPResponse) -> bytes:
        # read1, not read: read(n) waits for all n bytes, and what had arrived before a
        # timeout would be lost instead of kept for the resume.
        try:
            return response.read1(CHUNK)
        except (OSError, http.client.HTTPException) as e:
            raise _Transient(_reason(e, self.read_timeout)) from e

    def _http_attempt(self, url: str, part: _Partial, name: str, size: int | None) -> None:
        offset = part.size
        headers = {}
        if offset and part.validator:
            headers = {"Range": f"bytes={offset}-", "If-Range": part.validator}
        elif offset:
            part.reset()  # nothing proves the server's file is still the same: start over
            offset = 0
        with self._open(url, headers) as response:
            status = response.status
            if status == 416 and offset:
                _, total = _content_range(response.headers.get("Content-Range"))
                if total == offset:
                    return  # everything had arrived before the last run stopped
                part.reset()
                raise _Transient("the server cannot resume this download; starting over")
            if status not in (200, 206):
                raise _http_status_error(url, status, response.reason)
            if status == 206:
                first, total = _content_range(response.headers.get("Content-Range"))
                if first != offset:
                    part.reset()
                    raise _Transient("the server resumed at the wrong offset; starting over")
            else:
                if offset:
                    part.reset()  # the file changed, or the server ignores Range
                total = _content_length(response.headers)
            expected_length = _content_length(response.headers)
            part.begin(_strong_validator(response.headers))
            self.progress.start(name, url, total, part.size)
            received = 0
            try:
                while data := self._read(response):
                    self._receive(part, data, url, size)
                    received += len(data)
            finally:
                part.save()
            # http.client returns a short body silently when the peer closes early.
            if expected_length is not None and received < expected_length:
                raise _Transient(
                    f"the connection closed after {received} of {expected_length} bytes"
                )

    # -- FTP

    def _ftp_attempt(self, url: str, part: _Partial, name: str, size: int | None) -> None:
        path = _ftp_path(url)
        try:
            with _ftp_session(url, self.connect_timeout, self.read_timeout) as ftp:
                length = _ftp_query(ftp, f"SIZE {path}")
                total = int(length) if length and length.isdigit() else None
                mdtm = _ftp_query(ftp, f"MDTM {path}")
                validator = f"{mdtm} {total}" if mdtm is not None and total is not None else None
                if part.size and (validator is None or validator != part.validator):
                    part.reset()  # the file changed, or nothing proves it did not
                if total is not None and part.size > total:
                    part.reset()
                if part.size and part.size == total:
                    return  # everything had arrived before the last run stopped
                offset = part.size
                part.begin(validator)
                self.progress.start(name, url, total, offset)
                try:
                    ftp.retrbinary(
                        f"RETR {path}",
                        lambda data: self._receive(part, data, url, size),
                        blocksize=CHUNK,
                        rest=offset or None,
                    )
                finally:
                    part.save()
        except ftplib.error_perm as e:
            if _ftp_code(e) != "550" and part.size:
                # Most likely REST refused: start over from the first byte.
                part.reset()
                raise _Transient(f"the FTP server refused to resume ({e}); starting over") from e
            raise _ftp_failure(url, e, self.read_timeout) from e
        except (ftplib.Error, OSError, EOFError) as e:
            raise _ftp_failure(url, e, self.read_timeout) from e
        if total is not None and part.size < total:
            raise _Transient(f"the transfer ended after {part.size} of {total} bytes")

    # -- small files

    def get_index(self, url: str) -> bytes | None:
        """A small index file, revalidated with one conditional request; None if absent.

        The last body and its validators are kept in `CACHE/meta/`; a 304 (HTTP) or an
        unchanged MDTM and SIZE (FTP) answers from there.
        """
        scheme = _scheme(url)
        if scheme == "file":
            return self._read_local(url)
        meta_path = os.path.join(self._dir("meta"), _url_key(url) + ".json")
        meta = _load_meta(meta_path, url)
        name = display_name(url)
        try:
            if scheme == "ftp":
                body, new_meta = self._retrying(url, name, lambda: self._ftp_small(url, meta))
            else:
                body, new_meta = self._retrying(url, name, lambda: self._http_small(url, meta))
        except NotFound:
            _remove(meta_path)
            return None
        if new_meta is not None and new_meta is not meta:
            write_atomic(meta_path, json.dumps(new_meta) + "\n")
        elif new_meta is None:
            _remove(meta_path)
        return body

    def get_text(self, url: str) -> bytes | None:
        """A small file, fetched whole every time; None if absent."""
        scheme = _scheme(url)
        if scheme == "file":
            return self._read_local(url)
        name = display_name(url)
        try:
            if scheme == "ftp":
                body, _ = self._retrying(url, name, lambda: self._ftp_small(url, None))
            else:
                body, _ = self._retrying(url, name, lambda: self._http_small(url, None))
        except NotFound:
            return None
        return body

    def _read_local(self, url: str) -> bytes | None:
        path = _local_path(url)
        try:
            with open(path, "rb") as f:
                body = f.read(SMALL_LIMIT + 1)
            _check_small(url, len(body))  # refused with the limit named, never cut
            return body
        except FileNotFoundError:
            return None
        except OSError as e:
            raise FetchError(
                f"cannot read {path}: {e.strerror}",
                "check the path and its permissions",
                url=url,
            ) from e

    def _http_small(
        self, url: str, meta: dict[str, Any] | None
    ) -> tuple[bytes, dict[str, Any] | None]:
        headers = {}
        if meta is not None:
            if meta.get("etag"):
                headers["If-None-Match"] = meta["etag"]
            if meta.get("last_modified"):
                headers["If-Modified-Since"] = meta["last_modified"]
        with self._open(url, headers) as response:
            if response.status == 304 and meta is not None:
                return _meta_body(meta), meta
            if response.status != 200:
                raise _http_status_error(url, response.status, response.reason)
            expected_length = _content_length(response.headers)
            body = bytearray()
            while data := self._read(response):
                body += data
                _check_small(url, len(body))
            if expected_length is not None and len(body) < expected_length:
                raise _Transient(
                    f"the connection closed after {len(body)} of {expected_length} bytes"
                )
            etag = response.headers.get("ETag")
            modified = response.headers.get("Last-Modified")
        if not etag and not modified:
            return bytes(body), None  # nothing to revalidate with: do not keep it
        return bytes(body), _new_meta(url, bytes(body), etag=etag, last_modified=modified)

    def _ftp_small(
        self, url: str, meta: dict[str, Any] | None
    ) -> tuple[bytes, dict[str, Any] | None]:
        path = _ftp_path(url)
        body = bytearray()

        def receive(data: bytes) -> None:
            body.extend(data)
            _check_small(url, len(body))

        try:
            with _ftp_session(url, self.connect_timeout, self.read_timeout) as ftp:
                if meta is not None:
                    mdtm = _ftp_query(ftp, f"MDTM {path}")
                    length = _ftp_query(ftp, f"SIZE {path}")
                    validator = f"{mdtm} {length}" if mdtm and length else None
                    if validator and validator == meta.get("validator"):
                        return _meta_body(meta), meta
                ftp.retrbinary(f"RETR {path}", receive, blocksize=CHUNK)
                # After the transfer, so they describe what was read (or something newer,
                # which only costs one extra download next time).
                mdtm = _ftp_query(ftp, f"MDTM {path}")
                length = _ftp_query(ftp, f"SIZE {path}")
        except (ftplib.Error, OSError, EOFError) as e:
            raise _ftp_failure(url, e, self.read_timeout) from e
        if length is not None and length.isdigit() and len(body) < int(length):
            raise _Transient(f"the transfer ended after {len(body)} of {length} bytes")
        validator = f"{mdtm} {length}" if mdtm and length else None
        if validator is None:
            return bytes(body), None
        return bytes(body), _new_meta(url, bytes(body), validator=validator)


def _check_small(url: str, nbytes: int) -> None:
    if nbytes > SMALL_LIMIT:
        raise FetchError(
            f"{url} is larger than {SMALL_LIMIT >> 20} MiB: not an index file",
            "check the URL",
            url=url,
        )


def _new_meta(url: str, body: bytes, **validators: str | None) -> dict[str, Any]:
    return {
        "url": url,
        **validators,
        "sha256": hashlib.sha256(body).hexdigest(),
        "body": base64.b64encode(body).decode("ascii"),
    }


def _load_meta(path: str, url: str) -> dict[str, Any] | None:
    """The kept index and its validators, if present, for this URL and intact."""
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
        if not isinstance(meta, dict) or meta.get("url") != url:
            return None
        body = _meta_body(meta)
    except (OSError, ValueError, TypeError, KeyError):
        return None
    if hashlib.sha256(body).hexdigest() != meta.get("sha256"):
        return None
    return meta


def _meta_body(meta: dict[str, Any]) -> bytes:
    return base64.b64decode(meta["body"], validate=True)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
