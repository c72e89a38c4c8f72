"""`core firstboot`: what layershell-firstboot.service runs, once per host."""

from __future__ import annotations

import os
import sys
import time

import click

from layershell.atomic import write_atomic
from layershell.cli import common, inbox_cmd
from layershell.cli import install as install_cmd
from layershell.cli.app import App, installed
from layershell.host import init
from layershell.packages import manifest


def _step(ctx: click.Context, command: click.Command, **params: object) -> bool:
    """Run another core command in this process; True if it succeeded."""
    try:
        ctx.invoke(command, **params)
    except SystemExit as exc:
        return not exc.code
    return True


@click.command()
@common.options()
@common.config_option
@click.option("--force", is_flag=True, help="Run even if the stamp says it already ran.")
@click.pass_context
def firstboot(ctx: click.Context, config: str | None, force: bool) -> None:
    """Set the host up once: core init, the inbox, then the manifest's packages that the
    inbox did not already bring. On success writes <state>/firstboot.stamp, which keeps
    layershell-firstboot.service from ever running again; on failure exits 1 (visible in
    systemctl status and the journal) and runs again at the next boot."""
    app: App = ctx.obj
    stamp = app.paths.firstboot_stamp
    if os.path.exists(stamp) and not force:
        app.out.print(f"first boot already done ({stamp})")
        return
    report = init.init(app.paths, create_users=True)
    for line in report.done:
        app.err.print(line)
    for line in report.done:
        app.result.change("init", what=line)
    from layershell.cli import init as init_cmd

    for line in init_cmd.install_completions(app):
        app.err.print(f"warning: {line}")
    manifest_file = common.manifest_path(app, config)
    ok = _step(
        ctx, inbox_cmd.inbox_cmd, config=config, directory=None, requeue_if_pending=False,
        linger=0.0,
    )  # fmt: skip
    if config is not None or os.path.exists(manifest_file):
        loaded = manifest.load_manifest(manifest_file)
        have = {r.name for r in installed(app) if r.active}
        missing = [p.name for p in loaded.packages if p.name not in have]
        if missing:
            app.err.print(f"installing from {manifest_file}: {', '.join(missing)}")
            ok = _step(
                ctx, install_cmd.install, config=manifest_file, no_wait=False,
                connect_timeout=10.0, read_timeout=30.0, retries=3, profile=None,
                items=tuple(missing),
            ) and ok  # fmt: skip
    if not ok:
        app.err.print("core firstboot: something failed (see above); it runs again next boot")
        sys.exit(1)
    from layershell.cli import update_cmd

    update_cmd.remember_os(app)  # the OS version these packages were resolved for
    write_atomic(stamp, time.strftime("%Y-%m-%dT%H:%M:%S%z\n"), mode=0o644)
    app.out.print(f"first boot done; wrote {stamp}")
    app.result.change("wrote", path=stamp)
