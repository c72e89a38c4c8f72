"""What install.py installs: a verified archive (pipeline.py makes one of a download, a
local tarball or an inbox file, once its sha256 is checked)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Source:
    """A verified archive, ready to install."""

    name: str
    version: str
    archive: str  # path of the verified file (the download cache, or the user's tarball)
    sha256: str
    size: int
    origin: str  # URL, tarball path or inbox path: what the record shows as its source
    spec: dict[str, object] = field(default_factory=dict)
