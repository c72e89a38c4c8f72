"""Integrity: a file's sha256 against the one it should have, and the private copy of
a tarball that an install hashes and then unpacks."""

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


def sha256_file(path: str, chunk: int = BLOCK) -> tuple[str, int]:
    """(sha256 hex, size) of a file, read in blocks so a large tarball costs little
    memory: the one hash of a file layershell computes (index, check, Ignition)."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


class NotATarball(LayershellError):
    exit_code = 1


def private_copy(path: str, directory: str, max_bytes: int) -> tuple[str, str]:
    """(copy, sha256): `path` copied into `directory` (the account's own) while it is
    hashed, so the bytes checked are the bytes unpacked: whoever can write the original
    cannot change it between the check and the unpack. A regular file only, opened so
    that a FIFO swapped in cannot block (O_NONBLOCK), and at most max_bytes of it: a
    sparse or growing file must not fill the disk. The caller removes the copy."""
    import stat
    import tempfile

    try:
        src_fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise NotATarball(f"{path}: cannot open it: {exc.strerror}", "check the path") from None
    with os.fdopen(src_fd, "rb") as src:
        st = os.fstat(src.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise NotATarball(f"{path}: not a regular file", "give the package's .tar.* file")
        if st.st_size > max_bytes:
            raise NotATarball(
                f"{path}: {st.st_size} bytes, more than the {max_bytes} an install may copy "
                "(the layer's disk budget and free space, and the unpack limit)",
                "make room, or raise limits.disk_budget of the layer (docs/packages.md)",
            )
        os.makedirs(directory, exist_ok=True)
        digest = hashlib.sha256()
        fd, copy = tempfile.mkstemp(dir=directory, prefix=".tarball-", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out:
                left = max_bytes
                while block := src.read(min(BLOCK, left + 1)):
                    left -= len(block)
                    if left < 0:
                        raise NotATarball(
                            f"{path}: it grew past {max_bytes} bytes while it was copied",
                            "install it once it is complete",
                        )
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
    actual = sha256_file(path)[0]
    if actual != expected.lower():
        raise HashMismatch(name or display_name(source), source, expected.lower(), actual)


def display_name(source: str) -> str:
    """The last part of a URL or path, for messages: `.../goss_v0.0.1.tar.gz` -> the name."""
    tail = source.split("?", 1)[0].rstrip("/")
    return os.path.basename(tail) or source
