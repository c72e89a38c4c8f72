"""Every `core` command behaves alike (docs/design.md, "Commands" and "Exit status"):
-q and -v everywhere, --json where the table says, --config for every manifest, one
error format and exit 2 for bad usage, one --keep, holds, dry runs, and a hint to run
core init before anything else."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

from layershell.cli.core import cli
from tests.packages import Repository, program
from tests.support import CHECKOUT, Identity, SystemStack, python_cmd

DESIGN = CHECKOUT / "docs" / "design.md"
READS_A_MANIFEST = {"check", "firstboot", "ignition", "inbox", "install", "update"}


def commands() -> dict[str, click.Command]:
    found: dict[str, click.Command] = {}

    def walk(cmd: click.Command, path: list[str]) -> None:
        if isinstance(cmd, click.Group):
            ctx = click.Context(cmd)
            for name in cmd.list_commands(ctx):
                sub = cmd.get_command(ctx, name)
                assert sub is not None
                walk(sub, [*path, name])
        else:
            found[" ".join(path)] = cmd

    walk(cli, [])
    return found


def documented_json() -> dict[str, bool]:
    """The docs table: command -> whether it takes --json."""
    text = DESIGN.read_text()
    section = text.split("## Commands", 1)[1].split("\n## ", 1)[0]
    table: dict[str, bool] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`"):
            for name in re.findall(r"`([^`]+)`", cells[0]):
                table[name] = cells[1] == "yes"
    return table


def options_of(cmd: click.Command) -> set[str]:
    return {o for p in cmd.params if isinstance(p, click.Option) for o in p.opts}


def core(ident: Identity, *args: str) -> subprocess.CompletedProcess[bytes]:
    return ident.run(python_cmd(*args), timeout=120)


def test_the_docs_table_names_every_command_and_nothing_else() -> None:
    assert set(documented_json()) == set(commands())


@pytest.mark.parametrize("name", sorted(commands()))
def test_every_command_takes_q_v_and_json_as_documented(name: str) -> None:
    opts = options_of(commands()[name])
    assert {"-q", "--quiet", "-v", "--verbose"} <= opts, name
    assert ("--json" in opts) is documented_json()[name], name
    assert ("--config" in opts) is (name in READS_A_MANIFEST), name


@pytest.mark.parametrize("name", sorted(commands()))
def test_a_usage_error_is_core_error_with_a_hint_and_exit_2(name: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "layershell", *name.split(), "--no-such-option"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert lines[0].startswith("core: error: No such option"), done.stderr
    assert lines[1].startswith("  hint: see core ") and lines[1].endswith(" --help")


def test_q_and_v_together_are_a_usage_error(fresh_rootless: Identity) -> None:
    done = core(fresh_rootless, "list", "-q", "-v")
    assert done.returncode == 2 and "core: error: -q and -v do not go together" in (
        done.stderr.decode()
    )


def test_keep_means_the_same_on_update_and_gc() -> None:
    def keep(cmd: click.Command) -> object:
        return next(p.default for p in cmd.params if p.name == "keep")

    assert keep(commands()["update"]) == keep(commands()["gc"]) == 1


def test_install_before_init_says_to_run_it(shared_dir: Path) -> None:
    from tests.support import IS_ROOT, NOBODY, make_shared_dir

    if not IS_ROOT:
        pytest.skip("needs root to borrow uid 65534 with a private HOME (CI runs as root)")
    home = make_shared_dir("layershell-noinit-") / "home"
    home.mkdir()
    os.chown(home, NOBODY, NOBODY)
    prefix = ("setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--")
    ident = Identity(NOBODY, NOBODY, home, prefix)
    tarball = Repository(shared_dir / "repo").add("tool", "1.0")
    done = core(ident, "--rootless", "install", str(tarball))
    err = done.stderr.decode()
    assert done.returncode == 1, err
    assert "core init has not run" in err and "hint: run core init first" in err
    assert not (home / ".local/share/layershell/pkgs").exists()  # nothing was installed
    shell = Path(sys.executable).parent / "layer-shell"  # pip's, next to core
    done = ident.run([str(shell), "-c", "true"])
    assert done.returncode == 1 and "core --rootless init" in done.stderr.decode()


def installed_tool(ident: Identity, shared_dir: Path) -> Repository:
    repo = Repository(shared_dir / "repo")
    done = core(ident, "install", str(repo.add("tool", "1.0", program("tool", "1.0"))))
    assert done.returncode == 0, done.stderr.decode()
    return repo


def test_json_result_of_install_remove_and_a_failure(
    fresh_rootless: Identity, shared_dir: Path
) -> None:
    ident = fresh_rootless
    repo = Repository(shared_dir / "repo")
    tarball = repo.add("tool", "1.0", program("tool", "1.0"))
    done = core(ident, "install", "--json", str(tarball))
    result = json.loads(done.stdout)  # stdout is the one object, nothing else
    assert done.returncode == 0 and result["ok"] is True and result["exit_status"] == 0
    assert result["command"] == "install" and result["failed"] == []
    changed = [(c["action"], c.get("name") or c.get("path")) for c in result["changed"]]
    shim = str(ident.home / ".local/bin/tool")
    assert changed == [("installed", "tool"), ("exposed", shim)]
    done = core(ident, "remove", "--json", "tool", "toll")
    result = json.loads(done.stdout)
    assert done.returncode == 2 and result["ok"] is False and result["exit_status"] == 2
    assert result["changed"] == [] and "not installed" in str(result["failed"][0]["error"])
    assert "core: error:" in done.stderr.decode()  # the text error still goes to stderr
    done = core(ident, "remove", "--json", "tool")
    result = json.loads(done.stdout)
    assert done.returncode == 0
    assert [(c["action"], c.get("name")) for c in result["changed"]][:1] == [("removed", "tool")]
    assert ("unexposed", shim) in [(c["action"], c.get("path")) for c in result["changed"]]


def test_a_mistyped_package_name_gets_did_you_mean(
    fresh_rootless: Identity, shared_dir: Path
) -> None:
    installed_tool(fresh_rootless, shared_dir)
    done = core(fresh_rootless, "rollback", "tool", "--to", "1.1")
    assert done.returncode == 2 and "hint: did you mean 1.0?" in done.stderr.decode()
    for args in (("info", "tol"), ("remove", "tol"), ("rollback", "tol"), ("hold", "tol")):
        done = core(fresh_rootless, *args)
        err = done.stderr.decode()
        assert done.returncode == 2, (args, err)
        assert "hint: did you mean tool?" in err, (args, err)


def test_install_and_remove_dry_runs_change_nothing(
    fresh_rootless: Identity, shared_dir: Path
) -> None:
    ident = fresh_rootless
    repo = installed_tool(ident, shared_dir)
    pkgs = ident.home / ".local/share/layershell/pkgs"

    def state() -> tuple[object, ...]:
        listed = core(ident, "list", "--json", "--all").stdout
        return json.loads(listed), sorted(p.name for p in pkgs.iterdir())

    before = state()
    other = repo.add("other", "2.0", program("other", "2.0"))
    done = core(ident, "install", "--dry-run", str(other))
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().startswith("would install other 2.0 in layer arne from ")
    done = core(ident, "remove", "--dry-run", "--json", "tool")
    result = json.loads(done.stdout)
    assert done.returncode == 0, done.stderr.decode()
    assert [(c["action"], c["name"], c["version"]) for c in result["changed"]] == [
        ("would-remove", "tool", "1.0")
    ]
    assert state() == before
    assert not (ident.home / ".local/bin/other").exists()
    assert (ident.home / ".local/bin/tool").exists()


def test_hold_keeps_update_away_until_unhold(fresh_rootless: Identity, shared_dir: Path) -> None:
    ident = fresh_rootless
    repo = Repository(shared_dir / "repo")
    repo.add("tool", "1.0", program("tool", "1.0"))
    repo.index()
    config = ident.home / "composable.yaml"
    config.write_text(
        f"composable:\n  default_repository: {repo.file_url}\n  packages:\n"
        "    - name: tool\n      version: latest\n"
    )
    config.chmod(0o644)
    done = core(ident, "install", "--config", str(config))
    assert done.returncode == 0, done.stderr.decode()
    done = core(ident, "hold", "tool")
    assert done.returncode == 0 and "tool is now held at 1.0" in done.stdout.decode()
    repo.add("tool", "2.0", program("tool", "2.0"))
    repo.index()
    done = core(ident, "update")
    assert done.returncode == 0, done.stderr.decode()
    assert "updated" not in done.stdout.decode()
    listed = json.loads(core(ident, "list", "--json").stdout)
    assert [(r["name"], r["version"]) for r in listed] == [("tool", "1.0")]
    done = core(ident, "unhold", "--json", "tool")
    assert json.loads(done.stdout)["changed"] == [{"action": "unheld", "name": "tool"}]
    done = core(ident, "update")
    assert done.returncode == 0 and "updated tool to 2.0" in done.stdout.decode()


def test_config_option_reads_the_named_manifest(fresh_rootless: Identity) -> None:
    bad = fresh_rootless.home / "bad.yaml"
    bad.write_text("composable:\n  packages: [1]\n")
    bad.chmod(0o644)
    for args in (("check",), ("update",), ("install",), ("inbox",)):
        done = core(fresh_rootless, *args, "--config", str(bad))
        err = done.stderr.decode()
        assert done.returncode == 2, (args, err)
        assert err.startswith(f"{bad}:2"), (args, err)


def test_list_columns(fresh_rootless: Identity, shared_dir: Path) -> None:
    installed_tool(fresh_rootless, shared_dir)
    done = core(fresh_rootless, "list", "--columns", "version,name")
    assert done.stdout.decode().split("\n")[:2] == ["VERSION  NAME", "1.0      tool"]
    done = core(fresh_rootless, "list", "--columns", "nmae")
    err = done.stderr.decode()
    assert done.returncode == 2 and "no column 'nmae'; did you mean name?" in err, err


def test_list_on_an_80_column_terminal(fresh_rootless: Identity, shared_dir: Path) -> None:
    """NAME and VERSION whole; whatever else does not fit ends in an ellipsis."""
    import pexpect

    repo = Repository(shared_dir / "repository-with-a-rather-long-path-name" / "x86_64")
    name, version = "a-package-with-a-long-name", "2026.12.01-rc1+build.7"
    tarball = repo.add(name, version, program(name, version))
    done = core(fresh_rootless, "install", str(tarball))
    assert done.returncode == 0, done.stderr.decode()
    argv = fresh_rootless.argv(python_cmd("list"))
    child = pexpect.spawn(
        argv[0], argv[1:], dimensions=(24, 80), env=fresh_rootless.env,
        cwd=str(fresh_rootless.home), timeout=60,
    )  # fmt: skip
    child.expect(pexpect.EOF)
    text = child.before.decode()
    lines = [ln for ln in text.replace("\r", "").split("\n") if ln.strip()]
    assert lines[0].split()[:2] == ["NAME", "VERSION"], text
    assert all(len(ln) <= 80 for ln in lines), text
    row = lines[1]
    assert row.split()[:2] == [name, version], text
    assert row.rstrip().endswith("…"), text  # the source was cut, and says so


def test_a_hint_keeps_the_root_the_command_ran_under(tmp_path: Path) -> None:
    """`core --root DIR install` before init: the hint's command acts on DIR too, not on
    the host (the hint used to say plain `core init`)."""
    if os.getuid() != 0:
        pytest.skip("system mode under --root needs root (CI runs as root)")
    root = tmp_path / "image root"
    root.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "layershell", "--root", str(root), "install", "x"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert f"hint: run core --root '{root}' init first" in done.stderr, done.stderr


def complete(ident: Identity, words: str, cword: int) -> list[str]:
    """What click's bash protocol offers for COMP_WORDS (what bash-completion runs)."""
    env = {"_CORE_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": str(cword)}
    done = ident.run(python_cmd(), env=env)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode().split()


def test_completion_offers_packages_layers_and_files(
    fresh_rootless: Identity, shared_dir: Path
) -> None:
    ident = fresh_rootless
    installed_tool(ident, shared_dir)
    assert complete(ident, "core info t", 2) == ["plain,tool"]
    assert complete(ident, "core remove ", 2) == ["plain,tool"]
    assert complete(ident, "core shell --layer o", 3) == ["plain,otto"]
    assert complete(ident, "core update --config ", 3) == ["file,"]
    # core init put core's own completion where bash-completion looks for it.
    registered = ident.home / ".local/share/bash-completion/completions/core"
    assert "_CORE_COMPLETE=bash_complete" in registered.read_text()
    bash = (
        f". /usr/share/bash-completion/bash_completion; . {registered}; "
        "COMP_WORDS=(core info t); COMP_CWORD=2; _core_completion core t info; echo ${COMPREPLY[@]}"
    )
    venv_bin = os.path.dirname(sys.executable)
    done = ident.run(["bash", "-c", bash], env={"PATH": f"{venv_bin}:/usr/bin:/bin"})
    assert done.stdout.decode().split() == ["tool"], done.stderr.decode()


@pytest.mark.parametrize(
    "argv",
    [
        ["install", "--config", "m.yaml", "--no-wait", "--retries", "5", "--", "-odd", "x"],
        ["update", "--dry-run", "--keep", "3", "--if-os-changed", "--", "a", "b"],
        ["rollback", "--to", "1.0", "--", "tool"],
        ["gc", "--keep", "0", "--partial"],
        ["remove", "--", "tool"],
        ["hold", "--", "tool"],
    ],
)
def test_root_forwards_the_command_line_it_was_given(argv: list[str]) -> None:
    """The account's core runs what root was asked (common.argv_of): every option that
    was given, the manifest as an absolute path, and items after `--`."""
    from layershell.cli import common

    command = commands()[argv[0]]
    ctx = command.make_context(argv[0], argv[1:])
    expected = [os.path.abspath(a) if a == "m.yaml" else a for a in argv]
    assert common.argv_of(ctx) == expected


def test_json_through_root_is_one_object(system: SystemStack, shared_dir: Path) -> None:
    """Root hands the install to arne and exposes after it: stdout still carries one
    result object, arne's changes merged into root's, and `remove --json` likewise."""
    tarball = Repository(shared_dir / "repo").add("jsontool", "1.0", program("jsontool", "1.0"))
    done = system.core("install", "--json", str(tarball))
    result = json.loads(done.stdout)  # one document: two would not parse
    assert done.returncode == 0 and result["ok"], done.stderr.decode()
    assert [(c["action"], c.get("name")) for c in result["changed"]][:1] == [
        ("installed", "jsontool")
    ]
    assert any(c["action"] == "exposed" for c in result["changed"]), result
    done = system.core("remove", "--json", "jsontool")
    result = json.loads(done.stdout)
    assert done.returncode == 0, done.stderr.decode()
    assert ("removed", "jsontool") in [(c["action"], c.get("name")) for c in result["changed"]]
