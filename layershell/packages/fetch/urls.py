"""The URLs fetch takes: file://, http(s):// and ftp://, or a plain path; never one with
a password in it."""

from __future__ import annotations

import os
import urllib.parse
import urllib.request

from layershell import names
from layershell.packages.fetch.errors import FetchError
from layershell.packages.repo.reference import (
    CREDENTIALS_FILE,
    credentials_refusal,
    has_credentials,
)

SCHEMES = names.SCHEMES


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


def local_path(url: str) -> str:
    """The file a file:// URL (or a plain path) names on this host; another host is an
    error (file://host/x is not this machine's /x)."""
    if url[:5].lower() != "file:":  # a scheme is case-insensitive
        return os.path.abspath(url)
    parts = urllib.parse.urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise FetchError(
            f"file URL names another host: {url}",
            "use file:///path (three slashes) for a file on this host",
            url=url,
        )
    return urllib.request.url2pathname(parts.path)


def _without_user(url: str) -> str:
    """`url` without a user name (`ftp://user@host/x` -> `ftp://host/x`) for urllib,
    which would take `user@host` for a host name."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
