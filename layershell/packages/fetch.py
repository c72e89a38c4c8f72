"""Fetch: bytes from file://, http(s):// and ftp:// into a content-addressed cache.

Packages land in `CACHE/sha256/<hex>` once complete and verified, so a package already
fetched costs no network at all. A download in progress lives in
`CACHE/partial/<sha256 of url>.part` next to a small JSON sidecar (URL, validator, bytes so
far): an interrupted download resumes where it stopped, on the next attempt or on the next
run (HTTP `Range` guarded by `If-Range`, FTP `REST`). Small index files are fetched with
conditional requests against `CACHE/meta/<sha256 of url>.json`, so a fleet polling one
static server costs it a single 304 per host and poll.

Every download has limits besides the read timeout: a deadline (an average of at least
1 KiB/s, never less than 60 s) and a size cap (the index's size, else 4 GiB), checked
before the body when the server announces a length and while it streams. A redirect may
not change the protocol. Logins come from a netrc-format credentials file of the
fetching account, never from a URL; no password reaches a message, a progress line or
the cache. A failure that cannot be resumed keeps nothing; `prune_cache` removes what
dead runs left. docs/repository.md, "Fetching", has the rules.

Only kept libraries talk the protocols: urllib/http.client for HTTP(S), ftplib for FTP.
"""

from __future__ import annotations

import base64
import errno
import fcntl
import ftplib
import hashlib
import http.client
import json
import os
import random
import shlex
import socket
import ssl
import stat
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import Message
from typing import IO, Any, TextIO, TypeVar

from layershell import __version__, names
from layershell.atomic import write_atomic
from layershell.errors import LayershellError
from layershell.layers.sandbox import CREDENTIAL_FILES
from layershell.packages.repo import (
    CREDENTIALS_FILE,
    credentials_refusal,
    has_credentials,
    redact_url,
)
from layershell.packages.verify import HashMismatch, display_name

CHUNK = 64 * 1024
SMALL_LIMIT = 16 << 20  # index and text files: anything bigger is not an index
USER_AGENT = f"layershell/{__version__}"
SCHEMES = names.SCHEMES
HEX = frozenset("0123456789abcdef")
DEFAULT_PORTS = {"http": 80, "https": 443, "ftp": 21}

# Limits of one download (docs/repository.md, "Fetching"); each has its variable.
MIN_RATE = 1024  # bytes per second, averaged over the whole download
GRACE = 60.0  # seconds: no deadline is shorter, no average is judged before
MAX_SIZE = 4 << 30  # bytes, when neither the index nor the caller knows the size
MIN_RATE_ENV = "LAYERSHELL_FETCH_MIN_RATE"
GRACE_ENV = "LAYERSHELL_FETCH_GRACE"
MAX_SIZE_ENV = "LAYERSHELL_FETCH_MAX_SIZE"
CREDENTIALS_LIMIT = 64 << 10

T = TypeVar("T")

NETWORK_HINT = (
    "check the network and that the server is up, then retry later; "
    "a partial download resumes where it stopped"
)


class FetchError(LayershellError):
    """A URL could not be fetched. `url` names it; the message says what happened.

    `resumable`: the failure was the network's (retries ran out), so a partial download
    with a strong validator is kept for the next attempt; every other failure keeps
    nothing.
    """

    exit_code = 1

    def __init__(
        self, message: str, hint: str = "", *, url: str = "", resumable: bool = False
    ) -> None:
        super().__init__(message, hint)
        self.url = url
        self.resumable = resumable


SHORT_HINT = (
    "the server's file is cut short or was replaced, or its index is out of date"
    " (core repo index DIR rebuilds it); the installed version is kept"
)


class ShortDownload(HashMismatch):
    """A complete answer shorter than the index's size: a HashMismatch (callers keep
    treating it as one) whose message leads with the sizes."""

    def __init__(
        self, name: str, url: str, expected: str, actual: str, got: int, size: int
    ) -> None:
        super().__init__(name, url, expected, actual)
        self.message = (
            f"{url}: the server sent {got} of the {size} bytes the index records ({self.message})"
        )
        self.hint = SHORT_HINT


class CredentialsError(FetchError):
    """The credentials file is unsafe or malformed. The message never quotes it."""

    exit_code = 2


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


# --- limits --------------------------------------------------------------------------


def _amount(n: float) -> str:
    """Bytes in the largest binary unit that divides them: 4 GiB, 1 KiB, 1000 bytes."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{int(n) >> shift} {unit}"
    return f"{n:g} bytes"


def _env_number(name: str, default: float, env: dict[str, str] | None = None) -> float:
    text = (os.environ if env is None else env).get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise LayershellError(
            f"{name}={text!r} is not a number of 0 or more",
            f"unset it, or write a plain number, as in {name}={default:g}",
            exit_code=2,
        )
    return value


class _Budget:
    """The limits of one download: how big it may be and how slow.

    `size` (the index's, or the manifest's) caps the download and is what it must be;
    without it the cap is `max_size` and the expected size is what the server announces.
    Deadline with an expected size: max(grace, size / min_rate) seconds from the start;
    without one, after `grace` seconds the average rate must stay at least `min_rate`.
    """

    def __init__(
        self,
        url: str,
        size: int | None,
        *,
        max_size: int,
        min_rate: float,
        grace: float,
        clock: Callable[[], float],
    ) -> None:
        self.url = url
        self.size = size
        self.cap = size if size is not None else max_size
        self.expected = size
        self.min_rate = min_rate
        self.grace = grace
        self.clock = clock
        self.started = clock()
        self.received = 0

    def announced(self, total: int | None) -> None:
        """The server says the whole file is `total` bytes: refuse it now if over."""
        if total is None:
            return
        if total > self.cap:
            if self.size is not None:
                raise FetchError(
                    f"{self.url} is larger than the expected {self.size} bytes"
                    f" (the server announces {total})",
                    "the file was replaced, or the size pin is wrong",
                    url=self.url,
                )
            raise FetchError(
                f"{self.url} is {total} bytes, more than the limit of {_amount(self.cap)}"
                " for one download",
                self._cap_hint(),
                url=self.url,
            )
        if self.expected is None:
            self.expected = total

    def over(self) -> FetchError:
        """The body went past the cap while streaming."""
        if self.size is not None:
            return FetchError(
                f"{self.url} is larger than the expected {self.size} bytes",
                "the file was replaced, or the size pin is wrong",
                url=self.url,
            )
        return FetchError(
            f"{self.url} is larger than the limit of {_amount(self.cap)} for one download",
            self._cap_hint(),
            url=self.url,
        )

    def _cap_hint(self) -> str:
        return (
            "publish an index that records the file's size (core repo index DIR), or"
            f" raise the limit: {MAX_SIZE_ENV}=BYTES"
        )

    def check(self) -> None:
        """Abandon the download when it is too slow (a final error: nothing is kept)."""
        if self.min_rate <= 0:
            return
        elapsed = self.clock() - self.started
        if self.expected is not None:
            if elapsed <= max(self.grace, self.expected / self.min_rate):
                return
            shown = f"{self.received} of {self.expected} bytes"
        else:
            if elapsed <= self.grace or self.received >= self.min_rate * elapsed:
                return
            shown = f"{self.received} bytes"
        raise FetchError(
            f"{self.url} gave {shown} in {elapsed:.0f} s, slower than the minimum"
            f" {_amount(self.min_rate)}/s; the download was abandoned",
            "the server or the network is too slow: retry later, or lower the minimum"
            f" ({MIN_RATE_ENV}=BYTES_PER_SECOND, 0 for none; {GRACE_ENV}=SECONDS is the"
            " shortest deadline)",
            url=self.url,
        )


# --- credentials ---------------------------------------------------------------------


@dataclass(frozen=True)
class Login:
    """One `machine` entry of a credentials file; `where` is FILE:LINE for messages."""

    host: str
    port: int | None
    login: str
    password: str = field(repr=False)
    where: str = ""


def credential_files(home: str | None = None) -> tuple[str, ...]:
    """Where the fetching account's logins live, in order: the first that exists is
    the one read (~/.config/layershell/credentials, then ~/.netrc)."""
    home = os.path.expanduser("~") if home is None else home
    return tuple(os.path.join(home, name) for name in CREDENTIAL_FILES)


def _refuse(path: str, problem: str, hint: str) -> CredentialsError:
    return CredentialsError(f"{path} {problem}: not used", hint)


def read_credentials(path: str) -> list[Login] | None:
    """The logins in a netrc-format file, or None when it does not exist.

    Refused (CredentialsError) unless it is a regular file, not a link, owned by this
    account and not readable or writable by anyone else. No message quotes its text.
    """
    mine = "make it a regular file of this account with mode 0600, or remove it"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise _refuse(path, "is a symbolic link", mine) from None
        raise CredentialsError(f"cannot read {path}: {e.strerror}", mine) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _refuse(path, "is not a regular file", mine)
        if st.st_uid != os.geteuid():
            raise _refuse(
                path,
                f"belongs to uid {st.st_uid}, not to this account (uid {os.geteuid()})",
                mine,
            )
        if st.st_mode & 0o077:
            raise _refuse(
                path,
                f"may be read or changed by others (mode {stat.S_IMODE(st.st_mode):04o})",
                f"chmod 600 {path}",
            )
        data = b""
        while len(data) <= CREDENTIALS_LIMIT and (block := os.read(fd, 1 << 16)):
            data += block
    finally:
        os.close(fd)
    if len(data) > CREDENTIALS_LIMIT:
        raise _refuse(path, f"is larger than {_amount(CREDENTIALS_LIMIT)}", "check the file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _refuse(path, "is not UTF-8 text", "check the file") from None
    return _parse_netrc(text, path)


def _machine(text: str) -> tuple[str, int | None]:
    """(host, port or None) of a `machine` word: host, host:port, [v6]:port, v6."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
        return host.lower(), int(port) if port.isdigit() else None
    host, sep, port = text.rpartition(":")
    if sep and port.isdigit() and ":" not in host:
        return host.lower(), int(port)
    return text.lower(), None


def _parse_netrc(text: str, path: str) -> list[Login]:
    """netrc: `machine HOST login USER password PASS` (any layout), `#` comment lines,
    `macdef` blocks skipped. `default` entries are ignored: a login goes only to a host
    the file names. Errors name FILE:LINE, never a word of the file."""
    words: list[tuple[int, str]] = []
    in_macro = False
    for number, line in enumerate(text.splitlines(), 1):
        if in_macro:
            in_macro = bool(line.strip())
            continue
        if line.lstrip().startswith("#"):
            continue
        try:
            tokens = shlex.split(line, posix=True)
        except ValueError:
            raise _refuse(
                f"{path}:{number}:", "has an unbalanced quote", "check the line"
            ) from None
        for word in tokens:
            if word == "macdef":
                in_macro = True
                break
            words.append((number, word))
    entries: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    i = 0
    while i < len(words):
        number, word = words[i]
        i += 1
        if word in ("machine", "default"):
            current = {"line": number, "default": word == "default"}
            entries.append(current)
            if word == "default":
                continue
        elif word not in ("login", "password", "account"):
            raise _refuse(
                f"{path}:{number}:",
                "has an unexpected word (expected machine, login, password, account,"
                " macdef or default)",
                "write: machine HOST login USER password PASS",
            )
        elif current is None:
            raise _refuse(f"{path}:{number}:", f"has {word} before any machine", "check the file")
        if i >= len(words):
            raise _refuse(f"{path}:{number}:", f"has {word} without a value", "check the file")
        current[word] = words[i][1]
        i += 1
    logins = []
    for entry in entries:
        if entry["default"] or "login" not in entry:
            continue
        host, port = _machine(entry["machine"])
        where = f"{path}:{entry['line']}"
        logins.append(Login(host, port, entry["login"], entry.get("password", ""), where))
    return logins


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or DEFAULT_PORTS.get(scheme)
    except ValueError:
        port = None
    return scheme, (parts.hostname or "").lower(), port


# --- redirects -----------------------------------------------------------------------


def redirect_refusal(old: str, new: str) -> str | None:
    """Why a redirect from `old` to `new` is not followed, or None. Only http(s) to
    http(s), never from https down to http, never with a password in it."""
    before = urllib.parse.urlsplit(old).scheme.lower()
    after = urllib.parse.urlsplit(new).scheme.lower()
    if after not in ("http", "https") or (before == "https" and after != "https"):
        return f"a redirect may not change the protocol from {before} to {after or 'none'}"
    if has_credentials(new) or "@" in urllib.parse.urlsplit(new).netloc:
        return "a redirect may not carry a user name or password"
    return None


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only when `redirect_refusal` allows it, and carries the login
    (an unredirected header) only to the same scheme, host and port."""

    def http_error_302(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
    ) -> Any:
        location = headers.get("Location") or headers.get("URI")
        if location is not None:
            new = urllib.parse.urljoin(req.full_url, location)
            reason = redirect_refusal(req.full_url, new)
            if reason is not None:
                fp.close()
                raise FetchError(
                    f"{redact_url(req.full_url)} redirects to {redact_url(new)}: {reason}",
                    "the server sends this download elsewhere: if that place is right,"
                    " name it as the repository instead",
                    url=req.full_url,
                )
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        auth = req.unredirected_hdrs.get("Authorization")
        if new is not None and auth and _origin(req.full_url) == _origin(new.full_url):
            new.add_unredirected_header("Authorization", auth)
        return new


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
        from layershell.ui import printable  # a reason is the server's words

        stream = self.stream or sys.stderr
        stream.write(printable(text) + "\n")
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

            from layershell.ui import printable

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
            self._task = self._bar.add_task(printable(name), total=total, completed=offset)
        else:
            self._bar.update(self._task, total=total, completed=offset)

    def advance(self, nbytes: int) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, nbytes)

    def retry(self, name: str, url: str, reason: str, delay: float) -> None:
        from layershell.ui import printable  # a reason is the server's words

        self.console.print(printable(f"retrying {name} in {delay:.1f} s: {reason}"))

    def done(self, name: str, url: str, nbytes: int, seconds: float) -> None:
        from layershell.ui import printable

        self._stop()
        self.console.print(printable(f"fetched {name}: {nbytes} bytes in {seconds:.1f} s"))

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


def _http_status_error(url: str, status: int, reason: str, login: Login | None = None) -> Exception:
    """What a non-success status means: NotFound, a final FetchError, or _Transient."""
    if status in (404, 410):
        return NotFound(url)
    if status in (408, 425, 429) or status >= 500:
        return _Transient(f"HTTP {status} {reason}".rstrip())
    if status in (401, 403):
        if login is not None:
            hint = f"the server refused the login of {login.where}: check it"
        elif status == 401:
            hint = (
                f"the server wants a login: put it in {CREDENTIALS_FILE}"
                " (machine HOST login USER password PASS, mode 0600)"
            )
        else:
            hint = "check the URL and that the server lets this host read it"
        return FetchError(f"access denied (HTTP {status}): {url}", hint, url=url)
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
def _ftp_session(
    url: str, connect_timeout: float, read_timeout: float, login: Login | None
) -> Iterator[ftplib.FTP]:
    parts = urllib.parse.urlsplit(url)
    if login is not None:
        user, password = login.login, login.password
    else:  # a user name alone may be in the URL; a password never is
        user, password = urllib.parse.unquote(parts.username or "anonymous"), "anonymous@"
    # S321: ftp:// is one of the transports users choose; the sha256 pin, not the
    # channel, is what protects the bytes.
    with ftplib.FTP(timeout=connect_timeout) as ftp:  # noqa: S321
        ftp.connect(parts.hostname or "localhost", parts.port or 21)
        try:
            ftp.login(user, password)
        except ftplib.error_perm as e:
            if login is not None:
                hint = f"check the login of {login.where}"
            else:
                hint = (
                    f"the server wants a login: put it in {CREDENTIALS_FILE}"
                    " (machine HOST login USER password PASS, mode 0600)"
                )
            raise FetchError(
                f"the FTP server refused the login for {url}: {e}", hint, url=url
            ) from None
        # From here on every wait (replies, data connections) is an idle wait.
        ftp.timeout = read_timeout
        if ftp.sock is not None:
            ftp.sock.settimeout(read_timeout)
        ftp.voidcmd("TYPE I")
        yield ftp


# --- the partial download ------------------------------------------------------------


def _url_key(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()


def _disk_error(path: str, exc: OSError, url: str, cache_dir: str) -> FetchError:
    """A failed write to the cache, naming the file and what to free."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        what = "no space left on the device" if exc.errno == errno.ENOSPC else "over the quota"
        return FetchError(
            f"cannot write {path}: {what}",
            f"free space where the cache is ({cache_dir}): `core gc --partial` removes"
            " unfinished downloads, `core gc` packages no longer installed; then retry",
            url=url,
        )
    return FetchError(
        f"cannot write {path}: {exc.strerror or exc}",
        f"check that this account may write {cache_dir}, then retry",
        url=url,
    )


@contextmanager
def _writing(path: str, url: str, cache_dir: str) -> Iterator[None]:
    try:
        yield
    except OSError as e:
        raise _disk_error(path, e, url, cache_dir) from None


class _Partial:
    """A download in progress: the .part file, its JSON sidecar and the running sha256.

    The hash covers exactly the bytes in the file, so the digest is ready when the last
    byte arrives; a resumed download hashes what is already there once, at the start.
    The file is unbuffered, so a full disk is seen at the write that hit it.
    """

    def __init__(self, directory: str, url: str) -> None:
        key = _url_key(url)
        self.url = url
        self.cache_dir = os.path.dirname(directory)
        self.path = os.path.join(directory, key + ".part")
        self.sidecar = os.path.join(directory, key + ".json")
        self.lock_path = os.path.join(directory, key + ".lock")
        self.validator: str | None = None
        self.size = 0
        self.hasher = hashlib.sha256()
        self._file: Any = None  # an unbuffered FileIO

    def load(self) -> None:
        """Pick up what an earlier attempt left, if it was for this very URL."""
        try:
            with open(self.sidecar, encoding="utf-8") as f:
                state = json.load(f)
            if not isinstance(state, dict) or state.get("url") != self.url:
                raise ValueError("sidecar of another URL")
            validator = state.get("validator")
            self.validator = validator if isinstance(validator, str) else None
            self._file = open(self.path, "r+b", buffering=0)  # noqa: SIM115 (close())
        except (OSError, ValueError):
            self.reset()
            return
        while block := self._file.read(CHUNK * 16):
            self.hasher.update(block)
        self.size = self._file.tell()

    def reset(self) -> None:
        """Start over: an empty file, no validator."""
        with _writing(self.path, self.url, self.cache_dir):
            if self._file is None:
                self._file = open(self.path, "w+b", buffering=0)  # noqa: SIM115 (close())
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
        view = memoryview(data)
        with _writing(self.path, self.url, self.cache_dir):
            while view:
                view = view[self._file.write(view) :]
        self.hasher.update(data)
        self.size += len(data)

    def save(self) -> None:
        if self._file is None:
            return  # removed (or never begun): nothing to describe
        state = {"url": self.url, "validator": self.validator, "bytes": self.size}
        with _writing(self.sidecar, self.url, self.cache_dir):
            write_atomic(self.sidecar, json.dumps(state) + "\n")

    def finish(self) -> None:
        """Make the bytes durable before the file is renamed into the cache."""
        assert self._file is not None
        with _writing(self.path, self.url, self.cache_dir):
            os.fsync(self._file.fileno())

    @property
    def resumable(self) -> bool:
        """Worth keeping for the next attempt: bytes, and a validator that proves them."""
        return bool(self.validator) and self.size > 0

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def remove(self) -> None:
        self.close()
        for path in (self.path, self.sidecar):
            _remove(path)


def _same_file(fd: int, path: str) -> bool:
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


@contextmanager
def _locked(path: str) -> Iterator[None]:
    """One download per URL at a time, across processes. The lock file is removed on
    the way out (while held), so none piles up; a waiter that then holds the lock of a
    removed file opens the path again."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if _same_file(fd, path):
                break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    try:
        yield
    finally:
        _remove(path)
        os.close(fd)


def _scheme(url: str) -> str:
    if "://" not in url:
        return "file"  # a plain path, as a user types it for a local tarball
    if has_credentials(url):  # the URL checks refuse these; nothing may slip through
        raise FetchError(credentials_refusal(url), f"remove it from the URL; {_LOGIN_HINT}")
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in SCHEMES:
        raise FetchError(
            f"unsupported URL {url}",
            "use file://, http://, https:// or ftp://",
            url=url,
        )
    return scheme


_LOGIN_HINT = f"a login belongs in {CREDENTIALS_FILE} (machine HOST login USER password PASS)"


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


def _without_user(url: str) -> str:
    """`url` without a user name (`ftp://user@host/x` -> `ftp://host/x`) for urllib,
    which would take `user@host` for a host name."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


# --- the fetcher ---------------------------------------------------------------------


class Fetcher:
    """Fetches URLs into the cache under `cache_dir`, with timeouts, retries and resume.

    `retries` is the number of attempts after the first; attempt n waits about
    `backoff * 2**n` seconds before it (with jitter, so a fleet does not retry in step).
    `min_rate` (bytes/s, 0: none), `grace` (s) and `max_size` (bytes) are the limits of
    one download (None: $LAYERSHELL_FETCH_MIN_RATE, $LAYERSHELL_FETCH_GRACE,
    $LAYERSHELL_FETCH_MAX_SIZE, else 1 KiB/s, 60 s, 4 GiB). `credentials` lists the
    netrc-format files to take logins from, the first that exists counting (None: the
    account's ~/.config/layershell/credentials, then ~/.netrc).
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
        min_rate: float | None = None,
        grace: float | None = None,
        max_size: int | None = None,
        credentials: Sequence[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cache_dir = cache_dir
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.retries = max(0, retries)
        self.backoff = backoff
        self.progress = progress or Progress()
        self.sleep = sleep
        self.min_rate = min_rate if min_rate is not None else _env_number(MIN_RATE_ENV, MIN_RATE)
        self.grace = grace if grace is not None else _env_number(GRACE_ENV, GRACE)
        self.max_size = (
            max_size if max_size is not None else int(_env_number(MAX_SIZE_ENV, MAX_SIZE))
        )
        self.clock = clock
        self._credential_files = tuple(credentials) if credentials is not None else None
        self._logins: list[Login] | None = None
        self._opener = urllib.request.build_opener(
            _HTTPHandler(read_timeout), _HTTPSHandler(read_timeout), _PassErrors(), _Redirects()
        )

    # -- paths

    def _dir(self, name: str) -> str:
        path = os.path.join(self.cache_dir, name)
        with _writing(path, path, self.cache_dir):
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

    # -- logins

    def login_for(self, url: str) -> Login | None:
        """The credentials file's login for `url`'s host (and port, when the entry names
        one; a user name in the URL must match). Read once, at the first need."""
        if self._logins is None:
            files = self._credential_files
            logins: list[Login] = []
            for path in files if files is not None else credential_files():
                found = read_credentials(path)
                if found is not None:
                    logins = found
                    break
            self._logins = logins
        _, host, port = _origin(url)
        user = urllib.parse.urlsplit(url).username
        matches = [
            x
            for x in self._logins
            if x.host == host and x.port in (None, port) and user in (None, x.login)
        ]
        matches.sort(key=lambda x: x.port is None)  # host:port before a bare host
        return matches[0] if matches else None

    # -- packages

    def fetch(
        self, url: str, *, sha256: str | None, size: int | None = None, name: str = ""
    ) -> str:
        """The path of the cached file that `url` holds, fetching it unless cached.

        With `sha256` the bytes are checked before they enter the cache (HashMismatch);
        without it (a local tarball named by the user) they are stored by their own hash.
        `size`, when known, caps the download and must match; unknown, the cap is
        `max_size`. A failure that cannot be resumed removes the partial file.
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
            budget = _Budget(
                url, size, max_size=self.max_size, min_rate=self.min_rate,
                grace=self.grace, clock=self.clock,
            )  # fmt: skip
            started = time.monotonic()
            try:
                if scheme == "file":
                    self._copy_local(url, part, name, budget)
                else:
                    part.load()
                    attempt = self._http_attempt if scheme != "ftp" else self._ftp_attempt
                    self._retrying(url, name, lambda: attempt(url, part, name, budget), budget)
                path = self._commit(part, url, name, expected, size)
            except BaseException as e:
                # Kept only for a resume: the network failed (or we were interrupted)
                # and a strong validator proves the bytes. Caps, deadlines, 4xx, hash
                # and disk errors keep nothing.
                keep = (
                    e.resumable if isinstance(e, FetchError) else not isinstance(e, LayershellError)
                )
                if keep and part.resumable:
                    part.close()
                else:
                    part.remove()
                self.progress.abort(name, url)
                raise
        self.progress.done(name, url, os.path.getsize(path), time.monotonic() - started)
        return path

    def _commit(
        self, part: _Partial, url: str, name: str, expected: str | None, size: int | None
    ) -> str:
        """Verify, then move the finished download into the cache."""
        actual = part.hasher.hexdigest()
        if size is not None and part.size < size:
            # The server's whole answer (its own length, complete) is shorter than the
            # index says: a Content-Length that is too small, a file cut short or
            # replaced. Said first, so it never reads as a bare sha256 mismatch.
            if expected and actual != expected:
                raise ShortDownload(name, url, expected, actual, part.size, size)
            raise FetchError(
                f"{url}: the server sent {part.size} of the {size} bytes expected",
                SHORT_HINT,
                url=url,
            )
        if size is not None and part.size > size:
            raise FetchError(
                f"{url} is larger than the expected {size} bytes",
                "the file was replaced, or the size pin is wrong",
                url=url,
            )
        if expected and actual != expected:
            raise HashMismatch(name, url, expected, actual)
        part.finish()
        part.close()
        final = os.path.join(self._dir("sha256"), actual)
        with _writing(final, url, self.cache_dir):
            os.chmod(part.path, 0o644)
            os.replace(part.path, final)
            part.remove()  # the sidecar
            dfd = os.open(os.path.dirname(final), os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        return final

    def _retrying(
        self, url: str, name: str, attempt: Callable[[], T], budget: _Budget | None = None
    ) -> T:
        reason = ""
        for n in range(self.retries + 1):
            if budget is not None:
                budget.check()  # the deadline counts the back-off too
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
            resumable=True,
        )

    def _receive(self, part: _Partial, data: bytes, budget: _Budget) -> None:
        if part.size + len(data) > budget.cap:
            raise budget.over()
        part.write(data)
        budget.received += len(data)
        self.progress.advance(len(data))
        budget.check()

    def _copy_local(self, url: str, part: _Partial, name: str, budget: _Budget) -> None:
        path = _local_path(url)
        try:
            # As _read_local: a FIFO in the repository must not hold the layer's lock.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
        except FileNotFoundError:
            raise NotFound(url) from None
        except OSError as e:
            raise FetchError(
                f"cannot read {path}: {e.strerror}",
                "check the path and its permissions (is the medium mounted?)",
                url=url,
            ) from e
        src = os.fdopen(fd, "rb")
        with src:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise FetchError(f"{path} is not a regular file", "check the repository", url=url)
            part.reset()
            self.progress.start(name, url, os.fstat(src.fileno()).st_size)
            try:
                while data := src.read(CHUNK * 16):
                    self._receive(part, data, budget)
            except OSError as e:
                raise FetchError(
                    f"cannot read {path}: {e.strerror}",
                    "the medium may be failing: copy the file elsewhere and retry",
                    url=url,
                ) from e

    # -- HTTP

    def _open(
        self, url: str, headers: dict[str, str], login: Login | None = None
    ) -> http.client.HTTPResponse:
        """One request; network failures become _Transient, never a bare OSError."""
        request = urllib.request.Request(  # noqa: S310 (the scheme was checked)
            _without_user(url),
            headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **headers},
        )
        if login is not None:
            # Unredirected: _Redirects carries it only to the same scheme, host and port.
            token = base64.b64encode(f"{login.login}:{login.password}".encode()).decode()
            request.add_unredirected_header("Authorization", f"Basic {token}")
        try:
            response: http.client.HTTPResponse = self._opener.open(
                request, timeout=self.connect_timeout
            )
        except urllib.error.HTTPError as e:  # a redirect that went wrong
            e.close()
            raise _http_status_error(url, e.code, e.reason, login) from None
        except urllib.error.URLError as e:
            if isinstance(e.reason, ssl.SSLCertVerificationError):
                raise FetchError(
                    f"cannot verify the certificate of {url}: {e.reason.verify_message}",
                    "check the URL and the host's CA certificates",
                    url=url,
                ) from None
            raise _Transient(_reason(e, self.read_timeout)) from None
        except (OSError, http.client.HTTPException) as e:
            raise _Transient(_reason(e, self.read_timeout)) from None
        except ValueError as e:
            raise FetchError(f"invalid URL {url}: {e}", "check the URL", url=url) from None
        return response

    def _read(self, response: http.client.HTTPResponse) -> bytes:
        # read1, not read: read(n) waits for all n bytes, and what had arrived before a
        # timeout would be lost instead of kept for the resume.
        try:
            return response.read1(CHUNK)
        except (OSError, http.client.HTTPException) as e:
            raise _Transient(_reason(e, self.read_timeout)) from None

    def _http_attempt(self, url: str, part: _Partial, name: str, budget: _Budget) -> None:
        offset = part.size
        headers = {}
        if offset and part.validator:
            headers = {"Range": f"bytes={offset}-", "If-Range": part.validator}
        elif offset:
            part.reset()  # nothing proves the server's file is still the same: start over
            offset = 0
        login = self.login_for(url)
        with self._open(url, headers, login) as response:
            status = response.status
            if status == 416 and offset:
                _, total = _content_range(response.headers.get("Content-Range"))
                if total == offset:
                    return  # everything had arrived before the last run stopped
                part.reset()
                raise _Transient("the server cannot resume this download; starting over")
            if status not in (200, 206):
                raise _http_status_error(url, status, response.reason, login)
            if status == 206:
                first, total = _content_range(response.headers.get("Content-Range"))
                if first != offset:
                    part.reset()
                    raise _Transient("the server resumed at the wrong offset; starting over")
            else:
                if offset:
                    part.reset()  # the file changed, or the server ignores Range
                total = _content_length(response.headers)
            budget.announced(total)  # over the cap: refused before a byte of the body
            expected_length = _content_length(response.headers)
            part.begin(_strong_validator(response.headers))
            self.progress.start(name, url, total, part.size)
            received = 0
            try:
                while data := self._read(response):
                    self._receive(part, data, budget)
                    received += len(data)
            finally:
                part.save()
            # http.client returns a short body silently when the peer closes early.
            if expected_length is not None and received < expected_length:
                raise _Transient(
                    f"the connection closed after {received} of {expected_length} bytes"
                )

    # -- FTP

    def _ftp_attempt(self, url: str, part: _Partial, name: str, budget: _Budget) -> None:
        path = _ftp_path(url)
        try:
            with _ftp_session(
                url, self.connect_timeout, self.read_timeout, self.login_for(url)
            ) as ftp:
                length = _ftp_query(ftp, f"SIZE {path}")
                total = int(length) if length and length.isdigit() else None
                budget.announced(total)  # over the cap: refused before RETR
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
                        lambda data: self._receive(part, data, budget),
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
            with _writing(meta_path, url, self.cache_dir):
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
            # O_NONBLOCK: a FIFO put in the repository (by whoever can write to it) must
            # not block the operation, which holds the layer's lock, forever.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
            with os.fdopen(fd, "rb") as f:
                if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                    raise FetchError(
                        f"{path} is not a regular file", "check the repository", url=url
                    )
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

    def _small_budget(self, url: str) -> _Budget:
        """The deadline of one small file (an index, SHA256SUMS, its signature): the
        rate and grace of a download, so a server sending a byte within each read timeout
        cannot keep an operation (and the layer's lock) waiting for days."""
        return _Budget(
            url, None, max_size=SMALL_LIMIT, min_rate=self.min_rate, grace=self.grace,
            clock=self.clock,
        )  # fmt: skip

    def _http_small(
        self, url: str, meta: dict[str, Any] | None
    ) -> tuple[bytes, dict[str, Any] | None]:
        headers = {}
        if meta is not None:
            if meta.get("etag"):
                headers["If-None-Match"] = meta["etag"]
            if meta.get("last_modified"):
                headers["If-Modified-Since"] = meta["last_modified"]
        login = self.login_for(url)
        with self._open(url, headers, login) as response:
            if response.status == 304 and meta is not None:
                return _meta_body(meta), meta
            if response.status != 200:
                raise _http_status_error(url, response.status, response.reason, login)
            expected_length = _content_length(response.headers)
            budget = self._small_budget(url)
            budget.announced(expected_length)
            body = bytearray()
            while data := self._read(response):
                body += data
                _check_small(url, len(body))
                budget.received = len(body)
                budget.check()  # a mirror that trickles must not hold the lock forever
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
        budget = self._small_budget(url)

        def receive(data: bytes) -> None:
            body.extend(data)
            _check_small(url, len(body))
            budget.received = len(body)
            budget.check()

        try:
            with _ftp_session(
                url, self.connect_timeout, self.read_timeout, self.login_for(url)
            ) as ftp:
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


# --- cleaning up --------------------------------------------------------------------

_PARTIAL_SUFFIXES = (".part", ".json", ".lock")
TEMP_AGE = 3600.0  # a write_atomic temp file younger than this may still be in use


def prune_cache(cache_dir: str, *, older_than: float | None) -> list[str]:
    """Remove what unfinished downloads left in `CACHE/partial`: partial files, their
    sidecars and per-URL lock files, when no process holds the URL's lock (tried with
    LOCK_NB) and none of them changed in the last `older_than` seconds (None: whatever
    age). Returns one line per download removed, naming its file; a held one is left.
    """
    partial = os.path.join(cache_dir, "partial")
    try:
        names = os.listdir(partial)
    except FileNotFoundError:
        return []
    except OSError as e:
        raise FetchError(f"cannot read {partial}: {e.strerror}", "check its permissions") from e
    now = time.time()
    removed: list[str] = []
    keys = sorted(
        {
            n[: -len(x)]
            for n in names
            for x in _PARTIAL_SUFFIXES
            if n.endswith(x) and len(n) == 64 + len(x) and HEX.issuperset(n[:64])
        }
    )
    for key in keys:
        paths = [os.path.join(partial, key + x) for x in _PARTIAL_SUFFIXES]
        ages = []
        for path in paths:
            try:
                ages.append(now - os.lstat(path).st_mtime)
            except FileNotFoundError:
                pass
        if older_than is not None and any(age < older_than for age in ages):
            continue
        if line := _prune_one(*paths):
            removed.append(line)
    limit = max(older_than or 0.0, TEMP_AGE)
    for n in names:
        if n.startswith(".") and n.endswith(".tmp"):  # a write_atomic that died
            path = os.path.join(partial, n)
            try:
                if now - os.lstat(path).st_mtime >= limit:
                    os.unlink(path)
                    removed.append(f"removed {path} (a temporary file a dead run left)")
            except FileNotFoundError:
                pass
    return removed


def _prune_one(part: str, sidecar: str, lock: str) -> str | None:
    """Remove one URL's leftovers under its lock; None when someone holds it."""
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError:
        return None  # a link, or not ours to open: leave it
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None  # a download is running
        if not _same_file(fd, lock):
            return None  # replaced meanwhile: in use
        url = ""
        try:
            with open(sidecar, "rb") as f:
                state = json.loads(f.read(1 << 16))
            if isinstance(state, dict) and isinstance(state.get("url"), str):
                url = redact_url(state["url"])  # old records may hold what is now refused
        except (OSError, ValueError):
            pass
        try:
            size: int | None = os.lstat(part).st_size
        except FileNotFoundError:
            size = None
        for path in (part, sidecar, lock):
            _remove(path)
    finally:
        os.close(fd)
    of = f" of {url}" if url else ""
    if size is None:
        if url:
            return f"removed {sidecar} (the record of a download{of} whose data is gone)"
        return f"removed {lock} (a lock file no download holds)"
    if size == 0:
        return f"removed {part} (an empty partial download{of})"
    return f"removed {part} ({size} bytes of an unfinished download{of})"


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
