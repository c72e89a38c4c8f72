"""Logins: a netrc-format credentials file of the fetching account, never a URL. The
file is refused unless only this account can read it, and no message quotes it."""

from __future__ import annotations

import errno
import os
import shlex
import stat
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from layershell.layers.sandbox import CREDENTIAL_FILES
from layershell.packages.fetch.errors import CredentialsError
from layershell.packages.fetch.limits import _amount

DEFAULT_PORTS = {"http": 80, "https": 443, "ftp": 21}
CREDENTIALS_LIMIT = 64 << 10


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
