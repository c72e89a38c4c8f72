"""The host as repositories see it: its arch (`uname -m`) and OS version (os-release)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable


def host_arch() -> str:
    """The machine name as `uname -m` prints it: the <arch> of repository paths."""
    return os.uname().machine


def _unquote(value: str) -> str:
    """An os-release value: shell-style quotes removed, backslash escapes resolved."""
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        inner = value[1:-1]
        if value[0] == "'":
            return inner
        return re.sub(r"\\([\\\"$`])", r"\1", inner)
    return value


def parse_os_release(text: str) -> dict[str, str]:
    """KEY=VALUE lines of os-release(5); comments and malformed lines are skipped."""
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if sep and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            values[key] = _unquote(value.strip())
    return values


def host_os_version(
    os_release_paths: Iterable[str] = ("/etc/os-release", "/usr/lib/os-release"),
    root: str = "/",
) -> str | None:
    """The host's OS version: OSTREE_VERSION (image-based hosts), else VERSION_ID.

    The first os-release file that exists counts, as os-release(5) says; paths are taken
    under `root`. None when there is no file or neither key has a value.
    """
    for path in os_release_paths:
        full = os.path.join(root, path.lstrip("/"))
        try:
            with open(full, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except FileNotFoundError:
            continue
        values = parse_os_release(text)
        return values.get("OSTREE_VERSION") or values.get("VERSION_ID") or None
    return None
