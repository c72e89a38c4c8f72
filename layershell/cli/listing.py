"""`core list` and `core info`: read-only views of every installing layer's record
(packages/inventory.py reads and checks it)."""

from __future__ import annotations

import json
import sys
import time

import click

from layershell.cli import common, complete, list_view
from layershell.cli.app import App, installed, load_stack, not_installed
from layershell.cli.list_view import COLUMNS
from layershell.cli.list_view import shown as _shown


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
    text = list_view.render(
        app.paths, load_stack(app), as_json=as_json, show_all=show_all, columns=columns,
        width=list_view.terminal_width(), warn=app.err.print,
    )  # fmt: skip
    sys.stdout.write(text)


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

    table = grants.Table.load(app.paths, [name])
    exposes = list_view.exposure(app.paths, rows).get(name, [])
    if as_json:
        json.dump(
            [
                {**r.as_json(), "exposes": exposes if r.active else [],
                 "granted": table.policy_json(r)}
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
