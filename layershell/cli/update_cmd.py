"""`core update`, `core rollback`, `core gc`."""

from __future__ import annotations

import json
import os
import sys

import click

from layershell import lock
from layershell.atomic import write_atomic
from layershell.cli import listing
from layershell.cli.app import App, as_root_of_system, hand_to_account, load_stack, sync_exposure
from layershell.exposure import portable
from layershell.operations.transaction import operation
from layershell.packages import fetch, grants, pipeline, repo, target
from layershell.packages import update as updates


def os_record(app: App) -> str:
    return os.path.join(app.paths.state_dir, "os-version")


def remember_os(app: App) -> None:
    """The OS version packages were last resolved for (the boot-time check compares)."""
    version = pipeline.os_version(app.paths)
    if version is not None and os.access(os.path.dirname(os_record(app)) or ".", os.W_OK):
        write_atomic(os_record(app), version + "\n", mode=0o644)


def os_changed(app: App) -> bool:
    try:
        with open(os_record(app), encoding="utf-8") as f:
            before = f.read().strip()
    except FileNotFoundError:
        return True
    return before != (pipeline.os_version(app.paths) or "")


@click.command("update")
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="The plan as JSON (with --dry-run).")
@click.option("--keep", type=int, default=1, show_default=True, help="Previous versions kept.")
@click.option("--if-os-changed", is_flag=True, help="Only if the OS version changed (boot).")
@click.option("--no-wait", is_flag=True, help="Fail at once if another operation runs.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
@click.option("--prune-only", is_flag=True, hidden=True)  # root, once the switch held
@click.argument("names", nargs=-1)
@click.pass_obj
def update_cmd(
    app: App,
    dry_run: bool,
    as_json: bool,
    keep: int,
    if_os_changed: bool,
    no_wait: bool,
    quiet: bool,
    prune_only: bool,
    names: tuple[str, ...],
) -> None:
    """Move packages that follow a stream (version: latest) or the OS (version: os) to
    their newest version: installed side by side, switched atomically, the previous
    --keep versions kept for core rollback. With --if-os-changed (the boot-time unit),
    only OS-matched packages, and only when the OS version changed since the last run."""
    if if_os_changed and not os_changed(app):
        if not quiet:
            app.out.print("OS version unchanged: nothing to do")
        return
    where = target.target_for(app.paths, load_stack(app))
    target.must_run_as_account(where)  # the layer's account or root, nobody else
    args = ["update", f"--keep={keep}", *(["--dry-run"] * dry_run), *(["--json"] * as_json)]
    args += ["--no-wait"] * no_wait + ["--quiet"] * quiet + list(names)
    if if_os_changed:
        args.append("--if-os-changed")
    if dry_run:
        handed = hand_to_account(app, where, args)
        if handed is not None:
            sys.exit(handed)
    elif as_root_of_system(app):
        with operation(app, "update", no_wait=no_wait) as op:
            handed = hand_to_account(app, where, args)
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

    def log(line: str) -> None:
        if not quiet:
            app.err.print(line)

    fetcher = fetch.Fetcher(where.cache_dir, progress=fetch.progress_for(quiet=quiet))
    planner = pipeline.Planner(
        fetcher,
        arch=repo.host_arch(),
        os_version=pipeline.os_version(app.paths),
        trust=pipeline.trust_for(app.paths, grants.host_manifest(app.paths), where, app.err.print),
    )
    only = set(names) if names else None
    if dry_run:  # changes nothing, so it reads the record without waiting for the lock
        planner.trust.read_only = True
        steps = updates.plan(
            listing.installed(app), planner, only, os_only=if_os_changed,
            held=portable.failed(app.paths),
        )  # fmt: skip
        show_plan(app, steps, as_json=as_json)
        return
    # Planned and done under one hold of the lock: what another operation did before
    # this one took it (a remove, another update) is what this one plans from.
    handed_over = os.environ.get(target.HANDED_OVER_ENV) == "1"
    with pipeline.locked(where, "core update", no_wait=no_wait, log=log) as session:
        planner.use_record(session)
        result = updates.apply(
            session, planner, fetcher, only, os_only=if_os_changed,
            held=portable.failed(app.paths),
            keep=None if handed_over else keep,  # else root prunes once services run
            log=log,
        )  # fmt: skip
        report = result.report
        for s in result.steps:
            if s.error:
                app.err.print(f"warning: {s.name}: {s.error}")
        for o in report.outcomes:
            if o.status == "unchanged":
                app.out.print(f"{o.name} is already at {o.version}")
            else:
                app.out.print(f"updated {o.name} to {o.version}")
        if not any(s.job for s in result.steps):
            app.out.print("everything is up to date")
        for f in report.failures:
            app.err.print(f"core: error: {f.name}: {f.error.message}")
        moved = {o.name for o in report.outcomes if o.status != "unchanged"}
        exposed = sync_exposure(app, moved)
    if not report.failures:
        remember_os(app)
    if report.failures or not exposed:
        sys.exit(1)


def show_plan(app: App, steps: list[updates.Step], *, as_json: bool) -> None:
    if as_json:
        json.dump([s.as_json() for s in steps], sys.stdout, indent=1)
        sys.stdout.write("\n")
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for col in ("NAME", "CURRENT", "NEW", "FOLLOWS", "STREAM", "NOTE"):
        table.add_column(col)
    for s in steps:
        table.add_row(s.name, s.current, s.new or "-", s.kind, s.stream, s.error)
    app.out.print(table)


@click.command()
@click.option("--to", "to", metavar="VERSION", help="Version to go back to.")
@click.option("--no-wait", is_flag=True)
@click.argument("name")
@click.pass_obj
def rollback(app: App, to: str | None, no_wait: bool, name: str) -> None:
    """Switch a package back to the version installed before (or --to VERSION)."""
    where = target.target_for(app.paths, load_stack(app))
    args = ["rollback", name, *(["--to", to] if to else []), *(["--no-wait"] * no_wait)]
    with operation(app, "rollback", no_wait=no_wait) as op:
        handed = hand_to_account(app, where, args)
        if handed is not None:
            ok = op.expose(where)
            sys.exit(handed or (0 if ok else 1))
    with pipeline.locked(where, "core rollback", no_wait=no_wait, log=app.err.print) as session:
        before, after = updates.rollback(session, name, to, log=app.err.print)
        app.out.print(f"rolled {name} back from {before} to {after}")
        exposed = sync_exposure(app, {name})
    if not exposed:
        sys.exit(1)


@click.command()
@click.option("--keep", type=int, default=0, show_default=True, help="Inactive versions kept.")
@click.option(
    "--partial",
    is_flag=True,
    help="Only unfinished downloads (any age) and their lock files: frees a full disk.",
)
@click.option("--no-wait", is_flag=True)
@click.pass_obj
def gc(app: App, keep: int, partial: bool, no_wait: bool) -> None:
    """Remove inactive versions, download-cache entries that nothing uses, and
    unfinished downloads older than a day (--partial: every unfinished one, only)."""
    where = target.target_for(app.paths, load_stack(app))
    args = ["gc", f"--keep={keep}", *(["--partial"] * partial), *(["--no-wait"] * no_wait)]
    with operation(app, "gc", no_wait=no_wait):
        handed = hand_to_account(app, where, args)
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
    if not removed:
        app.out.print("nothing to remove")
