"""`core remove`."""

from __future__ import annotations

import sys

import click

from layershell.cli import common, complete
from layershell.cli.app import (
    App,
    delegate,
    installed,
    load_stack,
    not_installed,
    sync_exposure,
)
from layershell.operations.transaction import operation
from layershell.packages import pipeline, target


@click.command()
@common.options()
@click.option("--dry-run", is_flag=True, help="Print what would be removed; change nothing.")
@click.option("--no-wait", is_flag=True, help="Fail at once if another operation runs.")
@click.argument("names", nargs=-1, required=True, shell_complete=complete.packages)
@click.pass_obj
def remove(app: App, dry_run: bool, no_wait: bool, names: tuple[str, ...]) -> None:
    """Remove packages (every installed version) from the installing layer."""
    where = target.target_for(app.paths, load_stack(app))
    if dry_run:
        show_plan(app, where, names)
        return
    with operation(app, "remove", no_wait=no_wait):
        handed = delegate(app, where, common.argv_of(click.get_current_context()))
        if handed is not None:
            exposed = sync_exposure(app)
            sys.exit(handed or (0 if exposed else 1))
    with pipeline.locked(where, "core remove", no_wait=no_wait, log=app.err.print) as session:
        for name, version in pipeline.remove(session, list(names)):
            app.out.print(f"removed {name} {version}")
            app.result.change("removed", name=name, version=version)
        exposed = sync_exposure(app, set(names))  # under the lock: shims follow this record
    if not exposed:
        sys.exit(1)


def show_plan(app: App, where: target.Target, names: tuple[str, ...]) -> None:
    """What `core remove --dry-run` would remove, read from the record as `core list`
    reads it (no lock, nothing written); a name not installed fails as the removal would."""
    rows = installed(app, set(names))
    have = {r.name for r in rows}
    missing = [n for n in names if n not in have]
    if missing:
        raise not_installed(app, missing)
    for r in sorted(rows, key=lambda r: (r.name, r.installed_at)):
        app.out.print(f"would remove {r.name} {r.version}" + " (active)" * r.active)
        app.result.change("would-remove", name=r.name, version=r.version, active=r.active)
