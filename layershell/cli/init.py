"""`core init`."""

from __future__ import annotations

import click

from layershell.cli import common
from layershell.cli.app import App
from layershell.host import init as host_init


@click.command()
@common.options()
@click.option(
    "--create-users",
    is_flag=True,
    help="Create the layer accounts that do not exist yet (layer-shell as their shell).",
)
@click.option(
    "--mounts",
    is_flag=True,
    help="Only mount the packages directory nosuid,nodev (layershell-mounts.service).",
)
@click.pass_obj
def init(app: App, create_users: bool, mounts: bool) -> None:
    """Create the layer stores, views, PAM service and layer-shell launcher.

    Idempotent: running it again changes only what is missing or wrong, and it never
    overwrites a file that layershell did not write.
    """
    report = host_init.init(app.paths, create_users=create_users, mounts_only=mounts)
    for line in report.done:
        app.out.print(line)
        app.result.change("init", what=line)
    if not mounts:
        report.warnings.extend(install_completions(app))
    for line in report.warnings:
        app.err.print(f"warning: {line}")
    app.out.print(
        f"layer stack ready ({app.paths.mode} mode, {len(report.done)} changes, "
        f"{len(report.unchanged)} already in place)"
    )


def install_completions(app: App) -> list[str]:
    """core's and layer-shell's own completion where the shells look; the warnings."""
    from layershell.cli import complete
    from layershell.exposure import completions

    core = click.get_current_context().find_root().command
    done = completions.write_own(app.paths, complete.own_scripts(core))
    for path in done.written:
        app.out.print(f"wrote {path} (completion)")
        app.result.change("init", what=f"wrote {path}")
    return done.collisions
