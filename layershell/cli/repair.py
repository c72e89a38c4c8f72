"""`core repair`."""

from __future__ import annotations

import os
import sys

import click

from layershell import lock
from layershell.cli import common
from layershell.cli.app import App, as_root_of_system, delegate, load_stack, sync_exposure
from layershell.operations import journal
from layershell.operations.transaction import repair
from layershell.packages import install, target
from layershell.packages import rebuild as rebuilt
from layershell.packages.state import State


@click.command("repair")
@common.options()
@click.option(
    "--if-interrupted",
    is_flag=True,
    help="Only if an operation was interrupted (layershell-repair.service).",
)
@click.option(
    "--rebuild",
    is_flag=True,
    help="Make the state database again from the per-version records (a lost or "
    "damaged database); the one there is kept as a dated backup.",
)
@click.pass_obj
def repair_cmd(app: App, if_interrupted: bool, rebuild: bool) -> None:
    """Bring the package tree, shims and portable services in line with the record
    after a crash: interrupted installs are removed, links point at the active
    versions, every shim and service follows. Safe to run at any time."""
    quiet = app.quiet  # -q: say only what was mended
    if rebuild and if_interrupted:
        raise click.UsageError("--rebuild and --if-interrupted do not go together")
    if as_root_of_system(app):
        if rebuild:
            _rebuild_as_root(app, quiet)
        else:
            _repair_as_root(app, if_interrupted, quiet)
        return
    where = target.target_for(app.paths, load_stack(app))
    target.must_run_as_account(where)  # refuses other accounts
    if rebuild:
        with lock.held(where.lock_file, what="core repair --rebuild", waiting=app.err.print):
            done = rebuilt.rebuild(where, app.err.print)
        if done.backup is not None:
            app.err.print(f"the database that was there is kept as {done.backup}")
        for problem in done.problems:
            app.err.print(f"warning: {problem}")
        app.out.print(
            f"rebuilt {where.database} from {done.restored} per-version "
            f"record{'s' * (done.restored != 1)}"
        )
        app.result.change("rebuilt", path=where.database, records=done.restored)
        if not sync_exposure(app) or done.problems:
            sys.exit(1)
        return
    with (
        lock.held(where.lock_file, what="core repair", waiting=app.err.print),
        State(where.database) as db,
    ):
        install.reconcile(where, db, app.err.print)
    if not sync_exposure(app):  # rootless: the shims (for root, root syncs afterwards)
        sys.exit(1)
    if not quiet:
        app.out.print(f"layer {where.layer.name} matches its record")
    app.result.change("reconciled", layer=where.layer.name)


def _repair_as_root(app: App, if_interrupted: bool, quiet: bool) -> None:
    """Root, under the operation journal's lock: every layer's account reconciles, then
    root puts shims and services in line (operations/transaction.repair)."""
    if if_interrupted and not os.path.lexists(app.paths.journal_file):
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
            app.err.print(f"core: error: repair failed; see {app.paths.journal_failed_file}")
            raise
    if not quiet:
        app.out.print("repaired" if ok else "repair incomplete (see above)")
    app.result.change("repaired") if ok else app.result.fail(None, "repair incomplete")
    sys.exit(0 if ok else 1)


def _rebuild_as_root(app: App, quiet: bool) -> None:
    """Root: each installing layer's account rebuilds its own database (root never
    writes a layer's files), then root brings shims and services in line, as a repair
    does, under the operation journal's lock."""
    with journal.held(app.paths, waiting=None if quiet else app.err.print):
        layers = load_stack(app)
        ok = True
        for layer in target.installing_layers(layers):
            where = target.target_for(app.paths, layers, layer.account)
            ok = delegate(app, where, ["repair", "--rebuild"]) in (0, None) and ok
        ok = sync_exposure(app) and ok
    sys.exit(0 if ok else 1)
