"""`core list` and `core info`: read-only views of every installing layer's record."""

from __future__ import annotations

import json
import os
import sys
import time

import click

from layershell import target
from layershell.cli.app import App, load_stack
from layershell.errors import LayershellError
from layershell.state import Installed, State


def installed(app: App, only: set[str] | None = None) -> list[Installed]:
    """Every installing layer's records (or only those of the named packages)."""
    rows: list[Installed] = []
    layers = load_stack(app)
    for layer in target.installing_layers(layers):
        db = os.path.join(app.paths.store(layer.name), "state.db")
        if os.path.exists(db):
            with State(db, readonly=True) as st:
                if only is None:
                    rows += st.all()
                else:
                    for name in sorted(only):
                        rows += st.versions(name)
    return rows


@click.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--all", "show_all", is_flag=True, help="Also inactive (previous) versions.")
@click.pass_obj
def list_(app: App, as_json: bool, show_all: bool) -> None:
    """List installed packages."""
    rows = [r for r in installed(app) if show_all or r.active]
    from layershell import shims

    shown = shims.exposed(app.paths)
    from layershell import portable

    attached = portable.attached(app.paths) if app.paths.mode == "system" else {}
    for name, version in attached.items():
        if any(r.name == name and r.version == version for r in rows):
            shown.setdefault(name, []).append(f"{name}_{version} (portable)")
    if as_json:
        out = [{**r.as_json(), "exposes": shown.get(r.name, []) if r.active else []} for r in rows]
        json.dump(out, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return
    if not rows:
        app.out.print("no packages installed")
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for col in ("NAME", "VERSION", "LAYER", "ACTIVE", "INSTALLED", "EXPOSES"):
        table.add_column(col, no_wrap=True)
    table.add_column("SOURCE", overflow="fold")
    for r in rows:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.installed_at))
        exposes = " ".join(shown.get(r.name, [])) if r.active else ""
        table.add_row(
            r.name, r.version, r.layer, "yes" if r.active else "", when, exposes, r.source
        )
    app.out.print(table)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.argument("name")
@click.pass_obj
def info(app: App, as_json: bool, name: str) -> None:
    """Show every installed version of a package and where it came from."""
    rows = [r for r in installed(app) if r.name == name]
    if not rows:
        raise LayershellError(f"{name} is not installed", "see core list")
    if as_json:
        json.dump([r.as_json() for r in rows], sys.stdout, indent=1)
        sys.stdout.write("\n")
        return
    for r in rows:
        app.out.print(f"{r.name} {r.version}{'  (active)' if r.active else ''}")
        for key in ("layer", "path", "source", "sha256", "files", "bytes"):
            app.out.print(f"  {key}: {getattr(r, key)}")
        for key, value in sorted(r.spec.items()):
            app.out.print(f"  {key}: {value}")
