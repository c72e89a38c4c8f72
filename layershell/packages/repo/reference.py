"""References and repository URLs: parsed, checked, and shown without a password.

A reference names one package version: `<protocol>:<repository>/<arch>/<name>_<version>`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from layershell.errors import LayershellError
from layershell.packages.repo.layout import ARCH_RE, NAME_RE, TARBALL_EXTENSIONS, VERSION_RE

_HOST_RE = re.compile(r"\A(?:[^@/\s]+@)?(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~%-]+)(?::[0-9]+)?\Z")

REFERENCE_FORM = (
    "write it as <protocol>:<repository>/<arch>/<name>_<version>,"
    " for example file:///media/usb1/fcos/x86_64/goss_v0.0.1"
    " or https://repo.example/fcos/x86_64/goss_latest"
)
REPOSITORY_FORM = (
    "write it as <protocol>://<host or path>, for example file:///media/usb1/fcos,"
    " https://repo.example/fcos or ftp://localhost:2121 (protocols: file, http, https, ftp)"
)
CREDENTIALS_FILE = "~/.config/layershell/credentials"
CREDENTIALS_HINT = (
    f"write the URL without it, and put the login in {CREDENTIALS_FILE} (netrc format:"
    " machine HOST login USER password PASS; a file of the fetching account, mode 0600)"
)


class Protocol(str, Enum):
    FILE = "file"
    HTTP = "http"
    HTTPS = "https"
    FTP = "ftp"


class BadReference(LayershellError):
    """A reference or repository URL is malformed."""

    exit_code = 2


# --- references -------------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """`<protocol>:<repository>/<arch>/<name>_<version>`; version may be "latest"."""

    protocol: Protocol
    repository: str  # base URL with its protocol, no trailing slash: file:///media/usb1/fcos
    arch: str
    name: str
    version: str

    @property
    def url(self) -> str:
        """The artifact's URL without a tarball extension."""
        return f"{self.repository}/{self.arch}/{self.name}_{self.version}"

    def __str__(self) -> str:
        return self.url


def _password_split(text: str) -> tuple[str, str] | None:
    """(what to show before the host, the rest) when `text` carries a password, else None.

    A password is `user:pass@` in the authority. A password with an unencoded "/" ends
    the authority early (`https://admin:pa/ss@host`): an authority whose "port" is not a
    number, with an "@" later on, counts as one too, so it never leaks through a message.
    A user name alone (`ftp://user@host`) is no secret and is kept.
    """
    scheme, sep, rest = text.partition("://")
    if not sep:
        if text.startswith("/") or text.lower().startswith("file:"):
            return None
        userinfo, at, host = text.rpartition("@")  # "user:pass@host": no protocol at all
        return ("", host) if at and ":" in userinfo else None
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if "@" in authority:
        userinfo, _, after = authority.rpartition("@")
        if ":" not in userinfo:
            return None
        return f"{scheme}://", after + rest[len(authority) :]
    if scheme.lower() == "file" or "@" not in rest or ":" not in authority:
        return None
    if authority.startswith("[") or authority.rpartition(":")[2].isdigit():
        return None  # a host and its port; an "@" in the path is no password
    return f"{scheme}://", rest.rpartition("@")[2]


def redact_url(text: str) -> str:
    """`text` with a user name and password in it shown as `***`."""
    split = _password_split(text)
    return text if split is None else f"{split[0]}***@{split[1]}"


def has_credentials(text: str) -> bool:
    """True when a URL carries a password (`user:pass@host`)."""
    return _password_split(text) is not None


def credentials_refusal(text: str) -> str:
    """The message that refuses a URL with credentials; it shows them as ***."""
    return (
        f"{redact_url(text)} has a user name or password; layershell never takes one"
        " from a URL (it would be printed and recorded)"
    )


def _split_url(text: str, what: str, form: str) -> tuple[Protocol, str, list[str]]:
    """protocol, authority ("" for file:) and path segments of a URL-like string.

    `what` names the text in messages ("reference", "repository"); `form` is the hint.
    """

    def bad(problem: str) -> BadReference:
        return BadReference(f"{what} {text!r}: {problem}", form)

    if not text:
        raise bad("is empty")
    if has_credentials(text):  # before anything that would show the text
        raise BadReference(f"{what} {credentials_refusal(text)}", CREDENTIALS_HINT)
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in text):
        raise bad("contains whitespace or control characters (percent-encode a space as %20)")
    scheme, sep, rest = text.partition(":")
    if not sep or not scheme or "/" in scheme:
        raise bad("has no protocol")
    try:
        protocol = Protocol(scheme.lower())
    except ValueError:
        raise bad(
            f"unknown protocol {scheme!r} (layershell fetches from file, http, https and ftp)"
        ) from None
    if "?" in rest or "#" in rest:
        raise bad("has a query or fragment (? or #); a repository is a plain directory")
    if rest.startswith("//"):
        authority, slash, path = rest[2:].partition("/")
        path = slash + path
    elif protocol is Protocol.FILE and rest.startswith("/"):
        authority, path = "", rest  # file:/media/usb1 is the short form of file:///media/usb1
    else:
        raise bad(f"expected '//' after '{scheme}:'")
    if protocol is Protocol.FILE:
        if authority not in ("", "localhost"):
            raise bad(
                f"a file: URL names a local path, but this one names the host {authority!r}"
                " (write file:///path, with three slashes)"
            )
        authority = ""
        if not path:
            raise bad("has no path after 'file://'")
    elif not authority:
        raise bad(f"names no host after '{protocol.value}://'")
    elif not _HOST_RE.match(authority):
        raise bad(f"{authority!r} is not a host name, with an optional :port")
    return protocol, authority, _segments(path, bad)


def _segments(path: str, bad: Callable[[str], BadReference]) -> list[str]:
    """The segments of a URL's path ("" or starting with "/"); `bad` makes the error."""
    segments = path.split("/")[1:]
    if segments and segments[-1] == "":
        segments.pop()  # one trailing slash is harmless
    for segment in segments:
        if segment == "":
            raise bad("has an empty path segment ('//')")
        if segment in (".", ".."):
            raise bad(f"has a {segment!r} path segment; write the path without it")
    return segments


def _base(protocol: Protocol, authority: str, segments: list[str]) -> str:
    path = "".join("/" + s for s in segments)
    return f"{protocol.value}://{authority}{path}"


def check_repository(text: str) -> str:
    """A repository base URL, normalised: protocol lower-case, no trailing slash.

    A bare absolute path is taken as a file: URL (/media/usb1/fcos -> file:///media/usb1/fcos).
    """
    if text.startswith("/"):
        text = "file://" + text
    protocol, authority, segments = _split_url(text, "repository", REPOSITORY_FORM)
    if protocol is Protocol.FILE and not segments:
        raise BadReference(
            f"repository {text!r}: names the root directory; a repository is a directory"
            " such as file:///media/usb1/fcos",
            REPOSITORY_FORM,
        )
    return _base(protocol, authority, segments)


def parse_reference(text: str) -> Reference:
    """Parse `<protocol>:<repository>/<arch>/<name>_<version>`; BadReference if malformed."""
    protocol, authority, segments = _split_url(text, "reference", REFERENCE_FORM)

    def bad(problem: str) -> BadReference:
        return BadReference(f"reference {text!r}: {problem}", REFERENCE_FORM)

    if len(segments) < 2:
        raise bad("needs /<arch>/<name>_<version> at the end")
    if protocol is Protocol.FILE and len(segments) < 3:
        raise bad("needs a repository directory before /<arch>/<name>_<version>")
    arch, last = segments[-2], segments[-1]
    if not ARCH_RE.match(arch):
        raise bad(f"{arch!r} is not an architecture as `uname -m` prints it (e.g. x86_64)")
    for ext in TARBALL_EXTENSIONS:
        if last.endswith(ext):
            raise bad(f"names the file {last!r}; a reference ends at <name>_<version>, drop {ext}")
    name, sep, version = last.rpartition("_")
    if not sep or not name or not version:
        raise bad(f"{last!r} is not <name>_<version>")
    if not NAME_RE.match(name):
        raise bad(f"{name!r} is not a package name (letters, digits, '.', '_', '+', '-')")
    if not VERSION_RE.match(version):
        raise bad(f"{version!r} is not a version (letters, digits, '.', '+', '~', '-')")
    return Reference(protocol, _base(protocol, authority, segments[:-2]), arch, name, version)
