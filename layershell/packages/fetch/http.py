"""HTTP(S), as urllib and http.client talk it: connections under the connect and read
timeouts, redirects that may not change the protocol nor carry a login elsewhere, a
status as layershell's error, and the headers a resume reads."""

from __future__ import annotations

import http.client
import ssl
import urllib.parse
import urllib.request
from email.message import Message
from typing import IO, Any

from layershell.packages.fetch.credentials import Login, _origin
from layershell.packages.fetch.errors import FetchError, NotFound, _Transient
from layershell.packages.repo.reference import CREDENTIALS_FILE, has_credentials, redact_url

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
