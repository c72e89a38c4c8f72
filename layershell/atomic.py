"""Atomic file writes: temp file in the same directory, fsync, rename, fsync the dir.

A reader sees the old file or the new one, never a torn one, even across a crash.
"""

from __future__ import annotations

import os


def write_atomic(
    path: str,
    data: bytes | str,
    *,
    mode: int = 0o644,
    owner: tuple[int, int] | None = None,
) -> None:
    if isinstance(data, str):
        data = data.encode()
    import tempfile  # here: what only reads state (core list) does not pay its import

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
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError) and exc.filename is None:
            # A full disk at write or flush says no path: name the file it was for.
            raise OSError(exc.errno, exc.strerror, path) from None
        raise
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def read_json_map(path: str, *, strict: bool = True, hint: str = "") -> dict[str, object]:
    """A small JSON object kept under <state> ({} when the file does not exist). A
    damaged record that matters (strict) is an error naming the file and, in `hint`,
    what moving it aside costs; a damaged cache is treated as absent (it is rebuilt)."""
    import json

    from layershell.errors import LayershellError

    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        if not strict:
            return {}
        raise LayershellError(
            f"{path} is damaged or unreadable: {exc}", hint or "fix or remove the file"
        ) from None
    return {str(k): v for k, v in data.items()}


def write_json(path: str, data: object) -> None:
    import json

    os.makedirs(os.path.dirname(path), exist_ok=True)
    text = json.dumps(data, indent=1, sort_keys=True) + "\n"
    try:
        with open(path, encoding="utf-8") as f:
            if f.read(len(text) + 1) == text:
                return  # unchanged: no write, so a repair works on a full disk
    except (OSError, ValueError):
        pass
    write_atomic(path, text, mode=0o644)
