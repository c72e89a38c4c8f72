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

    def install_group(drops: list[inbox.Drop]) -> list[tuple[bool, str]]:
        return install_drops(app, targets[drops[0].user], drops, host_manifest)

    results: list[inbox.Settled] = []
    exposed = True
    lingered = False
    with operation(app, "inbox"):
        for _ in range(100):
            # A path unit ignores what happens while the unit it started runs, so a tarball
            # that lands during this run starts no other: look again after exposing, and
            # linger a moment after the last batch before ending (docs/boot.md).
            batch = inbox.process(where_dir, set(targets), install_group, app.err.print)
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
JSON_SAID = 1 << 20  # ... and of its result object, for a group of drops


def _head(f: IO[bytes], said: int = SAID) -> str:
    f.seek(0)
    return f.read(said).decode("utf-8", "replace").strip()


def install_drops(
    app: App,
    where: target.Target,
    drops: list[inbox.Drop],
    host_manifest: Callable[[], manifest.Manifest | None],
) -> list[tuple[bool, str]]:
    """Drops of one <profile>/<user> directory installed into its layer: (ok, what to
    say) for each. One `core install` of the account's for all of them (a first boot
    of ten packages paid ten interpreter starts); whatever that one run does not account
    for, drop by drop, is installed on its own, as before."""
    for drop in drops:
        _grant(app, drop, host_manifest)
    if len(drops) == 1 or len({d.name for d in drops}) != len(drops):
        return [install_drop(app, where, d, host_manifest, granted=True) for d in drops]
    found = _install_together(app, where, drops) if target.must_run_as_account(where) else {}
    return [
        found[d.path]
        if d.path in found
        else install_drop(app, where, d, host_manifest, granted=True)
        for d in drops
    ]


def _grant(
    app: App, drop: inbox.Drop, host_manifest: Callable[[], manifest.Manifest | None]
) -> None:
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


def _install_together(
    app: App, where: target.Target, drops: list[inbox.Drop]
) -> dict[str, tuple[bool, str]]:
    """{drop path: (ok, what to say)} for the drops one `core install --json` of the
    account's reports on (by name and version); nothing for the rest."""
    import json

    paths = [d.path for d in drops]
    args = ["install", "--quiet", "--json", "--profile", drops[0].profile, *paths]
    _, out, _ = _as_account(app, where, args, said=JSON_SAID)
    try:
        result = json.loads(out)
    except (ValueError, RecursionError):  # not the object core writes: drop by drop
        return {}
    if not isinstance(result, dict):
        return {}

    def entries(key: str) -> list[dict[str, str]]:
        # The account's word: only text values are looked at (a list where a name goes
        # is unhashable, a number where a list goes not iterable: root's run would end).
        value = result.get(key)
        return [
            {k: v for k, v in x.items() if isinstance(v, str)}
            for x in (value if isinstance(value, list) else [])
            if isinstance(x, dict)
        ]

    found: dict[str, tuple[bool, str]] = {}
    by_name = {(d.name, d.version): d.path for d in drops}
    what = {"installed": "installed", "unchanged": "already installed", "activated": "activated"}
    for entry in entries("changed"):
        key = (entry.get("name"), entry.get("version"))
        if key in by_name and entry.get("action") in what:
            said = (f"{what[entry['action']]} {key[0]} {key[1]} in layer {entry.get('layer')} "
                    f"({entry.get('path')})")  # fmt: skip
            found[by_name[key]] = (True, said)
    names = {d.name: d.path for d in drops}
    for entry in entries("failed"):
        name = entry.get("name")
        if name in names and "error" in entry:
            hint = entry.get("hint")
            found[names[name]] = (False, entry["error"] + (f"\n  hint: {hint}" if hint else ""))
    return found


def _as_account(
    app: App, where: target.Target, args: list[str], said: int = SAID
) -> tuple[int, str, str]:
    """`core ARGS` as the layer's account: (exit status, the first `said` bytes of its
    stdout, of its stderr)."""
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
        return returncode, _head(out, said), _head(err, said)


def install_drop(
    app: App,
    where: target.Target,
    drop: inbox.Drop,
    host_manifest: Callable[[], manifest.Manifest | None],
    *,
    granted: bool = False,
) -> tuple[bool, str]:
    """One settled drop installed into its layer: (ok, what to say)."""
    if not granted:
        _grant(app, drop, host_manifest)
    args = ["install", "--quiet", "--profile", drop.profile, drop.path]
    if target.must_run_as_account(where):
        returncode, *said = _as_account(app, where, args)
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
