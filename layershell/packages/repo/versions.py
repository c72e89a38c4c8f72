"""Version ordering: versions sort naturally, as Debian sorts them."""

from __future__ import annotations

import re
from collections.abc import Iterable

_RUNS_RE = re.compile(r"[0-9]+|[^0-9]+")

VersionKey = tuple[tuple[tuple[tuple[int, ...], int], ...], str]
_END = ((0,), 0)  # what a shorter version is padded with, as Debian pads


def _weight(c: str) -> int:
    # Debian's order for non-digits: '~' before the end of a run, letters before others.
    if c == "~":
        return -1
    if c.isascii() and c.isalpha():
        return ord(c)
    return ord(c) + 256


def version_key(version: str) -> VersionKey:
    """A sort key ordering versions naturally, as Debian does.

    Alternating non-digit and digit runs; digit runs compare as numbers ("1.10" > "1.9");
    '~' sorts before anything, even the end ("1.0~rc1" < "1.0"); a leading "v" before a
    digit is ignored ("v1.2" is 1.2). Versions equal by these rules ("1.01" and "1.1")
    are ordered by their text, so the order is total and sorting is deterministic.
    """
    v = version[1:] if len(version) > 1 and version[0] in "vV" and version[1].isdigit() else version
    pairs: list[tuple[tuple[int, ...], int]] = []
    text: tuple[int, ...] = (0,)
    for run in _RUNS_RE.findall(v):
        if run.isascii() and run.isdigit():
            pairs.append((text, int(run)))
            text = (0,)
        else:
            text = (*(_weight(c) for c in run), 0)
    if text != (0,):
        pairs.append((text, 0))
    pairs.append(_END)
    return tuple(pairs), version


def newest_first(versions: Iterable[str]) -> list[str]:
    return sorted(versions, key=version_key, reverse=True)
