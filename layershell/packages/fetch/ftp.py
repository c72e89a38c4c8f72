"""FTP, as ftplib talks it: a logged-in session under the connect and read timeouts, and
its replies as layershell's errors."""

from __future__ import annotations

import ftplib
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager

from layershell.packages.fetch.credentials import Login
from layershell.packages.fetch.errors import FetchError, NotFound, _reason, _Transient
from layershell.packages.repo.reference import CREDENTIALS_FILE


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
