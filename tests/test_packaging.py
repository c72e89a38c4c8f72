"""Issue 15 (docs and packaging): the manual pages core(1) and layer-shell(1), written
from the click definitions when the wheel is built (layershell/cli/manual.py,
hatch_build.py), found by `man 1 core` for a venv on PATH and staged into the system
extension; docs/packaging.md, "Manual pages"."""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest

from layershell import __version__
from layershell.cli import manual
from layershell.cli.core import cli
from layershell.cli.layer_shell import layer_shell
from layershell.host import sysext

CHECKOUT = Path(__file__).resolve().parent.parent
# Where pip put the wheel's data for the interpreter running the tests (dev.sh's venv).
MAN1 = Path(sys.prefix) / "share" / "man" / "man1"
PAGES = ("core.1", "layer-shell.1")

needs_man = pytest.mark.skipif(
    shutil.which("man") is None, reason="man-db is not installed (./dev.sh test installs it)"
)


def man(*args: str, path: str = "/usr/bin:/bin") -> subprocess.CompletedProcess[str]:
    """man as a user runs it, with no MANPATH (man-db then derives it from PATH)."""
    env = {
        "PATH": path,
        "HOME": "/nonexistent",
        "LC_ALL": "C.UTF-8",
        "MANPAGER": "cat",
        "PAGER": "cat",
        "MANWIDTH": "80",
    }
    return subprocess.run(
        ["man", *args], capture_output=True, text=True, env=env, check=False, timeout=60
    )


def command_paths(group: click.Group, prefix: str) -> list[str]:
    """Every visible command under `group`, found through click's own table (not the
    walk manual.py does), so that a command the page leaves out is seen."""
    found: list[str] = []
    for name, command in sorted(group.commands.items()):
        if command.hidden:
            continue
        found.append(f"{prefix} {name}")
        if isinstance(command, click.Group):
            found += command_paths(command, f"{prefix} {name}")
    return found


def visible_options(command: click.Command) -> list[str]:
    return [
        name
        for param in command.params
        if isinstance(param, click.Option) and not param.hidden
        for name in (*param.opts, *param.secondary_opts)
    ]


def commands_of(group: click.Group) -> list[click.Command]:
    found: list[click.Command] = []
    for command in group.commands.values():
        if command.hidden:
            continue
        found.append(command)
        if isinstance(command, click.Group):
            found += commands_of(command)
    return found


def installed_date() -> str:
    """The date hatch_build.py gave the installed pages (SOURCE_DATE_EPOCH's, or none)."""
    first = next(x for x in (MAN1 / "core.1").read_text().splitlines() if x.startswith(".TH "))
    return first.split('"')[1]


# -- the module: the pages are a function of the definitions -----------------------------


def headings(text: str) -> list[str]:
    """The command each `.SS` of a page is about: its synopsis up to the first word that
    is no command name ([OPTIONS], an argument)."""
    found: list[str] = []
    for m in re.finditer(r'^\.SS "([^"]*)"$', text, re.M):
        words = m.group(1).replace("\\-", "-").split()
        name = itertools.takewhile(lambda w: re.fullmatch(r"[a-z][a-z0-9-]*", w), words)
        found.append(" ".join(name))
    return found


def test_every_command_and_option_of_core_is_on_the_page() -> None:
    text = manual.core_page(cli)
    assert headings(text) == command_paths(cli, "core")
    roff_options = set(re.findall(r"\\fB((?:\\-){1,2}[a-z][a-z0-9\\-]*)\\fR", text))
    for command in [cli, *commands_of(cli)]:
        for option in visible_options(command):
            assert option.replace("-", "\\-") in roff_options, (command.name, option)


def test_the_pages_are_deterministic_and_dated_by_source_date_epoch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert manual.pages() == manual.pages()
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert manual.source_date() == "2023-11-14"
    dated = manual.pages(manual.source_date())
    assert f'.TH CORE 1 "2023-11-14" "layershell {__version__}"' in dated["core.1"]
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    assert manual.source_date() == ""


def test_the_wheel_ships_what_the_module_writes() -> None:
    """The installed pages are the ones manual.py writes from this checkout's commands:
    hatch_build.py ran it, and nothing edited them since."""
    expected = manual.pages(installed_date())
    assert sorted(expected) == sorted(PAGES)
    for name, text in expected.items():
        assert (MAN1 / name).read_text() == text, name


def test_layer_shell_page_has_its_options() -> None:
    text = manual.shell_page(layer_shell)
    for option in visible_options(layer_shell):
        assert option.replace("-", "\\-") in text


def markdown_table(doc: Path, after: str) -> list[tuple[str, str]]:
    """The first `| status | ... |` table after the heading `after` in doc."""
    text = doc.read_text()
    start = text.index(after)
    rows: list[tuple[str, str]] = []
    for line in text[start:].splitlines():
        m = re.fullmatch(r"\| (\d+) \| (.*) \|", line)
        if m:
            rows.append((m.group(1), m.group(2)))
        elif rows:
            break
    return rows


def test_exit_status_tables_are_the_documented_ones() -> None:
    assert list(manual.CORE_EXIT_STATUS) == markdown_table(
        CHECKOUT / "docs" / "design.md", "## Exit status"
    )
    assert list(manual.SHELL_EXIT_STATUS) == [
        (status, meaning.replace("…", "..."))
        for status, meaning in markdown_table(
            CHECKOUT / "docs" / "layers.md", "`layer-shell`'s own failures"
        )
    ]


def test_the_build_requires_layershells_dependencies() -> None:
    """hatch_build.py imports the commands, so an isolated build needs every dependency."""
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())
    requires = set(project["build-system"]["requires"])
    assert set(project["project"]["dependencies"]) <= requires


# -- rendered by man ----------------------------------------------------------------------


@needs_man
@pytest.mark.parametrize("page", PAGES)
def test_the_installed_pages_render_without_warnings(page: str) -> None:
    done = man("--warnings", "-l", str(MAN1 / page))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert "layershell" in done.stdout
    if page == "core.1":
        text = " ".join(done.stdout.split())
        for path in command_paths(cli, "core"):
            assert path in text
        # An option as typed: `\-` renders as an ASCII hyphen-minus, not U+2010 or U+2212.
        assert "--no-wait" in text and "--connect-timeout S" in text
        assert "EXIT STATUS" in text and "75 busy" in text


@needs_man
def test_man_1_core_finds_ours_for_a_venv_on_path() -> None:
    """man-db maps each PATH entry .../bin to .../share/man: a venv on PATH is enough."""
    path = f"{Path(sys.prefix) / 'bin'}:/usr/bin:/bin"
    where = man("-w", "1", "core", path=path)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()) == MAN1 / "core.1"
    shown = man("1", "core", path=path)
    assert shown.returncode == 0, shown.stderr
    assert "core - manage the layers of a layershell host" in shown.stdout
    # Section 1 comes before the kernel's core(5) in man's order: `man core` is ours too.
    assert Path(man("-w", "core", path=path).stdout.strip()) == MAN1 / "core.1"


# -- the system extension's tree ----------------------------------------------------------


def test_the_extension_carries_the_pages(tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "layershell").write_text("")
    root = tmp_path / "root"
    sysext.stage(str(app), str(root), str(CHECKOUT), "x86-64", str(MAN1))
    for page in PAGES:
        assert (root / "usr/share/man/man1" / page).read_bytes() == (MAN1 / page).read_bytes()
        assert (root / "usr/share/man/man1" / page).stat().st_mode & 0o777 == 0o644
