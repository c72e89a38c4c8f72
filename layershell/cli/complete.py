"""What `core` completes beyond click's own (commands, options, file paths for
click.Path options such as --config): layer names and package names.

Completion parses the command line without running the group's callback, so there is
no App: the paths come from the group's own options. A completer never prints and
never fails: whatever goes wrong, it offers nothing."""

from __future__ import annotations

import os

import click
from click.shell_completion import CompletionItem

from layershell import paths as paths_mod


def _paths(ctx: click.Context) -> paths_mod.Paths:
    top = ctx.find_root()
    return paths_mod.detect(root=top.params.get("root"), rootless=top.params.get("rootless"))


def layers(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[str]:
    from layershell.layers import stack

    try:
        where = _paths(ctx)
        names = stack.load(where).names
    except Exception:  # completion must never print a traceback into the shell
        return []
    return [n for n in names if n.startswith(incomplete)]


def packages(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[str]:
    """Installed packages (as `core list` shows them)."""
    from layershell.layers import stack
    from layershell.packages import inventory

    try:
        where = _paths(ctx)
        layers_ = stack.load(where)
        if where.mode == paths_mod.ROOTLESS:
            import pwd

            layers_ = layers_.with_account(pwd.getpwuid(os.getuid()).pw_name)
        rows = inventory.installed(where, layers_, warn=lambda _line: None)
    except Exception:  # a record that cannot be read offers nothing, quietly
        return []
    return sorted({r.name for r in rows if r.name.startswith(incomplete)})


def install_items(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem | str]:
    """What `core install` takes: the manifest's package names, and files (tarballs)."""
    names: list[CompletionItem | str] = []
    try:
        from layershell.packages import manifest

        config = ctx.params.get("config") or _paths(ctx).manifest_file
        if os.path.exists(config):
            loaded = manifest.load_manifest(config)
            names = [p.name for p in loaded.packages if p.name.startswith(incomplete)]
    except Exception:
        names = []
    return [*names, CompletionItem(incomplete, type="file")]


def own_scripts(core: click.Command) -> dict[str, dict[str, str]]:
    """click's completion scripts for `core` (the group it is given: the one running)
    and layer-shell: bash always, zsh and fish when the host has them (what core init
    installs, exposure/completions.py)."""
    import shutil

    from click.shell_completion import get_completion_class

    from layershell.cli import layer_shell

    shells = ["bash", *(s for s in ("zsh", "fish") if shutil.which(s))]
    programs = (("core", core), ("layer-shell", layer_shell.layer_shell))
    scripts: dict[str, dict[str, str]] = {}
    for name, command in programs:
        var = "_" + name.replace("-", "_").upper() + "_COMPLETE"
        for shell in shells:
            cls = get_completion_class(shell)
            assert cls is not None  # click ships all three
            scripts.setdefault(name, {})[shell] = cls(command, {}, name, var).source()
    return scripts
