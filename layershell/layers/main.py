"""`layer-shell`: enter a layer. Also an account's login shell in /etc/passwd.

This is the hot path: every call of `layer-shell` (and every login) pays for what is
imported here, so argument parsing is done by hand and only os, sys, pwd, marshal and
ctypes are loaded. `--help` and shell completion go through the click definition in
layershell.cli.layer_shell, which is imported only then.
"""

from __future__ import annotations

import os
import sys

from layershell.errors import ConfigError, LayershellError
from layershell.layers.launch import Request

USAGE = "usage: layer-shell [-l] [--layer NAME] [-c COMMAND [ARG0 [ARG...]] | -- PROGRAM [ARG...]]"


class UsageError(LayershellError):
    exit_code = 2


def parse(argv: list[str]) -> tuple[str | None, Request]:
    """(layer name or None, request). argv[0] starting with '-' means a login shell."""
    login = os.path.basename(argv[0]).startswith("-") if argv else False
    layer: str | None = None
    only = ""  # --writable-only DIR: what install.sh runs with (launch.writable_only)
    args = list(argv[1:])
    while args:
        arg = args.pop(0)
        if arg in ("-l", "--login"):
            login = True
        elif arg == "--writable-only":
            if not args:
                raise UsageError("--writable-only needs a directory", USAGE)
            only = args.pop(0)
        elif arg == "--layer":
            if not args:
                raise UsageError("--layer needs a layer name", USAGE)
            layer = args.pop(0)
        elif arg.startswith("--layer="):
            layer = arg.split("=", 1)[1]
        elif arg in ("-c", "-lc", "-cl"):
            login = login or arg != "-c"
            if not args:
                raise UsageError("-c needs a command", USAGE)
            return layer, Request(
                command=args[0], command_args=tuple(args[1:]), login=login, writable_only=only
            )
        elif arg == "--":
            if not args:
                raise UsageError("-- needs a program to run", USAGE)
            return layer, Request(program=tuple(args), login=login, writable_only=only)
        elif arg.startswith("-"):
            raise UsageError(f"unknown option {arg}", "see layer-shell --help")
        else:
            return layer, Request(program=(arg, *args), login=login, writable_only=only)
    return layer, Request(login=login, writable_only=only)


def wants_help(argv: list[str]) -> bool:
    """-h/--help/--version among layer-shell's own options (not after -c or --)."""
    args = iter(argv[1:])
    for arg in args:
        if arg in ("-h", "--help", "--version"):
            return True
        if arg in ("--layer", "--writable-only"):
            next(args, None)  # its value
        elif arg in ("-c", "-lc", "-cl", "--") or not arg.startswith("-"):
            return False
    return False


def run(argv: list[str]) -> int:
    import pwd

    from layershell import paths
    from layershell.layers import access, launch, sandbox, stack

    name, request = parse(argv)
    where = paths.detect()
    uid = os.getuid()
    pw = pwd.getpwuid(uid)
    layers = stack.load(where)
    if where.mode == paths.ROOTLESS:
        if uid == 0:
            raise LayershellError(
                "rootless mode is for ordinary users; as root it would run packages as host root",
                "use system mode: core init, then core shell --layer NAME",
            )
        layers = layers.with_account(pw.pw_name)
    target = (
        access.find(layers, name)
        if name
        else access.default_layer(layers, where.mode, uid, pw.pw_name)
    )
    access.check_entry(layers, where.mode, uid, pw.pw_name, target)
    if target.level == 0:
        # The host layer: no sandbox, just the shell (root, or the rootless owner).
        program, args = launch.program_argv(target, request)
        sandbox.exec_program(program, args, launch.caller_environment(), target.name)
    if uid == 0:
        from layershell.layers import handover

        return handover.run(where, layers, target, request)
    home = launch.home_of(target, where, pw.pw_dir)
    try:
        cwd = home if request.login else os.getcwd()
    except OSError:
        cwd = home
    spec = launch.spec_for(
        layers,
        target,
        where,
        request,
        user=pw.pw_name,
        passwd_home=pw.pw_dir,
        cwd=cwd,
        base_env=launch.caller_environment(),
    )
    sandbox.enter(spec, where.executor)
    return 1  # not reached: enter() execs or raises


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv if argv is None else argv
    if "_LAYER_SHELL_COMPLETE" in os.environ or wants_help(argv):
        from layershell.cli.layer_shell import click_main

        click_main(argv)
        return
    try:
        code = run(argv)
    except ConfigError as exc:
        sys.stderr.writelines(f"{p}\n" for p in exc.problems)
        code = exc.exit_code
    except LayershellError as exc:
        sys.stderr.write(f"layer-shell: {exc.message}\n")
        if exc.hint:
            sys.stderr.write(f"  hint: {exc.hint}\n")
        code = exc.exit_code
    sys.exit(code)


if __name__ == "__main__":
    main()
