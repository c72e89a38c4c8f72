"""The repositories of composable.yaml: a repository's URL (`default_repository:`, a
package's `repository:`), and `repositories:`, how each one's origin is checked
(verify.RepositoryTrust; docs/repository.md, "Signatures")."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from layershell import names as rules
from layershell.errors import LayershellError
from layershell.load import KeyPath
from layershell.packages import repo
from layershell.packages.checker import Checker, kind
from layershell.packages.verify.signature import RepositoryTrust, Verification, normal_fingerprint

REPOSITORY_KEYS = ("url", "verify", "keys", "key_fingerprint")
KEY_FILE_RE = re.compile(r"\A[A-Za-z0-9_][A-Za-z0-9._+@-]{0,127}\.(?:asc|gpg|pgp)\Z")
MAX_REPOSITORIES = 64
SCHEMES = rules.SCHEMES
URL_EXAMPLE = "for example https://composable.example or file:///run/media/usb/repo"


def parse_repository(text: str) -> str:
    """A repository URL, checked and without trailing "/"; raises LayershellError
    (message and hint) when it is not a file://, http://, https:// or ftp:// URL, or
    when it carries a user name or password (the message shows them as ***)."""
    if repo.has_credentials(text):
        raise LayershellError(repo.credentials_refusal(text), repo.CREDENTIALS_HINT)
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in text):
        raise LayershellError(
            "must not contain spaces or control characters", "percent-encode them, as in %20"
        )
    scheme, sep, rest = text.partition("://")
    if not sep:
        raise LayershellError(
            f"{text!r} is not a file://, http://, https:// or ftp:// URL", URL_EXAMPLE
        )
    if scheme.lower() not in SCHEMES:
        raise LayershellError(
            f"unsupported protocol {scheme!r}", "use file://, http://, https:// or ftp://"
        )
    scheme = scheme.lower()
    if "?" in rest or "#" in rest:
        raise LayershellError(
            "must not have a query ('?') or fragment ('#')",
            "name the directory that holds the package files",
        )
    try:
        parts = urlsplit(f"{scheme}://{rest}")
        port = parts.port
    except ValueError as exc:
        raise LayershellError(f"not a valid URL: {exc}", URL_EXAMPLE) from None
    if scheme == "file":
        if parts.netloc or not parts.path.startswith("/"):
            raise LayershellError(
                "a file:// URL needs an absolute path and no host",
                "use three slashes, as in file:///run/media/usb/repo",
            )
        if parts.path.strip("/") == "":
            return "file:///"
    else:
        if not parts.hostname:
            raise LayershellError(
                f"a {scheme}:// URL needs a host", f"for example {scheme}://composable.example"
            )
        if port == 0:
            raise LayershellError("port 0 is not a port", "use a number from 1 to 65535")
    return f"{scheme}://{rest}".rstrip("/")


def repository_url(check: Checker, path: KeyPath, value: object) -> str | None:
    text = check.text(path, value, URL_EXAMPLE)
    if text is None:
        return None
    try:
        return parse_repository(text)
    except LayershellError as exc:
        check.report(path, exc.message, exc.hint)
        return None


def _keys(check: Checker, at: KeyPath, entry: dict[object, object]) -> tuple[str, ...]:
    """A repository entry's `keys:`, key file names; () when it has none."""
    if "keys" not in entry:
        return ()
    keys = check.names((*at, "keys"), entry["keys"], "fleet.asc") or ()
    for k, name in enumerate(keys):
        if not KEY_FILE_RE.match(name):
            check.report(
                (*at, "keys", k),
                f"{name!r} is not a key file name",
                "name a file in the keys directory: NAME.asc, .gpg or .pgp",
            )
    return keys


def _fingerprints(check: Checker, at: KeyPath, entry: dict[object, object]) -> list[str]:
    """A repository entry's `key_fingerprint:`, one or a list, as normal fingerprints;
    [] when it has none."""
    fingerprints: list[str] = []
    if "key_fingerprint" not in entry:
        return fingerprints
    value = entry["key_fingerprint"]
    listed = [value] if isinstance(value, str) else value
    if not isinstance(listed, list) or not listed:
        check.report(
            (*at, "key_fingerprint"),
            "must be a fingerprint or a list of them",
            "copy it from gpg --fingerprint KEY",
        )
        listed = []
    for k, item in enumerate(listed):
        fpr = normal_fingerprint(item) if isinstance(item, str) else None
        if fpr is None:
            where = (*at, "key_fingerprint") + ((k,) if isinstance(value, list) else ())
            check.report(
                where,
                f"{item!r} is not an OpenPGP fingerprint (40 or 64 hex digits)",
                "copy it from gpg --fingerprint KEY",
            )
        else:
            fingerprints.append(fpr)
    return fingerprints


def repositories(check: Checker, raw: object) -> tuple[RepositoryTrust, ...]:
    """`repositories:`, a list of {url, verify, keys, key_fingerprint}."""
    path: KeyPath = ("composable", "repositories")
    example = "[{url: https://repo.example/fcos, key_fingerprint: <40 hex digits>}]"
    if not isinstance(raw, list):
        check.report(path, f"must be a list, not {kind(raw)}", f"for example {example}")
        return ()
    if len(raw) > MAX_REPOSITORIES:
        check.report(
            path,
            f"lists {len(raw)} repositories, more than {MAX_REPOSITORIES}",
            "keep the ones the packages use",
        )
        return ()
    out: list[RepositoryTrust] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(raw):
        at = (*path, index)
        if not isinstance(entry, dict):
            check.report(at, f"must be a mapping, not {kind(entry)}", f"for example {example}")
            continue
        check.keys(at, entry, REPOSITORY_KEYS)
        if "url" not in entry:
            check.report(at, "needs url:", "the repository's base URL, as in default_repository:")
            continue
        url = repository_url(check, (*at, "url"), entry["url"])
        verification = Verification.SIGNATURE
        if "verify" in entry:
            verification = (
                check.choice((*at, "verify"), entry["verify"], Verification, "verification")
                or verification
            )
        keys = _keys(check, at, entry)
        fingerprints = _fingerprints(check, at, entry)
        if verification is Verification.CHECKSUM and (keys or fingerprints):
            check.report(
                (*at, "verify"),
                "is checksum, so keys: and key_fingerprint: would never be used",
                "remove them, or verify: signature",
            )
        if url is None:
            continue
        if url in seen:
            check.report(
                (*at, "url"),
                f"{url} is listed twice (first as entry {seen[url]})",
                "keep one entry per repository",
            )
            continue
        seen[url] = index
        out.append(RepositoryTrust(url, verification, tuple(keys), tuple(fingerprints)))
    return tuple(out)
