"""Review 11: the fast path (launcher.c reading fast.py's compiled file) and the shims the
executor reads itself, attacked.

Each test states the attack; it failed against the code it was written for and passes
against the fix.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from layershell import paths as paths_mod
from layershell.layers import config, fast, stack
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


@pytest.mark.parametrize("during", ["parse", "cache-read"])
def test_an_edit_of_layers_yaml_while_the_stack_loads_leaves_the_fast_file_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, during: str
) -> None:
    """The launcher acts on the compiled file as long as layers.yaml's mtime and size are
    what the file records, and no fast-path call ever compiles it again. So the file must
    record the fingerprint the stack it holds was read under, as the marshal cache does
    (stack.write_cache): recorded after the parse, an edit landing during root's `core`
    (a revoked layer, network: false) keeps the old stack in force for every layer
    account until root runs core again, where the Python path would have read the edit."""
    where = paths_mod.Paths.system(str(tmp_path))
    os.makedirs(where.config_dir)
    os.makedirs(where.cache_dir)
    shutil.copy(stack.shipped_layers_file(), where.layers_file)

    def edit() -> None:
        with open(where.layers_file, "a") as f:
            f.write("# an edit, landing while the stack is being read\n")

    if during == "parse":
        parse = config.load_stack

        def parse_then_edit(path: str) -> object:
            layers = parse(path)
            edit()
            return layers

        monkeypatch.setattr(config, "load_stack", parse_then_edit)
    else:
        stack.load(where)  # both caches compiled from the file as it is
        read = stack.read_cache

        def read_then_edit(cache_file: str, source: str) -> object:
            layers = read(cache_file, source)
            edit()
            return layers

        monkeypatch.setattr(stack, "read_cache", read_then_edit)
    stack.load(where)
    fields = Path(fast.file_of(where)).read_bytes().split(b"\0")
    assert fields[7] == os.fsencode(where.layers_file) == fields[8]
    st = os.stat(where.layers_file)
    recorded = (fields[9], fields[10])
    assert recorded != (str(st.st_mtime_ns).encode(), str(st.st_size).encode()), (
        "the compiled file claims the edited layers.yaml for a stack read before the edit"
    )
