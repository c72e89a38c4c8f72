"""A download in progress: `CACHE/partial/<sha256 of url>.part`, its JSON sidecar, the
lock that lets one process at a time download a URL, and cache writes that fail with
what to free."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from layershell.atomic import write_atomic
from layershell.packages.fetch.errors import FetchError

CHUNK = 64 * 1024


def _url_key(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()


def _disk_error(path: str, exc: OSError, url: str, cache_dir: str) -> FetchError:
    """A failed write to the cache, naming the file and what to free."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        what = "no space left on the device" if exc.errno == errno.ENOSPC else "over the quota"
        return FetchError(
            f"cannot write {path}: {what}",
            f"free space where the cache is ({cache_dir}): `core gc --partial` removes"
            " unfinished downloads, `core gc` packages no longer installed; then retry",
            url=url,
        )
    return FetchError(
        f"cannot write {path}: {exc.strerror or exc}",
        f"check that this account may write {cache_dir}, then retry",
        url=url,
    )


@contextmanager
def _writing(path: str, url: str, cache_dir: str) -> Iterator[None]:
    try:
        yield
    except OSError as e:
        raise _disk_error(path, e, url, cache_dir) from None


class _Partial:
    """A download in progress: the .part file, its JSON sidecar and the running sha256.

    The hash covers exactly the bytes in the file, so the digest is ready when the last
    byte arrives; a resumed download hashes what is already there once, at the start.
    The file is unbuffered, so a full disk is seen at the write that hit it.
    """

    def __init__(self, directory: str, url: str) -> None:
        key = _url_key(url)
        self.url = url
        self.cache_dir = os.path.dirname(directory)
        self.path = os.path.join(directory, key + ".part")
        self.sidecar = os.path.join(directory, key + ".json")
        self.lock_path = os.path.join(directory, key + ".lock")
        self.validator: str | None = None
        self.size = 0
        self.hasher = hashlib.sha256()
        self._file: Any = None  # an unbuffered FileIO

    def load(self) -> None:
        """Pick up what an earlier attempt left, if it was for this very URL."""
        try:
            with open(self.sidecar, encoding="utf-8") as f:
                state = json.load(f)
            if not isinstance(state, dict) or state.get("url") != self.url:
                raise ValueError("sidecar of another URL")
            validator = state.get("validator")
            self.validator = validator if isinstance(validator, str) else None
            self._file = open(self.path, "r+b", buffering=0)  # noqa: SIM115 (close())
        except (OSError, ValueError):
            self.reset()
            return
        while block := self._file.read(CHUNK * 16):
            self.hasher.update(block)
        self.size = self._file.tell()

    def reset(self) -> None:
        """Start over: an empty file, no validator."""
        with _writing(self.path, self.url, self.cache_dir):
            if self._file is None:
                self._file = open(self.path, "w+b", buffering=0)  # noqa: SIM115 (close())
            self._file.seek(0)
            self._file.truncate()
        self.size = 0
        self.hasher = hashlib.sha256()
        self.validator = None

    def begin(self, validator: str | None) -> None:
        self.validator = validator
        self.save()

    def write(self, data: bytes) -> None:
        assert self._file is not None
        view = memoryview(data)
        with _writing(self.path, self.url, self.cache_dir):
            while view:
                view = view[self._file.write(view) :]
        self.hasher.update(data)
        self.size += len(data)

    def save(self) -> None:
        if self._file is None:
            return  # removed (or never begun): nothing to describe
        state = {"url": self.url, "validator": self.validator, "bytes": self.size}
        with _writing(self.sidecar, self.url, self.cache_dir):
            write_atomic(self.sidecar, json.dumps(state) + "\n")

    def finish(self) -> None:
        """Make the bytes durable before the file is renamed into the cache."""
        assert self._file is not None
        with _writing(self.path, self.url, self.cache_dir):
            os.fsync(self._file.fileno())

    @property
    def resumable(self) -> bool:
        """Worth keeping for the next attempt: bytes, and a validator that proves them."""
        return bool(self.validator) and self.size > 0

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def remove(self) -> None:
        self.close()
        for path in (self.path, self.sidecar):
            _remove(path)


def _same_file(fd: int, path: str) -> bool:
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


@contextmanager
def _locked(path: str) -> Iterator[None]:
    """One download per URL at a time, across processes. The lock file is removed on
    the way out (while held), so none piles up; a waiter that then holds the lock of a
    removed file opens the path again."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if _same_file(fd, path):
                break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    try:
        yield
    finally:
        _remove(path)
        os.close(fd)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
