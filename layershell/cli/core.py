"""`core`: the administrator's command. Each verb lives in its own module."""

from __future__ import annotations

import errno
import sys
from typing import Any

import click

from layershell import __version__
from layershell.cli import check as check_cmd
from layershell.cli import expose as expose_cmd
from layershell.cli import firstboot as firstboot_cmd
from layershell.cli import ignition_cmd, inbox_cmd, listing, repo_cmd, update_cmd
from layershell.cli import init as init_cmd
from layershell.cli import install as install_cmd
from layershell.cli import remove as remove_cmd
from layershell.cli import repair as repair_cmd
from layershell.cli import shell as shell_cmd
from layershell.cli.app import make_app
from layershell.errors import LayershellError


class Group(click.Group):
    """Turns LayershellError into a message and an exit status, in one place."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        """click's own errors (a usage error, an interrupt) in core's format too: `core:
        error:` and a hint, exit 2 for bad usage and 130 for Ctrl-C."""
        kwargs["standalone_mode"] = False
        try:
            status = super().main(*args, **kwargs)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else "core"
            sys.stderr.write(f"core: error: {exc.format_message()}\n")
            sys.stderr.write(f"  hint: see {where} --help\n")
            sys.exit(2)
        except click.ClickException as exc:
            sys.stderr.write(f"core: error: {exc.format_message()}\n")
            sys.exit(exc.exit_code)
        except click.Abort:
            sys.stderr.write("core: interrupted\n")
            sys.exit(130)
        sys.exit(status if isinstance(status, int) else 0)

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except LayershellError as exc:
            from layershell import ui

            root = ctx.params.get("root")
            sys.exit(ui.report_error("core", exc, root if isinstance(root, str) else None))
        except KeyboardInterrupt:
            # As a shell reports SIGINT, not click's "Aborted!" and 1.
            sys.stderr.write("core: interrupted\n")
            sys.exit(130)
        except OSError as exc:
            # A file the user named or a directory they cannot write: say which, no traceback.
            where = f": {exc.filename}" if exc.filename else ""
            sys.stderr.write(f"core: error: {exc.strerror or exc}{where}\n")
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                sys.stderr.write(
                    "  hint: the filesystem is full: `core gc --partial` removes unfinished "
                    "downloads, `core gc` versions no longer active, `core remove NAME` a "
                    "package; or free space there another way, then run it again\n"
                )
            sys.exit(1)


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from layershell.host import origin

    click.echo(origin.version_text(__version__))
    ctx.exit()


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--root",
    metavar="DIR",
    envvar="LAYERSHELL_ROOT",
    help="Relocate every layershell path under DIR (tests, image preparation).",
)
@click.option(
    "--rootless/--system",
    "rootless",
    default=None,
    help="Force rootless mode (every layer runs as you) or system mode.",
)
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show the version and where core runs from (extension, venv or checkout).",
)
@click.pass_context
def cli(ctx: click.Context, root: str | None, rootless: bool | None) -> None:
    """Manage the layers of this host: core (the host) -> arne (pseudo-root, installs
    packages) -> otto (plain user, runs code)."""
    ctx.obj = make_app(root, rootless)


cli.add_command(check_cmd.check)
cli.add_command(expose_cmd.expose)
cli.add_command(expose_cmd.unexpose)
cli.add_command(firstboot_cmd.firstboot)
cli.add_command(ignition_cmd.ignition)
cli.add_command(inbox_cmd.inbox_cmd)
cli.add_command(init_cmd.init)
cli.add_command(install_cmd.install)
cli.add_command(listing.list_)
cli.add_command(listing.info)
cli.add_command(remove_cmd.remove)
cli.add_command(repair_cmd.repair_cmd)
cli.add_command(repo_cmd.repo_group)
cli.add_command(shell_cmd.shell)
cli.add_command(update_cmd.update_cmd)
cli.add_command(update_cmd.rollback)
cli.add_command(update_cmd.gc)
cli.add_command(update_cmd.hold)
cli.add_command(update_cmd.unhold)


def main() -> None:
    cli(prog_name="core")
