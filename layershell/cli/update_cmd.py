"""`core update`, `core rollback`, `core gc`."""

from __future__ import annotations

import os
import sys

import click

from layershell import lock
from layershell.atomic import write_atomic
from layershell.cli import common, complete
from layershell.cli.app import (
    App,
    as_root_of_system,
    delegate,
    installed,
    load_stack,
    sync_exposure,
)
from layershell.exposure import portable
from layershell.operations.transaction import operation
from layershell.packages import fetch, grants, holds, manifest, pipeline, repo, target
from layershell.packages import update as updates


def remember_os(app: App) -> None:
    """The OS version packages were last resolved for (the boot-time check compares)."""
    version = pipeline.os_version(app.paths)
    if version is not None and os.access(
        os.path.dirname(app.paths.os_version_file) or ".", os.W_OK
    ):
        write_atomic(app.paths.os_version_file, version + "\n", mode=0o644)


def os_changed(app: App) -> bool:
    try:
        with open(app.paths.os_version_file, encoding="utf-8") as f:
            before = f.read().strip()
    except FileNotFoundError:
        return True
    return before != (pipeline.os_version(app.paths) or "")


KEEP_OPTION = click.option(
    "--keep",
    type=click.IntRange(min=0),
    default=updates.KEEP,
    show_default=True,
    help="Previous versions kept per package, for core rollback.",
)


@click.command("update")
@common.options()
@common.config_option
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@KEEP_OPTION
@click.option("--if-os-changed", is_flag=True, help="Only if the OS version changed (boot).")
@click.option("--no-wait", is_flag=True, help="Fail at once if another operation runs.")
@click.option("--prune-only", is_flag=True, hidden=True)  # root, once the switch held
@click.argument("names", nargs=-1, shell_complete=complete.packages)
@click.pass_obj
def update_cmd(
    app: App,
    config: str | None,
    dry_run: bool,
    keep: int,
    if_os_changed: bool,
    no_wait: bool,
    prune_only: bool,
    names: tuple[str, ...],
) -> None:
    """Move packages that follow a stream (version: latest) or the OS (version: os) to
    their newest version: installed side by side, switched atomically, the previous
    --keep versions kept for core rollback. With --if-os-changed (the boot-time unit),
    only OS-matched packages, and only when the OS version changed since the last run."""
    if if_os_changed and not os_changed(app):
        if not app.quiet:
            app.out.print("OS version unchanged: nothing to do")
        return
    where = target.target_for(app.paths, load_stack(app))
    target.must_run_as_account(where)  # the layer's account or root, nobody else
    args = common.argv_of(click.get_current_context())
    if dry_run:
        handed = delegate(app, where, args)
        if handed is not None:
            sys.exit(handed)
    elif as_root_of_system(app):
        with operation(app, "update", no_wait=no_wait) as op:
            handed = delegate(app, where, args)
            assert handed is not None
            ok = op.expose(where, keep)
        if handed == 0:
            remember_os(app)
        sys.exit(handed or (0 if ok else 1))
    elif prune_only:
        with pipeline.locked(where, "core update", no_wait=no_wait, log=app.err.print) as session:
            held = portable.failed(app.paths)
            for name in names:
                updates.prune(where, session.db, name, keep, app.err.print, held.get(name))
        return

    log = app.log.print
    quiet = app.quiet or app.as_json
    fetcher = fetch.Fetcher(where.cache_dir, progress=fetch.progress_for(quiet=quiet))
    loaded = manifest.load_manifest(config) if config else grants.host_manifest(app.paths)
    planner = pipeline.Planner(
        fetcher,
        arch=repo.host_arch(),
        os_version=pipeline.os_version(app.paths),
        trust=pipeline.trust_for(app.paths, loaded, where, app.err.print),
    )
    only = set(names) if names else None
    if dry_run:  # changes nothing, so it reads the record without waiting for the lock
        planner.trust.read_only = True
        steps = updates.plan(
            installed(app), planner, only, os_only=if_os_changed,
            held=portable.failed(app.paths), holds=holds.read_holds(where),
            layer=where.layer.name,
        )  # fmt: skip
        app.result.extra["plan"] = [s.as_json() for s in steps]
        show_plan(app, steps)
        return
    # Planned and done under one hold of the lock: what another operation did before
    # this one took it (a remove, another update) is what this one plans from.
    handed_over = os.environ.get(target.DELEGATED_ENV) == "1"
    with pipeline.locked(where, "core update", no_wait=no_wait, log=log) as session:
        planner.use_record(session)
        result = updates.apply(
            session, planner, fetcher, only, os_only=if_os_changed,
            held=portable.failed(app.paths),
            keep=None if handed_over else keep,  # else root prunes once services run
            log=log,
        )  # fmt: skip
        report = result.report
        report_update(app, result)
        moved = {o.name for o in report.outcomes if o.status != "unchanged"}
        exposed = sync_exposure(app, moved)
    if not report.failures:
        remember_os(app)
    if report.failures or not exposed:
        sys.exit(1)


def report_update(app: App, result: updates.Result) -> None:
    for s in result.steps:
        if s.error:
            app.err.print(f"warning: {s.name}: {s.error}")
    for o in result.report.outcomes:
        if o.status == "unchanged":
            app.out.print(f"{o.name} is already at {o.version}")
        else:
            app.out.print(f"updated {o.name} to {o.version}")
            app.result.change("updated", name=o.name, version=o.version)
    if not any(s.job for s in result.steps):
        app.out.print("everything is up to date")
    for f in result.report.failures:
        app.err.print(f"core: error: {f.name}: {f.error.message}")
        app.result.fail(f.name, f.error)


def show_plan(app: App, steps: list[updates.Step]) -> None:
    from rich.table import Table

    from layershell.text import printable

    table = Table(box=None, pad_edge=False)
    for col in ("NAME", "CURRENT", "NEW", "FOLLOWS", "STREAM", "NOTE"):
        table.add_column(col)
    for s in steps:
        # The console escapes the strings it prints, not a table's cells: a NOTE carries
        # a server's words (an HTTP reason phrase), a cell an index's.
        cells = (s.name, s.current, s.new or "-", s.kind, s.stream, s.error)
        table.add_row(*(printable(c) for c in cells))
    app.out.print(table)


@click.command()
@common.options()
@click.option("--to", "to", metavar="VERSION", help="Version to go back to.")
@click.option("--no-wait", is_flag=True, help="Fail at once if another operation runs.")
@click.option("--no-hold", is_flag=True, hidden=True)  # root's switch back from a failure
@click.argument("name", shell_complete=complete.packages)
@click.pass_obj
def rollback(app: App, to: str | None, no_wait: bool, no_hold: bool, name: str) -> None:
    """Switch a package back to the version installed before (or --to VERSION), and
    hold it there: core update leaves it until core unhold NAME."""
    where = target.target_for(app.paths, load_stack(app))
    args = common.argv_of(click.get_current_context())
    with operation(app, "rollback", no_wait=no_wait) as op:
        handed = delegate(app, where, args)
        if handed is not None:
            ok = op.expose(where)
            sys.exit(handed or (0 if ok else 1))
    with pipeline.locked(where, "core rollback", no_wait=no_wait, log=app.err.print) as session:
        before, after = updates.rollback(session, name, to, log=app.err.print)
        app.out.print(f"rolled {name} back from {before} to {after}")
        app.result.change("rolled-back", name=name, version=after, previous=before)
        if not no_hold:
            holds.hold(session, name)
            app.log.print(
                f"note: {name} is held at {after}; core unhold {name} lets updates move it"
            )
            app.result.change("held", name=name, version=after)
        exposed = sync_exposure(app, {name})
    if not exposed:
        sys.exit(1)


@click.command()
@common.options()
@KEEP_OPTION
@click.option(
    "--partial",
    is_flag=True,
    help="Only unfinished downloads (any age) and their lock files: frees a full disk.",
)
@click.option("--no-wait", is_flag=True, help="Fail at once if another operation runs.")
@click.pass_obj
def gc(app: App, keep: int, partial: bool, no_wait: bool) -> None:
    """Remove inactive versions but the --keep newest, download-cache entries that nothing
    uses, and unfinished downloads older than a day (--partial: every unfinished one,
    only)."""
    where = target.target_for(app.paths, load_stack(app))
    args = common.argv_of(click.get_current_context())
    with operation(app, "gc", no_wait=no_wait):
        handed = delegate(app, where, args)
        if handed is not None:
            ok = sync_exposure(app)
            sys.exit(handed or (0 if ok else 1))
    if partial:
        # The way out of a full disk: the lock, and no database (SQLite may need room
        # for its journal just to open it).
        with lock.held(where.lock_file, no_wait=no_wait, waiting=app.err.print, what="core gc"):
            removed = fetch.prune_cache(where.cache_dir, older_than=None)
    else:
        with pipeline.locked(where, "core gc", no_wait=no_wait, log=app.err.print) as session:
            removed = updates.gc(session, keep=keep)
    for line in removed:
        app.out.print(f"removed {line}")
        app.result.change("removed", what=line)
    if not removed:
        app.out.print("nothing to remove")


def _holding_command(verb: str, summary: str) -> click.Command:
    @click.command(verb, help=summary)
    @common.options()
    @click.option("--no-wait", is_flag=True, help="Fail at once if another operation runs.")
    @click.argument("name", shell_complete=complete.packages)
    @click.pass_obj
    def run(app: App, no_wait: bool, name: str) -> None:
        _holding(app, verb, no_wait, name)

    return run


hold = _holding_command(
    "hold", "Keep a package at its active version: core update leaves it (as apt-mark hold)."
)
unhold = _holding_command(
    "unhold", "Let core update move a held package again (held by core hold or a rollback)."
)


def _holding(app: App, verb: str, no_wait: bool, name: str) -> None:
    """The layer's account keeps its holds (its own update reads them): root delegates."""
    where = target.target_for(app.paths, load_stack(app))
    handed = delegate(app, where, common.argv_of(click.get_current_context()))
    if handed is not None:
        sys.exit(handed)
    with pipeline.locked(where, f"core {verb}", no_wait=no_wait, log=app.err.print) as session:
        if verb == "hold":
            version, was = holds.hold(session, name)
            app.out.print(f"{name} {'was already' if was else 'is now'} held at {version}")
            if not was:
                app.result.change("held", name=name, version=version)
        elif holds.unhold(session, name):
            app.out.print(f"{name} is no longer held: core update may move it")
            app.result.change("unheld", name=name)
        else:
            app.out.print(f"{name} was not held")
