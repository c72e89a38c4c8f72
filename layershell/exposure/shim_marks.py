"""Which shims on PATH are ours, and whose: read from each file's marker line. Apart from
shims.py, which writes them, so that `core list` can read them without importing what
writing needs (grants, the manifest model)."""

from __future__ import annotations

import os
import re

from layershell.paths import Paths

SHIM_RE = re.compile(r"^# Managed by layershell: shim for (\S+) of package (\S+)", re.M)


def owner_of(path: str) -> tuple[str, str] | None:
    """(command, package) if `path` is a shim we wrote, else None."""
    try:
        with open(path, "rb") as f:
            head = f.read(512).decode(errors="replace")
    except OSError:
        return None
    m = SHIM_RE.search(head)
    return (m.group(1), m.group(2)) if m else None


def exposed(paths: Paths) -> dict[str, list[str]]:
    """package -> the shims on disk that carry its marker (a file read per entry of
    bin_dir: core list reads grants_db's index instead when it names them all)."""
    found: dict[str, list[str]] = {}
    try:
        entries = sorted(os.listdir(paths.bin_dir))
    except FileNotFoundError:
        return found
    for entry in entries:
        owner = owner_of(os.path.join(paths.bin_dir, entry))
        if owner is not None:
            found.setdefault(owner[1], []).append(owner[0])
    return found
