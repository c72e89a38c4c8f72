"""The manual pages core(1) and layer-shell(1), written in roff from the click definitions.

hatch_build.py runs `python -m layershell.cli.manual DIR` when the wheel is built and
ships the pages as the wheel's data (share/man/man1/): pip installs them where man-db
looks for a venv on PATH (<venv>/bin -> <venv>/share/man). The system extension and the
RPM copy them from there (docs/packaging.md, "RPM"). Nothing here runs when core does.

This module imports only the standard library and click; importing the commands brings
in what their modules import. A page is a function of the definitions, the version and
the date alone (SOURCE_DATE_EPOCH when set, else none), so one commit gives the same bytes
on every build. Every command of the group is walked, so a new one cannot be left out.
"""

from __future__ import annotations

import inspect
import os
import re
import sys
import time
from collections.abc import Iterator

import click

from layershell import __version__, paths

SECTION = "1"  # not 5: core(5) is the kernel's core dump file
PAGES = ("core", "layer-shell")

# docs/design.md, "Exit status" (tests/test_packaging.py keeps the two the same).
CORE_EXIT_STATUS = (
    ("0", "done (or nothing to do)"),
    (
        "1",
        "an operation failed: a package did not install, a service did not start, a version "
        "could not be resolved, the caller may not change the layer",
    ),
    (
        "2",
        "bad input or usage: a manifest, index or reference that does not validate, an option "
        "click refuses, a directory or program that does not exist; nothing changed",
    ),
    (
        "3",
        "a repository whose origin is not proven (unsigned, badly signed, an untrusted, "
        "expired or revoked key)",
    ),
    ("4", "a validly signed index that is expired (freeze) or older than one accepted (rollback)"),
    ("75", "busy: `--no-wait` and another operation holds the layer's lock (EX_TEMPFAIL)"),
    ("130", "interrupted (Ctrl-C)"),
)

# docs/layers.md, "Exit status, signals and the terminal" (likewise kept the same).
SHELL_EXIT_STATUS = (
    (
        "1",
        'refused entry; a sandbox that cannot be built (for example "cannot create the '
        "layer's namespaces\" when unprivileged user namespaces are disabled, or a missing "
        "store: run `core init`)",
    ),
    ("2", "usage error, unknown layer, bad layers.yaml"),
    ("126", 'PROGRAM exists but cannot be executed ("permission denied in layer ...")'),
    ("127", 'PROGRAM not found on the layer\'s PATH ("command not found in layer ...")'),
)

SEE_ALSO_DOCS = (
    "The documentation of layershell: README.md and docs/ in its source (layers.md, "
    "packages.md, repository.md, exposure.md, boot.md, updates.md, security.md); "
    "the RPM installs them in /usr/share/doc/layershell/."
)

CODE_RE = re.compile(r"`([^`]+)`")


def escape(text: str) -> str:
    """Text for a roff line: a backslash printed as one, `-` as a minus (so an option
    copied from the page is still an option), quotes as ASCII, never a control line."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    text = text.replace("'", "\\(aq").replace("`", "\\(ga")
    return "\\&" + text if text.startswith(".") else text


def inline(text: str) -> str:
    """escape(), with markdown's `code` spans in bold."""
    parts = CODE_RE.split(text)
    return "".join(
        f"\\fB{escape(part)}\\fR" if odd else escape(part) for odd, part in _alternate(parts)
    )


def _alternate(parts: list[str]) -> Iterator[tuple[bool, str]]:
    for i, part in enumerate(parts):
        if part:
            yield i % 2 == 1, part


def help_text(command: click.Command) -> str:
    """What `--help` shows of a command's text: cleaned, cut at click's \\f."""
    text = command.help if command.help is not None else command.short_help or ""
    return inspect.cleandoc(text).partition("\f")[0].strip()


def paragraphs(text: str) -> list[str]:
    """click's help text as roff: a paragraph per blank-line-separated block, filled,
    except a block marked \\b, which click prints as it is and so does the page."""
    lines: list[str] = []
    for block in re.split(r"\n\s*\n", text.strip()):
        if not block.strip():
            continue
        if lines:
            lines.append(".PP")
        rows = block.splitlines()
        if rows[0].strip() == "\b":
            lines.append(".nf")
            lines.extend(inline(row.rstrip()) or "\\&" for row in rows[1:])
            lines.append(".fi")
        else:
            lines.extend(inline(row.strip()) for row in rows if row.strip())
    return lines


def option_names(names: str) -> str:
    """`-q, --quiet` and `--config FILE` as roff: options bold, their values italic."""
    out: list[str] = []
    for word in names.split(" "):
        if word == "/":
            out.append("/")
        elif word.startswith("-"):
            name, comma = (word[:-1], ",") if word.endswith(",") else (word, "")
            out.append(f"\\fB{escape(name)}\\fR{comma}")
        elif word:
            out.append(f"\\fI{escape(word)}\\fR")
    return " ".join(out)


def options(command: click.Command, ctx: click.Context, *, with_help: bool) -> list[str]:
    lines: list[str] = []
    help_option = command.get_help_option(ctx)
    for param in command.get_params(ctx):
        if not isinstance(param, click.Option) or (param is help_option and not with_help):
            continue  # arguments have no help: the synopsis names them
        record = param.get_help_record(ctx)
        if record is None:  # hidden
            continue
        names, text = record
        lines += [".TP", option_names(names), inline(text) if text else "\\&"]
    return lines


def synopsis(command: click.Command, ctx: click.Context) -> str:
    pieces = " ".join(command.collect_usage_pieces(ctx))
    return f"{ctx.command_path} {pieces}".strip()


def walk(group: click.Group, ctx: click.Context) -> Iterator[tuple[click.Context, click.Command]]:
    """Every visible command under `group`, depth first, in `--help` order, each with the
    context `--help` would give it."""
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        sub = click.Context(command, info_name=name, parent=ctx)
        yield sub, command
        if isinstance(command, click.Group):
            yield from walk(command, sub)


def header(name: str, summary: str, date: str) -> list[str]:
    return [
        f'.\\" {name}({SECTION}): written by layershell/cli/manual.py from the click '
        "definitions; edit those, not this.",
        f'.TH {name.upper()} {SECTION} "{date}" "layershell {__version__}" "User Commands"',
        # Neither hyphenated nor justified: options and unit names stay whole.
        ".nh",
        ".ad l",
        ".SH NAME",
        f"{escape(name)} \\- {escape(summary)}",
    ]


def status_table(rows: tuple[tuple[str, str], ...]) -> list[str]:
    lines: list[str] = []
    for status, meaning in rows:
        lines += [".TP", f".B {status}", inline(meaning)]
    return lines


def definitions(rows: list[tuple[str, str]]) -> list[str]:
    lines: list[str] = []
    for term, meaning in rows:
        lines += [".TP", f"\\fB{escape(term)}\\fR", inline(meaning)]
    return lines


def see_also(pages: list[str]) -> list[str]:
    refs = [f"\\fB{escape(name)}\\fR({section})" for name, section in map(_ref, pages)]
    return [".SH SEE ALSO", ",\n".join(refs), ".PP", inline(SEE_ALSO_DOCS)]


def _ref(page: str) -> tuple[str, str]:
    name, _, section = page.rstrip(")").partition("(")
    return name, section


def environment() -> list[tuple[str, str]]:
    """paths.detect()'s variables, which both programs read."""
    return [
        (paths.ROOT_ENV, "DIR: system mode, every layershell path under DIR (core: `--root DIR`)"),
        (paths.MODE_ENV, "`rootless` or `system`: that mode (core: `--rootless`, `--system`)"),
    ]


def core_page(group: click.Group, date: str = "") -> str:
    ctx = click.Context(group, info_name="core")
    system = paths.Paths.system("/")
    rootless = paths.Paths.rootless("~", env={})
    lines = header("core", "manage the layers of a layershell host", date)
    lines += [".SH SYNOPSIS", escape(synopsis(group, ctx)), ".SH DESCRIPTION"]
    lines += paragraphs(help_text(group))
    lines += [
        ".PP",
        "Every command below takes \\fB\\-h\\fR, \\fB\\-\\-help\\fR, and "
        f"\\fB{escape('core COMMAND --help')}\\fR prints what this page says of it.",
        ".SH OPTIONS",
        *options(group, ctx, with_help=True),
        ".SH COMMANDS",
    ]
    for sub, command in walk(group, ctx):
        lines += [f'.SS "{escape(synopsis(command, sub))}"', *paragraphs(help_text(command))]
        if isinstance(command, click.Group):
            names = [n for n in command.list_commands(sub) if n]
            lines += [".PP", "Commands: " + ", ".join(f"\\fB{escape(n)}\\fR" for n in names) + "."]
        lines += options(command, sub, with_help=False)
    lines += [".SH EXIT STATUS", *status_table(CORE_EXIT_STATUS)]
    lines += [
        ".PP",
        inline(
            "Every error is printed the same way: `core: error: MESSAGE` and, on the next "
            "line, `hint: WHAT TO DO` (indented); a file's problems as "
            "`FILE:LINE:COL: key: message`, every one at once."
        ),
        ".SH ENVIRONMENT",
        *definitions(environment()),
        ".SH FILES",
        *definitions(
            [
                (system.layers_file, "the layer stack: layers, their accounts and profiles"),
                (
                    system.manifest_file,
                    "the host's manifest: what `core install` without ITEMS installs",
                ),
                (system.keys_dir + "/", "OpenPGP keys trusted to sign repositories"),
                (
                    system.state_dir + "/",
                    "layer stores, views, the record of installs, the executor "
                    "`layershell-enter` (libexec/)",
                ),
                (system.pkgs_dir + "/", "installed packages, one read-only tree a version"),
                (system.inbox_dir + "/", "tarballs dropped for `core inbox` (PROFILE/ACCOUNT/)"),
                (system.bin_dir + "/", "shims and the `layer-shell` launcher of `core init`"),
                (system.man_dir + "/", "the manual pages of installed packages"),
                (os.path.join(system.pam_dir, "layer-shell"), "the PAM service of `core shell`"),
                (
                    rootless.config_dir + "/, " + rootless.state_dir + "/",
                    "the same in rootless mode (XDG_CONFIG_HOME, XDG_DATA_HOME)",
                ),
            ]
        ),
    ]
    lines += see_also(["layer-shell(1)", "systemd-sysext(8)", "user_namespaces(7)", "gpgv(1)"])
    return "\n".join(lines) + "\n"


def shell_page(command: click.Command, date: str = "") -> str:
    ctx = click.Context(command, info_name="layer-shell")
    system = paths.Paths.system("/")
    summary = "enter a layer of a layershell host: a shell, a command or a program"
    lines = header("layer-shell", summary, date)
    lines += [".SH SYNOPSIS", escape(synopsis(command, ctx)), ".SH DESCRIPTION"]
    lines += paragraphs(help_text(command))
    lines += [".SH OPTIONS", *options(command, ctx, with_help=True)]
    lines += [
        ".SH EXIT STATUS",
        inline(
            "The program's: `layer-shell` becomes the program (exec), so a program killed "
            "by signal N kills it too and a shell reports 128+N. Its own failures:"
        ),
        *status_table(SHELL_EXIT_STATUS),
        ".SH ENVIRONMENT",
        *definitions(environment()),
        ".SH FILES",
        *definitions(
            [
                (system.layers_file, "the layer stack: which account stands at which layer"),
                (system.stack_cache, "the stack compiled, read instead of the YAML"),
                (system.executor, "the executor that builds the layer and runs the program"),
                (system.stores_dir + "/", "the layers' stores: their writable trees and homes"),
            ]
        ),
    ]
    lines += see_also(["core(1)", "su(1)", "user_namespaces(7)", "pam(8)"])
    return "\n".join(lines) + "\n"


def source_date() -> str:
    """SOURCE_DATE_EPOCH as a date (reproducible builds), else no date at all."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "")
    if not epoch.isdigit():
        return ""
    return time.strftime("%Y-%m-%d", time.gmtime(int(epoch)))


def pages(date: str = "") -> dict[str, str]:
    """{file name: roff text} of both pages."""
    from layershell.cli.core import cli
    from layershell.cli.layer_shell import layer_shell

    return {
        f"core.{SECTION}": core_page(cli, date),
        f"layer-shell.{SECTION}": shell_page(layer_shell, date),
    }


def write(out_dir: str, date: str = "") -> list[str]:
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for name, text in pages(date).items():
        path = os.path.join(out_dir, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        written.append(path)
    return written


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write("usage: python -m layershell.cli.manual DIR\n")
        return 2
    for path in write(argv[0], source_date()):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
