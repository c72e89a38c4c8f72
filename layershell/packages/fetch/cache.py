"""The cache's bookkeeping: the sha256 pin that names a cached file (`CACHE/sha256/<hex>`),
the kept index files and their validators (`CACHE/meta/`), and removing what dead runs
left in `CACHE/partial/`."""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import time
from typing import Any

from layershell.packages.fetch.errors import FetchError
from layershell.packages.fetch.partial import _remove, _same_file
from layershell.packages.repo.reference import redact_url

HEX = frozenset("0123456789abcdef")


def _check_digest(sha256: str | None) -> str | None:
    if sha256 is None:
        return None
    digest = sha256.lower()
    if len(digest) != 64 or not HEX.issuperset(digest):
        raise FetchError(
            f"not a sha256 digest: {sha256!r}",
            "a sha256 pin is 64 hexadecimal digits (sha256sum prints it)",
        )
    return digest


# --- cleaning up --------------------------------------------------------------------

_PARTIAL_SUFFIXES = (".part", ".json", ".lock")
TEMP_AGE = 3600.0  # a write_atomic temp file younger than this may still be in use


def prune_cache(cache_dir: str, *, older_than: float | None) -> list[str]:
    """Remove what unfinished downloads left in `CACHE/partial`: partial files, their
    sidecars and per-URL lock files, when no process holds the URL's lock (tried with
    LOCK_NB) and none of them changed in the last `older_than` seconds (None: whatever
    age). Returns one line per download removed, naming its file; a held one is left.
    """
    partial = os.path.join(cache_dir, "partial")
    try:
        names = os.listdir(partial)
    except FileNotFoundError:
        return []
    except OSError as e:
        raise FetchError(f"cannot read {partial}: {e.strerror}", "check its permissions") from e
    now = time.time()
    removed: list[str] = []
    keys = sorted(
        {
            n[: -len(x)]
            for n in names
            for x in _PARTIAL_SUFFIXES
            if n.endswith(x) and len(n) == 64 + len(x) and HEX.issuperset(n[:64])
        }
    )
    for key in keys:
        paths = [os.path.join(partial, key + x) for x in _PARTIAL_SUFFIXES]
        ages = []
        for path in paths:
            try:
                ages.append(now - os.lstat(path).st_mtime)
            except FileNotFoundError:
                pass
        if older_than is not None and any(age < older_than for age in ages):
            continue
        if line := _prune_one(*paths):
            removed.append(line)
    limit = max(older_than or 0.0, TEMP_AGE)
    for n in names:
        if n.startswith(".") and n.endswith(".tmp"):  # a write_atomic that died
            path = os.path.join(partial, n)
            try:
                if now - os.lstat(path).st_mtime >= limit:
                    os.unlink(path)
                    removed.append(f"removed {path} (a temporary file a dead run left)")
            except FileNotFoundError:
                pass
    return removed


def _prune_one(part: str, sidecar: str, lock: str) -> str | None:
    """Remove one URL's leftovers under its lock; None when someone holds it."""
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError:
        return None  # a link, or not ours to open: leave it
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None  # a download is running
        if not _same_file(fd, lock):
            return None  # replaced meanwhile: in use
        url = ""
        try:
            with open(sidecar, "rb") as f:
                state = json.loads(f.read(1 << 16))
            if isinstance(state, dict) and isinstance(state.get("url"), str):
                url = redact_url(state["url"])  # old records may hold what is now refused
        except (OSError, ValueError):
            pass
        try:
            size: int | None = os.lstat(part).st_size
        except FileNotFoundError:
            size = None
        for path in (part, sidecar, lock):
            _remove(path)
    finally:
        os.close(fd)
    of = f" of {url}" if url else ""
    if size is None:
        if url:
            return f"removed {sidecar} (the record of a download{of} whose data is gone)"
        return f"removed {lock} (a lock file no download holds)"
    if size == 0:
        return f"removed {part} (an empty partial download{of})"
    return f"removed {part} ({size} bytes of an unfinished download{of})"


def _new_meta(url: str, body: bytes, **validators: str | None) -> dict[str, Any]:
    return {
        "url": url,
        **validators,
        "sha256": hashlib.sha256(body).hexdigest(),
        "body": base64.b64encode(body).decode("ascii"),
    }


def _load_meta(path: str, url: str) -> dict[str, Any] | None:
    """The kept index and its validators, if present, for this URL and intact."""
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
        if not isinstance(meta, dict) or meta.get("url") != url:
            return None
        body = _meta_body(meta)
    except (OSError, ValueError, TypeError, KeyError):
        return None
    if hashlib.sha256(body).hexdigest() != meta.get("sha256"):
        return None
    return meta


def _meta_body(meta: dict[str, Any]) -> bytes:
    return base64.b64decode(meta["body"], validate=True)
