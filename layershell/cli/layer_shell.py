"""The click face of `layer-shell`: its --help and shell completion.

The program itself parses its arguments by hand (layershell.layers.main) to stay fast;
this definition mirrors those options so that click can document and complete them.
"""

from __future__ import annotations

import click

from layershell import __version__, paths
from layershell.layers import stack

HELP = """Enter a layer: a shell, a command (-c) or a program (--).

\b
  layer-shell                      interactive shell in your own layer
  layer-shell -c 'CMD' [ARG0 ...]  run CMD with the layer's shell, as sh -c
  layer-shell --layer otto -- PROG ARGS
                                   run PROG directly in layer otto
  layer-shell -l                   login shell (also when argv[0] starts with -)

It works as an account's login shell in /etc/passwd: su - arne, ssh host CMD
and ssh host all land in the account's layer. Nobody enters a layer more
privileged than their own. Exit status is the program's (128+N if killed by
signal N); signals sent to layer-shell's pid reach the program, which keeps it.

Completion: eval "$(_LAYER_SHELL_COMPLETE=bash_source layer-shell)" (bash),
zsh_source or fish_source for other shells.
"""


def _complete_layers(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    try:
        where = paths.detect()
        names = stack.load(where).names
    except Exception:  # completion must never print a traceback into the shell
        return []
    return [n for n in names if n.startswith(incomplete)]


@click.command(help=HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--layer", metavar="NAME", shell_complete=_complete_layers, help="Layer to enter.")
@click.option("-l", "--login", is_flag=True, help="Login shell: clean environment, home as cwd.")
@click.option("-c", "command", metavar="COMMAND", help="Run COMMAND with the layer's shell.")
@click.argument("program", nargs=-1, type=click.UNPROCESSED)
@click.version_option(__version__, prog_name="layer-shell")
def layer_shell(
    layer: str | None, login: bool, command: str | None, program: tuple[str, ...]
) -> None:
    # Reached only for --help/--version/completion, which exit inside click.
    raise click.UsageError("layer-shell parses its own arguments; see --help")


def click_main(argv: list[str]) -> None:
    layer_shell.main(args=argv[1:], prog_name="layer-shell")
