"""Which version of each package is attached as a portable service, as portable.py
records it: apart from portable.py, so that `core list` reads it without importing what
attaching needs (images, units, subprocess)."""

from __future__ import annotations

from layershell.atomic import read_json_map
from layershell.paths import Paths


def attached(paths: Paths) -> dict[str, str]:
    data = read_json_map(
        paths.portables_file,
        hint="restore it, or write it again by hand: it maps each package to the version "
        "attached (`portablectl list` shows the images, named <package>_<version>)",
    )
    return {k: str(v) for k, v in data.items()}
