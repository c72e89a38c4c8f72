"""How much one package may unpack to: the Limits, and how deep an entry lies."""

from __future__ import annotations

from dataclasses import asdict, dataclass

MiB = 1 << 20
GiB = 1 << 30

RATIO_FLOOR = MiB  # a tiny archive legitimately expands far beyond any sane ratio at first
METADATA_PER_ENTRY = 2048  # allowance for headers when bounding the whole stream


@dataclass(frozen=True)
class Limits:
    """How much one package may unpack to. max_files counts entries of every kind."""

    max_total_bytes: int = 4 * GiB
    max_files: int = 200_000
    max_ratio: float = 100
    max_path_length: int = 4096
    max_name_length: int = 255
    max_depth: int = 64  # directories nested in the package (docs/packages.md, "Limits")

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value <= 0:
                raise ValueError(f"Limits.{name} must be positive, not {value}")


def entry_depth(name: str, is_dir: bool) -> int:
    """How many directories deep an entry lies in the package: `a/b/` is 2 deep, and
    so is `a/b/file`."""
    parts = [part for part in name.split("/") if part not in ("", ".")]
    return len(parts) if is_dir else max(len(parts) - 1, 0)


def depth_refusal(depth: int, limit: int) -> str:
    return f"the path is {depth} directories deep, over the limit of {limit}"
