"""`core list` rendered without click or rich, for the click command (listing.py) and
for core's quick front (quick.py), which answers `core list [--json] [--all]` before click
is imported: the listing is what people and scripts run most (docs/testing.md has its
cost)."""

from __future__ import annotations

import os
import time

from layershell.layers.model import LayerStack
from layershell.paths import Paths

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from layershell.packages.inventory import Warn
    from layershell.packages.state import Installed

COLUMNS = ("NAME", "VERSION", "LAYER", "ACTIVE", "INSTALLED", "EXPOSES", "SOURCE")
WHOLE = ("NAME", "VERSION")  # what a person reads a row by: never cut
NARROWEST = 3  # a cut column still shows two characters and its ellipsis


def shown(text: object) -> str:
    """A value of the record as text that cannot drive the terminal."""
    value = str(text)
    return value if value.isprintable() else value.encode("unicode_escape").decode()


def exposure(paths: Paths, rows: list[Installed]) -> dict[str, list[str]]:
    """Package -> what it exposes: its shims on PATH, and its attached portable image."""
    from layershell.exposure import portable_record, shim_marks
    from layershell.packages import grants_db

    if grants_db.complete(paths):  # the shims the index names that are on disk
        try:
            there = set(os.listdir(paths.bin_dir))  # one call, not a stat per shim
        except OSError:
            there = set()
        found = {
            package: shown
            for package, names in grants_db.shims(paths).items()
            if (shown := [n for n in names if n in there])
        }
    else:  # an index that may not name them all: read each file's marker
        found = shim_marks.exposed(paths)
    attached = portable_record.attached(paths) if paths.mode == "system" else {}
    for name, version in attached.items():
        if any(r.name == name and r.version == version for r in rows):
            found.setdefault(name, []).append(f"{name}_{version} (portable)")
    return found


def render(
    paths: Paths,
    layers: LayerStack,
    *,
    as_json: bool,
    show_all: bool,
    columns: tuple[int, ...],
    width: int | None,
    warn: Warn,
) -> str:
    """The listing as text; `width`: the terminal's columns (None: piped, values whole).
    `warn` is called with each line about a bad row (inventory.installed). The last
    listing is printed again while nothing it was made from has changed (list_cache)."""
    from layershell.cli import list_cache

    return list_cache.render(
        paths, layers, _fresh, as_json=as_json, show_all=show_all, columns=columns,
        width=width, warn=warn,
    )  # fmt: skip


def _fresh(
    paths: Paths,
    layers: LayerStack,
    *,
    as_json: bool,
    show_all: bool,
    columns: tuple[int, ...],
    width: int | None,
    warn: Warn,
) -> str:
    import json

    from layershell.packages import grants, inventory

    rows = [r for r in inventory.installed(paths, layers, warn=warn) if show_all or r.active]
    exposes = exposure(paths, rows)
    if as_json:
        table = grants.Table.load(paths, {r.name for r in rows})
        # One package per line: json's indent= takes its pure-Python encoder, ten times
        # slower (most of a listing of 1,000); one line per row is what grep and jq like.
        # The grant is the row's last key, encoded once for the rows that share it.
        out = [
            json.dumps({**r.as_json(), "exposes": exposes.get(r.name, []) if r.active else []})[:-1]
            + ', "granted": ' + table.policy_text(r) + "}"
            for r in rows
        ]  # fmt: skip
        return "[\n" + ",\n".join(out) + "\n]\n" if out else "[]\n"
    # Read for the table too, which shows none of it: a damaged grants.db is an error
    # for every listing, with its way out (tests/test_state_loss.py), not for some.
    grants.check(paths)
    if not rows:
        return "no packages installed\n"
    header = tuple(COLUMNS[i] for i in columns)
    when = _when()
    full = [
        (
            shown(r.name), shown(r.version), shown(r.layer), "yes" if r.active else "",
            when(r.installed_at),
            shown(" ".join(exposes.get(r.name, [])) if r.active else ""), shown(r.source),
        )
        for r in rows
    ]  # fmt: skip
    text_rows = (header, *(tuple(row[i] for i in columns) for row in full))
    widths = [max(len(row[i]) for row in text_rows) for i in range(len(header))]
    if width is not None:
        widths = fitted(header, widths, width)
    # Piped, every value whole: one line per package (grep, awk, cut); on a terminal,
    # fitted to its width, with an ellipsis where a value was cut.
    return "".join(
        "  ".join(_cut(c, w).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n"
        for row in text_rows
    )


def _when() -> Callable[[float], str]:
    """The INSTALLED column's text of a time: one conversion per second shown (the
    packages of one `core install` share a handful)."""
    seen: dict[int, str] = {}

    def when(at: float) -> str:
        second = int(at)
        if second not in seen:
            seen[second] = time.strftime("%Y-%m-%d %H:%M", time.localtime(second))
        return seen[second]

    return when


def fitted(header: tuple[str, ...], widths: list[int], columns: int) -> list[int]:
    """Column widths within `columns`: the widest column that may be cut loses a
    character at a time, until the line fits or nothing more can give."""
    widths = list(widths)
    while sum(widths) + 2 * (len(widths) - 1) > columns:
        cuttable = [i for i, w in enumerate(widths) if header[i] not in WHOLE and w > NARROWEST]
        if not cuttable:
            break
        widths[max(cuttable, key=lambda i: widths[i])] -= 1
    return widths


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def terminal_width() -> int | None:
    import sys

    if not sys.stdout.isatty():
        return None
    import shutil

    return shutil.get_terminal_size().columns
