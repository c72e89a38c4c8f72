"""What one install may use: a layer's install limits (layers.yaml `limits:` of the
installing layer; config.py validates them, docs/packages.md, "Safe installs", documents
them), and the free space and inodes of a filesystem they are held against (install.py
before and after unpacking, install_script.py while install.sh runs)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from layershell.layers.model import Layer
from layershell.packages import unpack

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30

# A layer's install limits: layers.yaml, `limits:` of the installing layer (config.py
# validates them; docs/packages.md, "Safe installs", documents them).
DEFAULT_DISK_BUDGET = 20 * GiB
DEFAULT_MAX_DEPTH = unpack.Limits().max_depth
DEFAULT_SCRIPT_TIMEOUT = 300.0
DEFAULT_SCRIPT_MEMORY = 4 * GiB
# Free space an install may never go below: 5 % of the filesystem or 1 GiB, the smaller.
DEFAULT_MIN_FREE_PERCENT = 5.0
DEFAULT_MIN_FREE_CAP = GiB


@dataclass(frozen=True)
class InstallLimits:
    """What one install may use (layers.yaml `limits:`; every field has a default).

    disk_budget: bytes all package trees of the layer may take on disk together.
    max_depth: directories a package tree may nest, at unpack and after install.sh.
    script_timeout: seconds install.sh may run, with everything it started.
    script_memory: address space of each process of install.sh (RLIMIT_AS).
    min_free / min_free_percent: the free-space floor of the filesystem (bytes, or a
    percentage of its size); neither set: 5 % or 1 GiB, the smaller."""

    disk_budget: int = DEFAULT_DISK_BUDGET
    max_depth: int = DEFAULT_MAX_DEPTH
    script_timeout: float = DEFAULT_SCRIPT_TIMEOUT
    script_memory: int = DEFAULT_SCRIPT_MEMORY
    min_free: int | None = None
    min_free_percent: float | None = None

    @classmethod
    def of(cls, layer: Layer) -> InstallLimits:
        return cls(**dict(layer.limits))  # type: ignore[arg-type]

    def floor(self, fs_size: int) -> int:
        """The free-space floor, in bytes, on a filesystem of fs_size bytes."""
        if self.min_free is not None:
            return self.min_free
        if self.min_free_percent is not None:
            return int(fs_size * self.min_free_percent / 100)
        return min(int(fs_size * DEFAULT_MIN_FREE_PERCENT / 100), DEFAULT_MIN_FREE_CAP)


def human(n: int) -> str:
    """1536 -> '1.5 KiB' (bytes below 1 KiB as they are)."""
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


def free_space(path: str) -> tuple[int, int]:
    """(bytes available to this account, filesystem size) of path's filesystem."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize


def free_inodes(path: str) -> tuple[int, int]:
    """(inodes available, the floor no install may take them below) of path's
    filesystem: 5% of its inodes or 50,000, whichever is less. Files cost inodes as
    well as bytes, and a filesystem out of inodes is as full as one out of blocks."""
    st = os.statvfs(path)
    return st.f_favail, min(st.f_files // 20, INODE_FLOOR)


INODE_FLOOR = 50_000
