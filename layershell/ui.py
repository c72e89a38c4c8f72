"""Output for people and for machines.

rich consoles with markup and highlighting off, so a path such as `[x]` prints as is;
colour only on a TTY and never with NO_COLOR (rich honours it).
"""

from __future__ import annotations

import sys

from rich.console import Console

from layershell.errors import ConfigError, LayershellError


def console(stderr: bool = False) -> Console:
    return Console(stderr=stderr, markup=False, highlight=False, soft_wrap=True)


def report_error(prog: str, exc: LayershellError) -> int:
    """Print an error the way every command does and return its exit status."""
    if isinstance(exc, ConfigError):
        sys.stderr.writelines(f"{problem}\n" for problem in exc.problems)
    else:
        sys.stderr.write(f"{prog}: error: {exc.message}\n")
    if exc.hint:
        sys.stderr.write(f"  hint: {exc.hint}\n")
    return exc.exit_code
