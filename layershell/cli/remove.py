"""`core remove`."""

from __future__ import annotations

import sys

import click

from layershell.cli.app import App, hand_to_account, load_stack, sync_exposure
from layershell.operations.transaction import operation
from layershell.packages import pipeline, target


@click.command()
@click.option("--no-wait", is_flag=True, help="Fail at once if another operation runs.")
@click.argument("names", nargs=-1, required=True)
@click.pass_obj
def remove(app: App, no_wait: bool, names: tuple[str, ...]) -> None:
    """Remove packages (every installed version) from the installing layer."""
    where = target.target_for(app.paths, load_stack(app))
    with operation(app, "remove", no_wait=no_wait):
        handed = hand_to_account(app, where, ["remove", *(["--no-wait"] * no_wait), *names])
        if handed is not None:
            exposed = sync_exposure(app)
            sys.exit(handed or (0 if exposed else 1))
    with pipeline.locked(where, "core remove", no_wait=no_wait, log=app.err.print) as session:
        for line in pipeline.remove(session, list(names)):
            app.out.print(f"removed {line}")
        exposed = sync_exposure(app, set(names))  # under the lock: shims follow this record
    if not exposed:
        sys.exit(1)
