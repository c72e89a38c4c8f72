"""Verify: a package's sha256 is checked before anything of it is unpacked or cached.

A mismatch names the file, where it came from and both digests, so the user can tell a
truncated download from a replaced file and compare with the published checksum.
"""

from __future__ import annotations

import hashlib
import os

from layershell.errors import LayershellError

BLOCK = 1 << 20  # 1 MiB: large enough for throughput, small enough for any host's memory


class HashMismatch(LayershellError):
    """A file's sha256 is not the one it was expected to have."""

    exit_code = 1

    def __init__(self, name: str, source: str, expected: str, actual: str) -> None:
        self.name = name
        self.source = source
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"sha256 mismatch for {name} from {source}: expected {expected}, got {actual}",
            "the file was corrupted or replaced; the installed version is kept",
        )


def sha256_file(path: str) -> str:
    """The hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(BLOCK):
            digest.update(block)
    return digest.hexdigest()


def private_copy(path: str, directory: str) -> tuple[str, str]:
    """(copy, sha256): `path` copied into `directory` (the account's own) while it is
    hashed, so the bytes checked are the bytes unpacked: whoever can write the original
    cannot change it between the check and the unpack. The caller removes the copy."""
    import tempfile

    os.makedirs(directory, exist_ok=True)
    digest = hashlib.sha256()
    fd, copy = tempfile.mkstemp(dir=directory, prefix=".tarball-", suffix=".part")
    try:
        with open(path, "rb") as src, os.fdopen(fd, "wb") as out:
            while block := src.read(BLOCK):
                digest.update(block)
                out.write(block)
    except BaseException:
        os.unlink(copy)
        raise
    return copy, digest.hexdigest()


def check(path: str, expected: str, source: str, *, name: str = "") -> None:
    """Raise HashMismatch unless the file at `path` has the sha256 `expected`.

    `source` is where the file came from (a URL or a path), `name` what the user calls it
    (default: the last part of `source`).
    """
    actual = sha256_file(path)
    if actual != expected.lower():
        raise HashMismatch(name or display_name(source), source, expected.lower(), actual)


def display_name(source: str) -> str:
    """The last part of a URL or path, for messages: `.../goss_v0.0.1.tar.gz` -> the name."""
    tail = source.split("?", 1)[0].rstrip("/")
    return os.path.basename(tail) or source
