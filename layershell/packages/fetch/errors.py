"""What fetch raises: FetchError when a URL cannot be fetched (NotFound, CredentialsError,
ShortDownload among them), _Transient for a failure worth another attempt, and the short
reason a network failure is shown with."""

from __future__ import annotations

import http.client
import socket
import urllib.error

from layershell.errors import LayershellError
from layershell.packages.verify.integrity import HashMismatch

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
