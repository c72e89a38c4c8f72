"""What every `core` command takes alike: `--json`, `-q`, `-v` (docs/design.md,
"Commands"), and the result object a command fills and `--json` prints.

A command reports what it changed and what failed into `app.result`; its text output
stays as it is. With --json, stdout carries that one object and nothing else (the text
goes nowhere), so a script reads one document whatever the command did, also when it
failed: the object then names the error, and the exit status is the same as without
--json. -q keeps stderr to warnings and errors; -v adds what root hands to an account.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import click

from layershell.errors import ConfigError, LayershellError

F = TypeVar("F", bound=Callable[..., Any])
FIXED = ("command", "ok", "exit_status", "changed", "failed")  # every result has these


@dataclass
class Result:
    """What a command did: mutable, filled as it goes (a frozen App holds one)."""

    command: str
    changed: list[dict[str, object]] = field(default_factory=list)
    failed: list[dict[str, object]] = field(default_factory=list)
    extra: dict[str, object] = field(default_factory=dict)

    def change(self, action: str, **what: object) -> None:
        self.changed.append({"action": action, **what})

    def fail(self, name: str | None, error: LayershellError | str) -> None:
        entry: dict[str, object] = {"name": name} if name else {}
        if isinstance(error, ConfigError):
            entry["problems"] = [str(p) for p in error.problems]
        if isinstance(error, LayershellError):
            entry["error"] = error.message
            entry["hint"] = error.hint
        else:
            entry["error"] = error
        self.failed.append(entry)

    def merge(self, other: dict[str, object]) -> None:
        """Another core process's result (the layer account's, run for root)."""
        for key, into in (("changed", self.changed), ("failed", self.failed)):
            value = other.get(key)
            if isinstance(value, list):
                into.extend(x for x in value if isinstance(x, dict))
        self.extra.update((k, v) for k, v in other.items() if k not in FIXED)

    def as_json(self, status: int) -> dict[str, object]:
        return {
            **self.extra,  # what the command adds (update --dry-run: "plan")
            "command": self.command,
            "ok": status == 0,
            "exit_status": status,
            "changed": self.changed,
            "failed": self.failed,
        }


def options(json_result: bool = True) -> Callable[[F], F]:
    """-q, -v and (unless the command has no result, as `core shell`) --json."""

    def decorate(command: F) -> F:
        @functools.wraps(command)
        def run(*args: Any, quiet: bool, verbose: bool, **kwargs: Any) -> Any:
            as_json = bool(kwargs.pop("json_result", False))
            ctx = click.get_current_context()
            if ctx.obj.result.command != "core":
                # Run by another command (core firstboot runs inbox and install): its
                # output settings and its one result hold.
                return ctx.invoke(command, *args, **kwargs)
            if quiet and verbose:
                raise click.UsageError("-q and -v do not go together")
            ctx.obj = ctx.obj.configured(
                command=ctx.command_path.removeprefix("core ").strip() or "core",
                as_json=as_json,
                verbosity=-1 if quiet else 1 if verbose else 0,
            )
            if not as_json:
                return ctx.invoke(command, *args, **kwargs)
            return _with_result(ctx, command, args, kwargs)

        wrapped: Any = run
        if json_result:
            wrapped = click.option(
                "--json",
                "json_result",
                is_flag=True,
                help="Print one JSON object: what changed, what failed, the exit status.",
            )(wrapped)
        wrapped = click.option(
            "-v", "--verbose", is_flag=True, help="Also say what runs as a layer's account."
        )(wrapped)
        wrapped = click.option(
            "-q", "--quiet", is_flag=True, help="Only warnings and errors on stderr."
        )(wrapped)
        return wrapped  # type: ignore[no-any-return]

    return decorate


def _with_result(
    ctx: click.Context, command: Callable[..., Any], args: Any, kwargs: dict[str, Any]
) -> Any:
    result: Result = ctx.obj.result
    # The status the process ends with, as the group makes it (cli/core.py): anything
    # not named below, an OSError the group reports or a bug, ends it with 1, never 0.
    status = 1
    try:
        value = ctx.invoke(command, *args, **kwargs)
        status = 0
        return value
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
        raise
    except click.exceptions.Exit as exc:
        status = exc.exit_code
        raise
    except LayershellError as exc:
        result.fail(None, exc)
        status = exc.exit_code
        raise  # the group prints it on stderr, as without --json
    except click.ClickException as exc:
        result.fail(None, exc.format_message())
        status = exc.exit_code
        raise
    except (KeyboardInterrupt, click.Abort):
        status = 130
        raise
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        result.fail(None, f"{exc.strerror or exc}{where}")
        raise
    finally:
        json.dump(result.as_json(status), sys.stdout, indent=1)
        sys.stdout.write("\n")
        sys.stdout.flush()


def forwarded(app: Any, args: list[str]) -> list[str]:
    """The options of `options` as the layer account's core must get them with `args`:
    a verbosity `args` sets itself (root's own `repair --quiet`) is kept, as -q and -v
    do not go together."""
    own = args[: args.index("--")] if "--" in args else args
    flags = ["--json"] * (app.as_json and "--json" not in own)
    if {"-q", "--quiet", "-v", "--verbose"} & set(own):
        return flags
    return flags + ["--quiet"] * (app.verbosity < 0) + ["--verbose"] * (app.verbosity > 0)


def config_option(command: F) -> F:
    """`--config FILE`: the manifest, the same option on every command that reads one
    (default: the host's, /etc/layershell/composable.yaml or its rootless place)."""
    return click.option(
        "--config",
        "config",
        metavar="FILE",
        type=click.Path(dir_okay=False),
        help="The manifest (default: the host's).",
    )(command)


def manifest_path(app: Any, config: str | None, positional: str | None = None) -> str:
    """The manifest a command reads: --config, else the FILE it was given the older way,
    else the host's."""
    if config is not None and positional is not None and config != positional:
        raise click.UsageError("give the manifest once: --config FILE")
    return config or positional or str(app.paths.manifest_file)


OWN = ("quiet", "verbose", "json_result")  # forwarded() passes these, from the app


def argv_of(ctx: click.Context) -> list[str]:
    """This command's own command line, rebuilt from what click parsed, for the layer
    account's core to run the same (root hands its work over, cli/app.py): one option
    per value, files as absolute paths (the account runs in /), and `--` before the
    arguments, so an item that starts with `-` stays an item."""
    args = [str(ctx.info_name)]
    items: list[str] = []
    for param in ctx.command.params:
        value = ctx.params.get(param.name or "")
        if param.name in OWN or value is None:
            continue
        if isinstance(param, click.Argument):
            values = value if isinstance(value, (tuple, list)) else [value]
            items += [_absolute(str(v), param) for v in values]
            continue
        assert isinstance(param, click.Option)
        flag = max(param.opts, key=len)  # the long form
        if param.is_flag:
            args += [flag] if value and value != param.default else []
        elif value != param.default:
            for v in value if param.multiple else [value]:
                args += [flag, _absolute(str(v), param)]
    return [*args, "--", *items] if items else args


class FileOrName(click.types.StringParamType):
    """An item that is a file when one of that name exists, else a word (core install's
    tarballs, references and names): argv_of forwards only such a file as a path."""

    name = "item"


FILE_OR_NAME = FileOrName()


def _absolute(value: str, param: click.Parameter) -> str:
    """A file's value as an absolute path. Only a parameter that takes a file: a package
    name, a version or a profile that happens to name a file in root's cwd (the shim
    directory has one per package) is passed as it was typed."""
    if isinstance(param.type, click.Path) or (
        isinstance(param.type, FileOrName) and os.path.isfile(value)
    ):
        return os.path.abspath(value)
    return value
