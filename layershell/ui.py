"""Output for people and for machines.

rich consoles with markup and highlighting off, so a path such as `[x]` prints as is;
colour only on a TTY and never with NO_COLOR (rich honours it).
"""

from __future__ import annotations

import re
import sys
from typing import Any

from rich.console import Console

from layershell.errors import ConfigError, LayershellError
from layershell.text import printable


class _Console(Console):
    """A rich console that never writes a control character it was handed."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        super().print(*(printable(o) if isinstance(o, str) else o for o in objects), **kwargs)


def console(stderr: bool = False, quiet: bool = False) -> Console:
    return _Console(stderr=stderr, markup=False, highlight=False, soft_wrap=True, quiet=quiet)


# A `core VERB` in a hint, to be given the --root the failing command ran under.
_CORE_VERB = re.compile(
    r"(?<![\w/.-])core (?=(?:check|expose|firstboot|gc|hold|ignition|inbox|info|init|install"
    r"|list|remove|repair|repo|rollback|shell|unexpose|unhold|update)\b)"
)


def with_root(hint: str, root: str | None) -> str:
    """The hint's core commands as they must be typed under --root ROOT (else unchanged):
    a hint that drops --root would act on the host instead."""
    if not root:
        return hint
    import shlex

    typed = f"core --root {shlex.quote(root)} "
    return _CORE_VERB.sub(lambda _match: typed, hint)  # a function: ROOT is no template


def report_error(prog: str, exc: LayershellError, root: str | None = None) -> int:
    """Print an error the way every command does and return its exit status."""
    if isinstance(exc, ConfigError):
        sys.stderr.writelines(f"{printable(str(problem))}\n" for problem in exc.problems)
    else:
        sys.stderr.write(f"{prog}: error: {printable(exc.message)}\n")
    if exc.hint:
        sys.stderr.write(f"  hint: {printable(with_root(exc.hint, root))}\n")
    return exc.exit_code


def report_os_error(prog: str, exc: OSError) -> int:
    """An OSError no command turned into an error of its own (cli/core.py; quick.py
    writing the listing): a file the user named, a directory they cannot write, a
    closed or full stdout. Says which, no traceback; exit status 1."""
    import errno

    where = f": {exc.filename}" if exc.filename else ""
    sys.stderr.write(f"{prog}: error: {printable(str(exc.strerror or exc))}{printable(where)}\n")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        sys.stderr.write(
            "  hint: the filesystem is full: `core gc --partial` removes unfinished "
            "downloads, `core gc` versions no longer active, `core remove NAME` a "
            "package; or free space there another way, then run it again\n"
        )
    return 1
