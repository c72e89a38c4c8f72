"""Atomic file writes: temp file in the same directory, fsync, rename, fsync the dir.

A reader sees the old file or the new one, never a torn one, even across a crash.
"""

from __future__ import annotations

import os
import tempfile


def write_atomic(
    path: str,
    data: bytes | str,
    *,
    mode: int = 0o644,
    owner: tuple[int, int] | None = None,
) -> None:
    if isinstance(data, str):
        data = data.encode()
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            if owner is not None:
                os.fchown(f.fileno(), *owner)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
