"""layershell's system extension image in a host's Ignition config (`core ignition
--sysext`; docs/boot.md): an http(s) URL Ignition fetches, with the sha256 of the
SHA256SUMS beside it, or a local image embedded; either way named as `./dev.sh sysext`
names it, for the target host's architecture."""

from __future__ import annotations

import copy
import hashlib
import os
import stat
import urllib.parse

from layershell import names
from layershell.errors import LayershellError
from layershell.host import origin
from layershell.host.ignition_config import (
    FETCHED_BY_IGNITION,
    FILE_MODE,
    Extension,
    File,
    RenderError,
    data_url,
    scheme,
)
from layershell.packages import fetch, pipeline, repo

# The system extension: versioned files side by side, the one merged named by a link
# (Flatcar's sysext-bakery layout), so an update or a rollback is one rename.
EXTENSION_DIR = "/opt/extensions/layershell"
EXTENSION_LINK = "/etc/extensions/layershell.raw"
SUMS = "SHA256SUMS"
SHA256_RE = names.SHA256
MAX_SUMS = 1 << 20  # a SHA256SUMS of a few thousand lines
MAX_IMAGE_VERSION = 64  # the name stays far below a file name's 255 bytes
SQUASHFS_MAGIC = b"hsqs"  # little-endian squashfs, as mksquashfs writes it
EROFS_OFFSET, EROFS_MAGIC = 1024, b"\xe2\xe1\xf5\xe0"  # EROFS_SUPER_MAGIC_V1, LE


def _systemd_arch(arch: str) -> str:
    found = origin.ARCHITECTURES.get(arch)
    if found is None:
        known = ", ".join(sorted(origin.ARCHITECTURES))
        raise LayershellError(
            f"--arch {arch}: no systemd architecture is known for it",
            f"use one of {known}",
            exit_code=2,
        )
    return found


def _image_version(name: str, arch: str) -> str:
    """The version in layershell-<version>-<arch>.raw (the name `./dev.sh sysext` gives)."""
    prefix, suffix = "layershell-", f"-{_systemd_arch(arch)}.raw"
    version = name[len(prefix) : -len(suffix)] if name.startswith(prefix) else ""
    if (
        not name.endswith(suffix)
        or not version
        or len(version) > MAX_IMAGE_VERSION
        or not repo.VERSION_RE.match(version)
    ):
        raise LayershellError(
            f"--sysext: {name[:300]!r} is not named layershell-<version>{suffix}"
            f" (a version of at most {MAX_IMAGE_VERSION} characters)",
            "give the image ./dev.sh sysext built, under its own name: the name says its"
            " version and its architecture, which must be the target host's (--arch)",
            exit_code=2,
        )
    return version


def _shown(url: str) -> str:
    """A URL as logs and messages show it: no password, no query (a signed URL's token)."""
    parts = urllib.parse.urlsplit(pipeline.redact(url))
    return urllib.parse.urlunsplit(parts._replace(query="", fragment=""))


def _listed_sha256(fetcher: fetch.Fetcher, url: str, name: str) -> str:
    """The image's sha256 from the SHA256SUMS beside it (sysext-bakery's convention);
    the list is small, so it is capped at MAX_SUMS bytes."""
    sums_url = urllib.parse.urljoin(url, SUMS)
    hint = f"publish {SUMS} beside the image (./dev.sh sysext writes it), or pass --sysext-sha256"
    capped = copy.copy(fetcher)
    capped.max_size = MAX_SUMS
    try:
        path = capped.fetch(sums_url, sha256=None, name=SUMS)
    except LayershellError as exc:
        raise RenderError(f"--sysext: cannot read {_shown(sums_url)}: {exc}", hint) from None
    with open(path, "rb") as f:
        text = f.read(MAX_SUMS + 1).decode("utf-8", errors="replace")
    for line in text.splitlines():
        digest, _, listed = line.strip().partition("  ")
        if listed.lstrip("*") == name and SHA256_RE.match(digest.lower()):
            return digest.lower()
    raise RenderError(f"--sysext: {_shown(sums_url)} lists no sha256 for {name}", hint)


def _read_image(local: str, max_embed: int) -> bytes:
    """The bytes of a local image to embed: a regular file (not a FIFO or a device,
    which would block or never end), at most max_embed bytes, and a squashfs or erofs
    image by its magic (what systemd-sysext merges)."""
    hint = "give the .raw ./dev.sh sysext built"
    try:
        fd = os.open(local, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise LayershellError(f"--sysext {local}: {exc.strerror}", hint, exit_code=2) from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise LayershellError(f"--sysext {local}: not a regular file", hint, exit_code=2)
        if st.st_size > max_embed:
            raise _image_too_big(local, st.st_size, max_embed)
        data = f.read(max_embed + 1)
    if len(data) > max_embed:  # it grew since the fstat
        raise _image_too_big(local, len(data), max_embed)
    if data[:4] != SQUASHFS_MAGIC and data[EROFS_OFFSET : EROFS_OFFSET + 4] != EROFS_MAGIC:
        raise LayershellError(f"--sysext {local}: not a squashfs or erofs image", hint, exit_code=2)
    return data


def _image_too_big(local: str, size: int, max_embed: int) -> RenderError:
    return RenderError(
        f"--sysext {local} is {size} bytes, over the limit of {max_embed} bytes for a file"
        " embedded in the config",
        "publish it over http(s) with its SHA256SUMS and pass the URL, or raise --max-embed BYTES",
    )


def extension_of(
    source: str,
    sha256: str | None,
    arch: str,
    fetcher: fetch.Fetcher,
    max_embed: int,
) -> tuple[Extension, File]:
    """The image at `source` (an http(s) URL Ignition fetches, else a local file or
    file:// URL, embedded), with its sha256: given, from SHA256SUMS beside a URL, or
    computed from the local file (and checked when given)."""
    if sha256 is not None and not SHA256_RE.match(sha256.lower()):
        raise LayershellError(
            f"--sysext-sha256 {sha256[:100]!r} is not a sha256", "give 64 hex digits",
            exit_code=2,
        )  # fmt: skip
    sha256 = sha256.lower() if sha256 else None
    if repo.has_credentials(source):
        # Before anything shows it: the config is handed around, and Ignition logs URLs.
        raise LayershellError(
            f"--sysext {repo.credentials_refusal(source)}",
            "serve the image where Ignition needs no password (the sha256 protects it),"
            " or embed a local file",
            exit_code=2,
        )
    remote = scheme(source) in FETCHED_BY_IGNITION
    if scheme(source) not in ("", "file") and not remote:
        raise LayershellError(
            f"--sysext {_shown(source)}: Ignition fetches only http(s) URLs",
            "serve the image over http(s), or give a local file to embed",
            exit_code=2,
        )
    if scheme(source) == "":
        local = source
    else:
        local = urllib.parse.unquote(urllib.parse.urlsplit(source).path)
    name = os.path.basename(local)
    version = _image_version(name, arch)
    path = os.path.join(EXTENSION_DIR, name)
    if remote:
        digest = sha256 or _listed_sha256(fetcher, source, name)
        extension = Extension(name, version, _shown(source), digest, False, path)
        return extension, File(path, source, FILE_MODE, None, digest)
    data = _read_image(local, max_embed)
    digest = hashlib.sha256(data).hexdigest()
    if sha256 is not None and sha256 != digest:
        raise RenderError(
            f"--sysext {local}: its sha256 is {digest}, not {sha256}",
            "give the image --sysext-sha256 names, or leave the option out",
        )
    extension = Extension(name, version, os.path.abspath(local), digest, True, path)
    return extension, File(path, data_url(data), FILE_MODE, None, digest)
