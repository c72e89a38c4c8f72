"""`core list` and `core info`: read-only views of every installing layer's record
(packages/inventory.py reads and checks it)."""

from __future__ import annotations

import json
import sys
import time

import click

from layershell.cli import common, complete
from layershell.cli.app import App, installed, not_installed
from layershell.packages.state import Installed


def _shown(text: object) -> str:
    """A value of the record as text that cannot drive the terminal."""
    value = str(text)
    return value if value.isprintable() else value.encode("unicode_escape").decode()


def _verified(record: dict[str, object]) -> str:
    """How a version was verified, as a sentence: `signature by FPR on DATE (generation N)`."""
    how = str(record.get("verification", "?"))
    if how == "signature":
        at = record.get("at")
        when = (
            time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))
            if isinstance(at, (int, float)) and 0 <= at < 253402300800
            else "?"
        )
        return (
            f"signature by {record.get('key', '?')} on {when}"
            f" (generation {record.get('generation', '?')})"
        )
    if how == "checksum":
        return "checksum only (verify: checksum), no signature"
    if how == "none":
        return "none: a tarball installed as given"
    if how == "inbox":
        return "the inbox: checked by Ignition against the hash in the config that put it there"
    return how


COLUMNS = ("NAME", "VERSION", "LAYER", "ACTIVE", "INSTALLED", "EXPOSES", "SOURCE")


def _columns(value: str | None) -> tuple[int, ...]:
    """--columns name,version: their places in COLUMNS, in the order given."""
    if not value:
        return tuple(range(len(COLUMNS)))
    picked = []
    for word in value.split(","):
        name = word.strip().upper()
        if name not in COLUMNS:
            from layershell.errors import suggest

            hint = suggest(name.lower(), [c.lower() for c in COLUMNS])
            raise click.BadParameter(
                f"no column {word.strip()!r}" + (f"; {hint}" if hint else ""),
                param_hint="--columns",
            )
        picked.append(COLUMNS.index(name))
    return tuple(picked)


@click.command("list")
@common.options(json_result=False)  # its --json is the listing itself
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--all", "show_all", is_flag=True, help="Also inactive (previous) versions.")
@click.option(
    "--columns",
    metavar="LIST",
    callback=lambda _c, _p, v: _columns(v),
    help=f"Only these columns, comma-separated (of {','.join(COLUMNS).lower()}).",
)
@click.pass_obj
def list_(app: App, as_json: bool, show_all: bool, columns: tuple[int, ...]) -> None:
    """List installed packages: on a terminal a table fitted to its width (long values
    end in an ellipsis, NAME and VERSION are always whole); piped, plain columns with
    every value whole, one line per package."""
    rows = [r for r in installed(app) if show_all or r.active]
    shown = exposure(app, rows)
    from layershell.packages import grants

    table = grants.Table.load(app.paths)
    if as_json:
        out = [
            {
                **r.as_json(),
                "exposes": shown.get(r.name, []) if r.active else [],
                "granted": table.policy(r).as_json(),
            }
            for r in rows
        ]
        json.dump(out, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return
    if not rows:
        app.out.print("no packages installed")
        return
    header = tuple(COLUMNS[i] for i in columns)
    full: list[tuple[str, ...]] = [
        (
            _shown(r.name), _shown(r.version), _shown(r.layer), "yes" if r.active else "",
            time.strftime("%Y-%m-%d %H:%M", time.localtime(r.installed_at)),
            _shown(" ".join(shown.get(r.name, [])) if r.active else ""), _shown(r.source),
        )
        for r in rows
    ]  # fmt: skip
    cells = [tuple(row[i] for i in columns) for row in full]
    rows_text = (header, *cells)
    widths = [max(len(row[i]) for row in rows_text) for i in range(len(header))]
    if sys.stdout.isatty():
        import shutil

        widths = fitted(header, widths, shutil.get_terminal_size().columns)
    # Piped, every value whole: one line per package (grep, awk, cut); on a terminal,
    # fitted to its width, with an ellipsis where a value was cut.
    for row in rows_text:
        line = "  ".join(_cut(c, w).ljust(w) for c, w in zip(row, widths, strict=True))
        sys.stdout.write(line.rstrip() + "\n")


def exposure(app: App, rows: list[Installed]) -> dict[str, list[str]]:
    """Package -> what it exposes: its shims on PATH, and its attached portable image."""
    from layershell.exposure import portable, shims

    shown = shims.exposed(app.paths)
    attached = portable.attached(app.paths) if app.paths.mode == "system" else {}
    for name, version in attached.items():
        if any(r.name == name and r.version == version for r in rows):
            shown.setdefault(name, []).append(f"{name}_{version} (portable)")
    return shown


WHOLE = ("NAME", "VERSION")  # what a person reads a row by: never cut
NARROWEST = 3  # a cut column still shows two characters and its ellipsis


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


@click.command()
@common.options(json_result=False)  # its --json is the listing itself
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.argument("name", shell_complete=complete.packages)
@click.pass_obj
def info(app: App, as_json: bool, name: str) -> None:
    """Show every installed version of a package and where it came from."""
    rows = [r for r in installed(app) if r.name == name]
    if not rows:
        raise not_installed(app, [name])
    from layershell.packages import grants

    table = grants.Table.load(app.paths)
    exposes = exposure(app, rows).get(name, [])
    if as_json:
        json.dump(
            [
                {**r.as_json(), "exposes": exposes if r.active else [],
                 "granted": table.policy(r).as_json()}
                for r in rows
            ],
            sys.stdout,
            indent=1,
        )  # fmt: skip
        sys.stdout.write("\n")
        return
    for r in rows:
        app.out.print(f"{r.name} {r.version}{'  (active)' if r.active else ''}")
        if r.active:
            app.out.print(f"  exposes: {_shown(', '.join(exposes) or 'nothing')}")
        for key in ("layer", "path", "source", "sha256", "files", "bytes"):
            app.out.print(f"  {key}: {_shown(getattr(r, key))}")
        for key, value in sorted(r.spec.items()):
            if value is None:
                continue  # unset (expose: all of bin/, no repository): nothing to say
            shown = _verified(value) if key == "verified" and isinstance(value, dict) else value
            app.out.print(f"  {_shown(key)}: {_shown(shown)}")
    policy = table.policy(rows[0])
    app.out.print(f"granted (what root acts on; from {policy.source}):")
    app.out.print(f"  profile: {policy.profile}")
    app.out.print(f"  install_method: {policy.install_method}")
    for key in ("enable", "start", "expose_over"):
        app.out.print(f"  {key}: {list(getattr(policy, key))}")
