"""`core repair`."""

from __future__ import annotations

import os
import sys

import click

from layershell import install, journal, lock, target
from layershell.cli.app import App, as_root_of_system, load_stack, sync_exposure
from layershell.cli.switch import repair
from layershell.state import State


@click.command("repair")
@click.option(
    "--if-interrupted",
    is_flag=True,
    help="Only if an operation was interrupted (layershell-repair.service).",
)
@click.option("-q", "--quiet", is_flag=True, help="Say only what was mended.")
@click.pass_obj
def repair_cmd(app: App, if_interrupted: bool, quiet: bool) -> None:
    """Bring the package tree, shims and portable services in line with the record
    after a crash: interrupted installs are removed, links point at the active
    versions, every shim and service follows. Safe to run at any time."""
    if as_root_of_system(app):
        if if_interrupted and not os.path.lexists(journal.journal_file(app.paths)):
            # The common case, said without taking the lock from the next operation.
            if not quiet:
                app.out.print("no interrupted operation")
            return
        with journal.held(app.paths, waiting=None if quiet else app.err.print):
            pending = journal.interrupted(app.paths)
            if pending is None and if_interrupted:
                if not quiet:
                    app.out.print("no interrupted operation")
                return
            if pending is not None:
                app.err.print(
                    f"repairing after an interrupted core {pending.get('operation', '?')} "
                    f"(pid {pending.get('pid', '?')})"
                )
            try:
                ok = repair(app, pending)
            except BaseException:
                # The path unit starts this again while the journal exists: a repair that
                # cannot work must not loop. The file stays for the administrator.
                journal.give_up(app.paths)
                app.err.print(f"core: error: repair failed; see {journal.failed_file(app.paths)}")
                raise
        if not quiet:
            app.out.print("repaired" if ok else "repair incomplete (see above)")
        sys.exit(0 if ok else 1)
    where = target.target_for(app.paths, load_stack(app))
    target.must_run_as_account(where)  # refuses other accounts
    with lock.held(where.lock_file, waiting=app.err.print), State(where.database) as db:
        install.reconcile(where, db, app.err.print)
    if not sync_exposure(app):  # rootless: the shims (for root, root syncs afterwards)
        sys.exit(1)
    if not quiet:
        app.out.print(f"layer {where.layer.name} matches its record")
