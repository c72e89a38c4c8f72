"""`core install`."""

from __future__ import annotations

import os
import sys

import click

from layershell.cli import common, complete
from layershell.cli.app import (
    App,
    as_root_of_system,
    delegate,
    installed,
    load_stack,
    sync_exposure,
)
from layershell.errors import ConfigError, LayershellError
from layershell.operations.transaction import operation
from layershell.packages import fetch, grants, manifest, pipeline, repo, target


def named(items: tuple[str, ...]) -> set[str]:
    """The package names an install names (installing one again retries its service)."""
    names: set[str] = set()
    for item in items:
        if os.path.isfile(item):
            parsed = repo.split_artifact_name(os.path.basename(item))
            names.update(parsed[:1] if parsed else ())
        elif "://" in item or item.startswith("file:"):
            try:
                names.add(repo.parse_reference(item).name)
            except LayershellError:
                continue
        else:
            names.add(item)
    return names


@click.command()
@common.options()
@common.config_option
@click.option(
    "--dry-run", is_flag=True, help="Resolve and print what would be installed; change nothing."
)
@click.option("--no-wait", is_flag=True, help="Fail at once if another operation runs.")
@click.option("--connect-timeout", type=float, default=10.0, show_default=True, metavar="S")
@click.option("--read-timeout", type=float, default=30.0, show_default=True, metavar="S")
@click.option("--retries", type=int, default=3, show_default=True, help="Extra attempts.")
@click.option(
    "--profile",
    type=click.Choice([p.value for p in manifest.Profile]),
    help="Security profile for tarballs (the inbox passes its directory's); root's grants it.",
)
@click.argument(
    "items",
    nargs=-1,
    type=common.FILE_OR_NAME,
    metavar="[REF|TARBALL|NAME]...",
    shell_complete=complete.install_items,
)
@click.pass_obj
def install(
    app: App,
    config: str | None,
    dry_run: bool,
    no_wait: bool,
    connect_timeout: float,
    read_timeout: float,
    retries: int,
    profile: str | None,
    items: tuple[str, ...],
) -> None:
    """Install packages into the installing layer (arne), verified and atomically.

    \b
    ITEMS are references (https://repo/x86_64/goss_v0.0.1, .../goss_latest),
    tarballs (./goss_v0.0.1.tar.gz) or names of packages in the manifest.
    Without ITEMS, every package of the manifest is installed.
    """
    layers = load_stack(app)
    where = target.target_for(app.paths, layers)
    loaded = manifest_for(app, config, items)
    args = common.argv_of(click.get_current_context())

    def grant() -> None:
        if grants.may_grant(app.paths):
            # Root's word (the manifest it read, its --profile) is kept by root: what the
            # account then records is data, never what root acts on (grants.py).
            grants.record(app.paths, grants.for_install(app.paths, items, loaded, profile))

    if dry_run:
        # Planned as the account would plan it (its cache, its record), changing nothing:
        # no grant, no journal, no lock, no generation recorded.
        handed = delegate(app, where, args)
        if handed is not None:
            sys.exit(handed)
    else:
        with operation(app, "install", no_wait=no_wait) as op:
            if as_root_of_system(app):
                grant()  # under root's operation lock, before the account's turn
            handed = delegate(app, where, args)
            if handed is not None:
                exposed = op.expose(where, retry=named(items))
                sys.exit(handed or (0 if exposed else 1))

    log = app.log.print
    fetcher = fetch.Fetcher(
        where.cache_dir,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries=retries,
        progress=fetch.progress_for(quiet=app.quiet or app.as_json),
    )
    planner = pipeline.Planner(
        fetcher,
        arch=repo.host_arch(),
        os_version=pipeline.os_version(app.paths),
        trust=pipeline.trust_for(app.paths, loaded, where, app.err.print),
    )
    if dry_run:
        planner.trust.read_only = True
        show_plan(app, where, pipeline.plan_jobs(
            planner, list(items), loaded, where, profile=profile,
            rootless=app.paths.mode == "rootless",
        ))  # fmt: skip
        return
    # Planned under the lock, with the indexes as they are when this install's turn
    # comes, and exposed before another operation may change the record again.
    with pipeline.locked(where, "core install", no_wait=no_wait, log=log) as session:
        planner.use_record(session)
        if not as_root_of_system(app):
            grant()  # rootless: a concurrent remove's shim sync must not forget it
        jobs = pipeline.plan_jobs(
            planner, list(items), loaded, where, profile=profile,
            rootless=app.paths.mode == "rootless",
        )  # fmt: skip
        inbox = os.path.join(os.path.realpath(app.paths.inbox_dir), "")
        for job in jobs:
            if job.tarball is None:
                continue
            if os.path.realpath(job.tarball).startswith(inbox):
                # Root's inbox: Ignition checked it against the config's hash (core inbox
                # settles only what root alone could have put there).
                job.spec["verified"] = {"verification": "inbox"}
            else:
                log(f"note: {job.tarball} is installed as given: no signature was checked")
        report = pipeline.install_jobs(session, jobs, fetcher, log=log)
        report_install(app, where, report)
        exposed = sync_exposure(app, {o.name for o in report.outcomes})
    if report.failures:
        sys.exit(max(f.error.exit_code for f in report.failures))
    if not exposed:
        sys.exit(1)


def manifest_for(app: App, config: str | None, items: tuple[str, ...]) -> manifest.Manifest | None:
    """The manifest an install reads: --config, else the host's if there is one. It is
    read (and validated first) when it is asked for: a broken host manifest must not
    block installing a reference or a tarball."""
    config_file = config or (
        app.paths.manifest_file if os.path.exists(app.paths.manifest_file) else None
    )
    if config_file is None:
        return None
    needs_manifest = (
        config is not None
        or not items
        or any(
            "://" not in i and not i.startswith("file:") and not os.path.isfile(i) for i in items
        )
    )
    if needs_manifest:
        return manifest.load_manifest(config_file)
    # Tarballs the host manifest names take its exposure settings; a broken host
    # manifest must not block them, so it is only a warning here.
    try:
        return manifest.load_manifest(config_file)
    except ConfigError as exc:
        app.err.print(f"warning: {config_file} is not valid, its settings are not used:")
        for problem in exc.problems:
            app.err.print(f"  {problem}")
        return None


def report_install(app: App, where: target.Target, report: pipeline.Report) -> None:
    what = {"installed": "installed", "unchanged": "already installed", "activated": "activated"}
    for o in report.outcomes:
        app.out.print(
            f"{what[o.status]} {o.name} {o.version} in layer {where.layer.name} ({o.path})"
        )
        app.result.change(
            o.status, name=o.name, version=o.version, layer=where.layer.name, path=o.path
        )
        for note in o.notes:
            app.log.print(f"note: {o.name}: {note}")
    for f in report.failures:
        app.err.print(f"core: error: {f.name}: {f.error.message}")
        if f.error.hint:
            app.err.print(f"  hint: {f.error.hint}")
        app.result.fail(f.name, f.error)


def show_plan(app: App, where: target.Target, jobs: list[pipeline.Job]) -> None:
    """What `core install --dry-run` would do: each job, and whether it is there already."""
    active = {r.name: r.version for r in installed(app) if r.active}
    plan = []
    for job in jobs:
        there = active.get(job.name) == job.version
        verb = "already installed" if there else "would install"
        app.out.print(
            f"{verb} {job.name} {job.version} in layer {where.layer.name} from {job.origin}"
        )
        plan.append({"name": job.name, "version": job.version, "origin": job.origin,
                     "sha256": job.sha256, "installed": there})  # fmt: skip
    if not jobs:
        app.out.print("nothing to install")
    app.result.extra["plan"] = plan
