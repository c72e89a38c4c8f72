"""Issue 15 (docs and packaging): the manual pages core(1) and layer-shell(1), written
from the click definitions when the wheel is built (layershell/cli/manual.py,
hatch_build.py), found by `man 1 core` for a venv on PATH and staged into the system
extension; and the RPM packaging/layershell.spec builds. docs/packaging.md, "Manual
pages" and "RPM"."""

from __future__ import annotations

import gzip
import itertools
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import click
import pytest

from layershell import __version__
from layershell.cli import manual
from layershell.cli.core import cli
from layershell.cli.layer_shell import layer_shell
from layershell.host import origin, sysext

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


def subcommands(group: click.Group) -> dict[str, click.Command]:
    """The group's commands as click resolves them (core imports each verb lazily)."""
    ctx = click.Context(group)
    found = {name: group.get_command(ctx, name) for name in group.list_commands(ctx)}
    return {name: command for name, command in found.items() if command is not None}


def command_paths(group: click.Group, prefix: str) -> list[str]:
    """Every visible command under `group`, found through click's own table (not the
    walk manual.py does), so that a command the page leaves out is seen."""
    found: list[str] = []
    for name, command in sorted(subcommands(group).items()):
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
    for command in subcommands(group).values():
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


# -- the RPM ------------------------------------------------------------------------------

SPEC = CHECKOUT / "packaging" / "layershell.spec"
needs_rpmbuild = pytest.mark.skipif(
    shutil.which("rpmbuild") is None or shutil.which("rpm2archive") is None,
    reason="rpmbuild is not installed (./dev.sh test installs Debian's rpm package)",
)


def spec_global(name: str) -> list[str]:
    m = re.search(rf"^%global {name} (.*)$", SPEC.read_text(), re.M)
    assert m, name
    return m.group(1).split()


def test_the_spec_has_this_version_and_every_unit() -> None:
    """A unit added to units/, or a version bump, cannot leave the spec behind."""
    assert re.search(rf"^Version: +{re.escape(__version__)}$", SPEC.read_text(), re.M)
    shipped = sorted(set(os.listdir(CHECKOUT / "units")) - {origin.EXTENSION_UNIT})
    assert sorted(spec_global("units")) == shipped
    assert tuple(spec_global("enabled")) == origin.ENABLED


@pytest.fixture(scope="module")
def rpm_built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """rpmbuild -bb of the spec, from an sdist of this checkout, with this interpreter."""
    work = tmp_path_factory.mktemp("rpm")
    sources = work / "SOURCES"
    argv = [sys.executable, "-m", "hatchling", "build", "-t", "sdist", "-d", str(sources)]
    sdist = subprocess.run(
        argv, cwd=CHECKOUT, capture_output=True, text=True, check=False, timeout=300
    )
    assert sdist.returncode == 0, sdist.stdout + sdist.stderr
    assert (sources / f"layershell-{__version__}.tar.gz").exists()
    defines = {
        "_topdir": str(work),
        "_sourcedir": str(sources),
        # The venv: hatchling and layershell's dependencies, for the offline build.
        "python3": sys.executable,
        # Debian's rpm runs its python dependency generator with Debian's python3, which
        # lacks `packaging`; Requires are written out in the spec anyway.
        "__pythondist_requires": "%{nil}",
        "__pythondist_provides": "%{nil}",
    }
    argv = ["rpmbuild", "-bb", "--nodeps", str(SPEC)]
    for name, value in defines.items():
        argv += ["--define", f"{name} {value}"]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    rpms = sorted((work / "RPMS").rglob("layershell-*.rpm"))
    assert len(rpms) == 1, rpms
    return rpms[0]


@pytest.mark.slow
@needs_rpmbuild
def test_rpmbuild_builds_an_arch_rpm_with_programs_units_and_pages(rpm_built: Path) -> None:
    assert rpm_built.name == f"layershell-{__version__}-1.{os.uname().machine}.rpm"
    listed = subprocess.run(
        ["rpm", "-qlp", str(rpm_built)], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    files = set(listed)
    assert {"/usr/bin/core", "/usr/bin/layer-shell"} <= files
    packages = [
        f for f in listed if re.fullmatch(r"/usr/lib\d*/python3\.\d+/[a-z-]+/layershell", f)
    ]
    assert len(packages) == 1, packages
    package = packages[0]
    for name in ("layershell-enter", "layer-shell", "build.json"):
        assert f"{package}/_bin/{name}" in files
    assert f"{package}/cli/manual.py" in files
    assert f"{package}/_data/profiles/layers.yaml" in files
    for profile in os.listdir(CHECKOUT / "profiles" / "pam"):
        assert f"{package}/_data/profiles/pam/{profile}" in files
    units = set(os.listdir(CHECKOUT / "units")) - {origin.EXTENSION_UNIT}
    assert {f"/usr/lib/systemd/system/{u}" for u in units} <= files
    assert f"/usr/lib/systemd/system/{origin.EXTENSION_UNIT}" not in files
    for page in PAGES:  # rpmbuild compresses them where its brp-compress works (Fedora)
        assert f"/usr/share/man/man1/{page}" in files or f"/usr/share/man/man1/{page}.gz" in files
    assert "/usr/share/licenses/layershell/LICENSE" in files


@pytest.mark.slow
@needs_rpmbuild
def test_the_rpms_units_run_usr_bin_core_and_its_pages_are_ours(
    rpm_built: Path, tmp_path: Path
) -> None:
    archive = tmp_path / "payload.tgz"
    with archive.open("wb") as out:
        subprocess.run(["rpm2archive", "-"], stdin=rpm_built.open("rb"), stdout=out, check=True)
    with tarfile.open(archive) as tar:
        members = {m.name.lstrip("."): m for m in tar.getmembers()}

        def read(name: str) -> bytes:
            f = tar.extractfile(members[name])
            assert f is not None, name
            return f.read()

        units = [n for n in members if n.startswith("/usr/lib/systemd/system/layershell-")]
        texts = [read(n).decode() for n in units]
        assert any("ExecStart=/usr/bin/core " in t for t in texts)
        assert not any(origin.INSTALLED_CORE in t for t in texts)
        page = next(n for n in members if n.startswith("/usr/share/man/man1/core.1"))
        text = read(page)
        text = gzip.decompress(text) if page.endswith(".gz") else text
        assert text.startswith(b'.\\" core(1): written by layershell/cli/manual.py')
        enter = next(n for n in members if n.endswith("/_bin/layershell-enter"))
        assert members[enter].mode & 0o111


def test_init_on_a_host_whose_package_ships_the_units_writes_no_copies(tmp_path: Path) -> None:
    """An RPM puts layershell's units in /usr/lib/systemd/system (running /usr/bin/core);
    core init's copies in /etc/systemd/system (running /usr/local/bin/core, which the RPM
    does not have) would hide them. With the package's units there, init removes its
    own copies, writes none, and enables the package's by preset."""
    if os.getuid() != 0:
        pytest.skip("systemctl --root preset writes as root (CI runs as root)")
    from layershell.host import init, origin
    from layershell.layers import stack
    from layershell.paths import Paths

    shipped = tmp_path / "usr/lib/systemd/system"
    shipped.mkdir(parents=True)
    units = Path(stack.data_dir()) / "units"
    for unit in origin.UNITS:
        text = (units / unit).read_text().replace("/usr/local/bin/core", "/usr/bin/core")
        (shipped / unit).write_text(text)
    copies = tmp_path / "etc/systemd/system"
    copies.mkdir(parents=True)
    earlier = copies / "layershell-firstboot.service"  # a copy an earlier init wrote
    earlier.write_bytes((units / "layershell-firstboot.service").read_bytes())
    paths = Paths.system(str(tmp_path))
    layers = stack.load(paths)
    report = init.Report()
    init._install_units(layers, paths, report)
    assert not earlier.exists(), report
    assert not any((copies / unit).exists() for unit in origin.UNITS)
    wants = copies / "multi-user.target.wants" / "layershell-firstboot.service"
    assert os.readlink(wants) == "/usr/lib/systemd/system/layershell-firstboot.service"
