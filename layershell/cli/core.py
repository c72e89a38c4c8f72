"""`core`: the administrator's command. Each verb lives in its own module."""

from __future__ import annotations

import sys
from typing import Any

import click

from layershell import __version__
from layershell.cli.app import make_app
from layershell.errors import LayershellError

# Each verb's module (in layershell/cli/) and object, imported only when the verb runs
# or --help lists it: `core list` does not pay for importing every other command.
VERBS = {
    "check": ("check", "check"),
    "expose": ("expose", "expose"),
    "firstboot": ("firstboot", "firstboot"),
    "gc": ("update_cmd", "gc"),
    "hold": ("update_cmd", "hold"),
    "ignition": ("ignition_cmd", "ignition"),
    "inbox": ("inbox_cmd", "inbox_cmd"),
    "info": ("listing", "info"),
    "init": ("init", "init"),
    "install": ("install", "install"),
    "list": ("listing", "list_"),
    "remove": ("remove", "remove"),
    "repair": ("repair", "repair_cmd"),
    "repo": ("repo_cmd", "repo_group"),
    "rollback": ("update_cmd", "rollback"),
    "shell": ("shell", "shell"),
    "unexpose": ("expose", "unexpose"),
    "unhold": ("update_cmd", "unhold"),
    "update": ("update_cmd", "update_cmd"),
}


class Group(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(VERBS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in VERBS:
            return None
        import importlib

        module, name = VERBS[cmd_name]
        command = getattr(importlib.import_module(f"layershell.cli.{module}"), name)
        assert isinstance(command, click.Command)
        return command

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
            from layershell import ui

            sys.exit(ui.report_os_error("core", exc))


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


def main() -> None:
    cli(prog_name="core")
