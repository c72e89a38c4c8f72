"""Review 11: the fast path (launcher.c reading fast.py's compiled file) and the shims the
executor reads itself, attacked.

Each test states the attack; it failed against the code it was written for and passes
against the fix.
"""

from __future__ import annotations

from pathlib import Path

from tests.support import Identity
from tests.test_fast_path import pair

# An executor that shows the command line it was given, in place of the real one.
SHOW_ARGV = "#!/bin/sh\nprintf '<%s>' \"$@\"; echo\n"


def test_an_empty_command_gets_no_job_control_on_either_path(fresh_rootless: Identity) -> None:
    """`layer-shell -c ''` is a command, not an interactive shell: the executor must not
    give it job control (TIOCSPGRP/TIOCSCTTY), or a child it leaves behind (a login
    shell's ~/.profile is the layer's, which package code writes) can take the caller's
    terminal back after the call returned and read what the caller types next
    (enter.c, block_terminal_injection). The fast path got this right; the Python path,
    testing `not request.command`, took the empty command for none and granted it."""
    ident = fresh_rootless
    python, fast_only = pair(Path(ident.layer_shell))
    executor = ident.home / ".local/share/layershell/libexec/layershell-enter"
    executor.write_text(SHOW_ARGV)  # keeps its owner and mode
    for args in (("-c", ""), ("-lc", ""), ("-c", "", "zero", "one")):
        slow = ident.run([str(python), *args])
        quick = ident.run([str(fast_only), *args])
        assert slow.returncode == quick.returncode == 0, (args, slow.stderr, quick.stderr)
        assert b"<--job-control>" not in slow.stdout, args
        assert slow.stdout == quick.stdout, args
    # ... while an interactive shell still gets it, both ways
    for launcher in (python, fast_only):
        assert b"<--job-control>" in ident.run([str(launcher)]).stdout
