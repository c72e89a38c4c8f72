"""`core shell`."""

from __future__ import annotations

import sys

import click

from layershell.cli import common, complete
from layershell.cli.app import App
from layershell.layers import access, handover, stack
from layershell.layers.launch import Request

HELP = """Open a session in a layer as its account (needs root).

\b
The layers, from most to least privileged:
  core (0)  the host itself; its admin has real root through sudo
  arne (1)  pseudo-root: uid 0 inside a user namespace, its own uid outside;
            sees core's /usr and /etc read-only, writes only its own store;
            installs packages
  otto (2)  a plain user without capabilities (no_new_privs, setuid inert);
            sees arne's packages read-only; runs code

Root opens a real PAM session (service layer-shell) for the layer's account,
refuses accounts that PAM account management refuses (expired, or locked with
usermod --lock --expiredate 1), switches to the account and enters the layer;
the session is closed when the shell or COMMAND exits. The exit status
is COMMAND's (128+N if it was killed by signal N).

\b
Examples:
  sudo core shell                     # a shell in arne, as arne (pseudo-root)
  sudo core shell --layer otto -- id  # run one command in otto
"""


@click.command(help=HELP)
@common.options(json_result=False)
@click.option(
    "--layer",
    "layer_name",
    metavar="NAME",
    shell_complete=complete.layers,
    help="Layer to enter (default: level 1).",
)
@click.option("-l", "--login", is_flag=True, help="Start a login shell.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def shell(app: App, layer_name: str | None, login: bool, command: tuple[str, ...]) -> None:
    layers = stack.load(app.paths)
    target = access.find(layers, layer_name) if layer_name else layers.layers[1]
    request = Request(program=command, login=login or not command)
    sys.exit(handover.run(app.paths, layers, target, request))
