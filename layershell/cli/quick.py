"""core's quick front: `core [--root DIR] [--rootless|--system] list [--json] [--all]`
answered before click and rich are imported (tens of milliseconds of a call that scripts
and prompts run often). It renders through list_view, as the click command does, and
hands anything else (another option, a verb, --help) to the click group untouched."""

from __future__ import annotations

import os
import sys

LIST_OPTIONS = {"--json", "--all"}


def parse(argv: list[str]) -> tuple[str | None, bool | None, bool, bool] | None:
    """(--root, --rootless/--system, --json, --all) of a plain `core list`, else None."""
    root: str | None = None
    rootless: bool | None = None
    args = list(argv)
    while args and args[0].startswith("-"):
        arg = args.pop(0)
        if arg == "--root" and args:
            root = args.pop(0)
        elif arg.startswith("--root="):
            root = arg[len("--root=") :]
        elif arg in ("--rootless", "--system"):
            rootless = arg == "--rootless"
        else:
            return None
    if args[:1] != ["list"] or not set(args[1:]) <= LIST_OPTIONS:
        return None
    return root, rootless, "--json" in args, "--all" in args


def main(argv: list[str]) -> None:
    """Answer and exit, or return for the click group to answer."""
    parsed = parse(argv)
    if parsed is None or "_CORE_COMPLETE" in os.environ:
        return
    root, rootless, as_json, show_all = parsed
    root = root or os.environ.get("LAYERSHELL_ROOT") or None  # click's envvar for --root
    from layershell import paths
    from layershell.cli import list_view
    from layershell.errors import LayershellError
    from layershell.layers import stack

    try:
        where = paths.detect(root=root, rootless=rootless)
        text = list_view.render(
            where, stack.for_caller(where), as_json=as_json, show_all=show_all,
            columns=tuple(range(len(list_view.COLUMNS))), width=list_view.terminal_width(),
            warn=lambda line: print(line, file=sys.stderr),
        )  # fmt: skip
    except LayershellError as exc:
        from layershell import ui

        sys.exit(ui.report_error("core", exc, root))
    except OSError:
        return  # nothing written yet: the click group reports it, as for every command
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except OSError as exc:  # a closed pipe (core list | head), a full disk: as click says it
        from layershell import ui

        # What is still buffered goes nowhere: no second error as the interpreter exits.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(ui.report_os_error("core", exc))
    sys.exit(0)
