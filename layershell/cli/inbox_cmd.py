"""`core inbox`."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import IO

import click

from layershell.cli import common
from layershell.cli.app import App, load_stack, sync_exposure
from layershell.errors import LayershellError
from layershell.operations.transaction import operation
from layershell.packages import fetch, grants, inbox, manifest, pipeline, repo, target


@click.command("inbox")
@common.options()
@common.config_option
@click.argument("directory", required=False, type=click.Path(file_okay=False))
@click.option(
    "--requeue-if-pending",
    is_flag=True,
    help="Install nothing; if tarballs wait, start layershell-inbox.service again "
    "(its ExecStopPost: a tarball that landed while it ran started no run).",
)
@click.option(
    "--linger",
    type=float,
    default=1.0,
    show_default=True,
    metavar="S",
    help="After the last tarball, wait this long for more before ending.",
)
@click.pass_obj
def inbox_cmd(
    app: App, config: str | None, directory: str | None, requeue_if_pending: bool, linger: float
) -> None:
    """Install the tarballs dropped in the inbox (default /opt/inbox).

    \b
    Layout: <inbox>/<profile>/<user>/<name>_<version>.tar[.gz|.xz|.zst]
    Each tarball moves to done/ or failed/ beside it (failed/ gets a .reason file);
    a bad one never stops the others. Exit status 1 if any failed.
    """
    where_dir = directory or app.paths.inbox_dir
    if directory is not None and not os.path.isdir(directory):
        # The default inbox may not exist yet (nothing was dropped); a named one must.
        raise LayershellError(
            f"{directory}: no such directory",
            f"name the inbox directory, or leave it out for {app.paths.inbox_dir}",
            exit_code=2,
        )
    layers = load_stack(app)
    if requeue_if_pending:
        accounts = {x.account for x in target.installing_layers(layers)}
        if inbox.scan(where_dir, accounts).drops:
            subprocess.run(
                ["systemctl", "--no-block", "start", "layershell-inbox.service"], check=False
            )
        return
    targets = {t.account: t for t in map(
        lambda layer: target.target_for(app.paths, layers, layer.account),
        target.installing_layers(layers),
    )}  # fmt: skip

    manifest_file = common.manifest_path(app, config)

    def host_manifest() -> manifest.Manifest | None:
        if config is None and not os.path.exists(manifest_file):
            return None
        try:
            return manifest.load_manifest(manifest_file)
        except LayershellError:
            if config is not None:
                raise  # named: its problems are the caller's to see
            return None

    if config is not None:
        host_manifest()  # a manifest named and broken stops the run before any tarball

    def install_one(drop: inbox.Drop) -> tuple[bool, str]:
        return install_drop(app, targets[drop.user], drop, host_manifest)

    results: list[inbox.Settled] = []
    exposed = True
    lingered = False
    with operation(app, "inbox"):
        for _ in range(100):
            # A path unit ignores what happens while the unit it started runs, so a tarball
            # that lands during this run starts no other: look again after exposing, and
            # linger a moment after the last batch before ending (docs/boot.md).
            batch = inbox.process(where_dir, set(targets), install_one, app.err.print)
            if not batch:
                if lingered or not results or not linger:
                    break
                lingered = True
                time.sleep(linger)
                continue
            lingered = False
            results += batch
            if any(r.ok for r in batch):
                exposed = sync_exposure(app) and exposed
    for r in results:
        if r.ok:
            app.result.change("installed", path=r.path, said=r.reason)
        else:
            app.result.fail(None, f"{r.path}: {r.reason}")
    if not results:
        app.out.print(f"inbox {where_dir}: nothing to do")
    if any(not r.ok for r in results) or not exposed:
        sys.exit(1)


SAID = 64 << 10  # bytes of the account's output an inbox run reports


def _head(f: IO[bytes]) -> str:
    f.seek(0)
    return f.read(SAID).decode("utf-8", "replace").strip()


def install_drop(
    app: App,
    where: target.Target,
    drop: inbox.Drop,
    host_manifest: Callable[[], manifest.Manifest | None],
) -> tuple[bool, str]:
    """One settled drop installed into its layer: (ok, what to say)."""
    # inbox.py settled only drops that root alone could have put there (the
    # tarball and every directory level root's, writable by nobody else): the path,
    # and so its profile, is root's word.
    if grants.may_grant(app.paths):
        host = host_manifest()
        spec = host.get(drop.name) if host is not None else None
        source = f"the inbox ({os.path.dirname(drop.path)})"
        grants.record(
            app.paths,
            {
                drop.name: grants.from_spec(spec, source, drop.profile)
                if spec is not None
                else grants.Grant(profile=drop.profile, source=source, profile_given=True)
            },
        )
    args = ["install", "--quiet", "--profile", drop.profile, drop.path]
    if target.must_run_as_account(where):
        argv, env = target.as_account_argv(app.paths, args)
        # Into files of root's, not pipes: root waits for the account's process alone
        # (something it leaves running cannot hold root's inbox run open), and reads a
        # bounded part of what it said.
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            returncode = subprocess.run(
                argv,
                env=env,
                cwd="/",
                user=where.uid,
                group=where.gid,
                extra_groups=[],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                check=False,
                start_new_session=True,  # no controlling terminal of root's (terminal.py)
            ).returncode
            said = [_head(f) for f in (out, err)]
        if returncode == 0:
            return True, said[0] or "installed"
        return False, said[1] or f"core install exited {returncode}"
    try:
        fetcher = fetch.Fetcher(where.cache_dir, progress=fetch.progress_for(quiet=True))
        planner = pipeline.Planner(
            fetcher,
            arch=repo.host_arch(),
            os_version=None,
            trust=pipeline.trust_for(app.paths, None, where, app.err.print),
        )
        job = planner.from_tarball(drop.path, drop.profile, host_manifest(), "inbox")
        report = pipeline.run(where, [job], fetcher, log=lambda _: None)
    except LayershellError as exc:
        return False, exc.message
    if report.failures:
        return False, report.failures[0].error.message
    outcome = report.outcomes[0]
    return True, f"{outcome.status} {outcome.name} {outcome.version}"
