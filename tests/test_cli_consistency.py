"""Issue 15's inconsistencies, each written as the behaviour a user met: commands that
exited 0 on bad input, treated a manifest as a tarball, truncated `core list` when
piped, printed `None`, or answered Ctrl-C with click's "Aborted!" and 1."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import time
from pathlib import Path

from tests.packages import Repository, program
from tests.support import Identity, install_package, python_cmd, rootless_store


def core(ident: Identity, *args: str) -> subprocess.CompletedProcess[bytes]:
    return ident.run(python_cmd(*args), timeout=120)


def installed_from_manifest(ident: Identity, shared_dir: Path, name: str = "tool") -> None:
    files = {**program(name, "1.0"), f"bin/{name}-extra": "#!/bin/sh\necho x\n"}
    install_package(ident, shared_dir, name, files, "default")


def test_core_check_of_a_missing_file_says_what_to_do(fresh_rootless: Identity) -> None:
    done = core(fresh_rootless, "check", "missing.yaml")
    assert done.returncode == 2
    assert done.stderr.decode() == "missing.yaml: file not found (check the path)\n"


def test_core_inbox_of_a_directory_that_does_not_exist_fails(fresh_rootless: Identity) -> None:
    done = core(fresh_rootless, "inbox", "/nonexistent")
    err = done.stderr.decode()
    assert done.returncode == 2, done.stdout + done.stderr
    assert "core: error: /nonexistent: no such directory" in err and "hint:" in err


def test_core_expose_of_a_program_the_package_lacks_fails_and_changes_nothing(
    fresh_rootless: Identity, shared_dir: Path
) -> None:
    ident = fresh_rootless
    installed_from_manifest(ident, shared_dir)
    overrides = ident.home / ".local/share/layershell/exposure.json"
    before = overrides.read_bytes() if overrides.exists() else None
    done = core(ident, "expose", "tool", "--bin", "tool-extr")
    err = done.stderr.decode()
    assert done.returncode == 2, err
    assert "has no program bin/tool-extr" in err and "did you mean tool-extra?" in err
    assert (overrides.read_bytes() if overrides.exists() else None) == before


def test_core_install_of_a_manifest_names_the_option(fresh_rootless: Identity) -> None:
    config = fresh_rootless.home / "composable.yaml"
    config.write_text("composable:\n  packages: []\n")
    config.chmod(0o644)
    done = core(fresh_rootless, "install", str(config))
    err = done.stderr.decode()
    assert done.returncode == 2, err
    assert "is a manifest, not a package" in err and f"--config {config}" in err


def test_core_list_piped_is_one_whole_line_per_package(
    fresh_rootless: Identity, shared_dir: Path
) -> None:
    ident = fresh_rootless
    installed_from_manifest(ident, shared_dir, "a-package-with-a-long-name")
    done = core(ident, "list")  # stdout is a pipe
    lines = done.stdout.decode().splitlines()
    assert len(lines) == 2, lines  # the header and the one package
    assert lines[0].split() == ["NAME", "VERSION", "LAYER", "ACTIVE", "INSTALLED", "EXPOSES",
                                "SOURCE"]  # fmt: skip
    fields = lines[1].split()
    assert fields[0] == "a-package-with-a-long-name" and fields[1] == "1.0"
    assert fields[-1].endswith("/a-package-with-a-long-name_1.0.tar.gz")  # whole, unwrapped


def test_core_info_prints_no_none(fresh_rootless: Identity, shared_dir: Path) -> None:
    ident = fresh_rootless
    installed_from_manifest(ident, shared_dir)
    done = core(ident, "info", "tool")
    assert done.returncode == 0, done.stderr.decode()
    assert "None" not in done.stdout.decode(), done.stdout.decode()
    assert "verified: signature by " in done.stdout.decode()
    assert "  exposes: tool, tool-extra\n" in done.stdout.decode()  # what a person needs
    assert "  profile: default\n" in done.stdout.decode()


def test_ctrl_c_exits_130_without_aborted(fresh_rootless: Identity, shared_dir: Path) -> None:
    """An install waiting for the layer's lock (another operation holds it), interrupted."""
    ident = fresh_rootless
    r = Repository(shared_dir / "repo")
    tarball = r.add("tool", "1.0")
    path = rootless_store(ident) / "lock"
    lock = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    os.fchown(lock, ident.uid, ident.gid)
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        proc = ident.popen(python_cmd("install", str(tarball)), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)  # fmt: skip
        deadline = time.monotonic() + 30
        assert proc.stderr is not None
        said = b""
        while b"waiting for" not in said and time.monotonic() < deadline:
            chunk = os.read(proc.stderr.fileno(), 4096)
            if not chunk:
                break  # it ended without waiting: the asserts below say how
            said += chunk
        proc.send_signal(signal.SIGINT)
        _, rest = proc.communicate(timeout=30)
    finally:
        os.close(lock)
    err = (said + rest).decode()
    assert proc.returncode == 130, err
    assert "Aborted!" not in err and "Traceback" not in err and "core: interrupted" in err


def test_core_gc_reports_each_removal_once(fresh_rootless: Identity, shared_dir: Path) -> None:
    ident = fresh_rootless
    r = Repository(shared_dir / "repo")
    for version in ("1.0", "2.0"):
        done = core(ident, "install", str(r.add("tool", version)))
        assert done.returncode == 0, done.stderr.decode()
    done = core(ident, "gc", "--keep", "0")
    said = (done.stdout + done.stderr).decode()
    assert done.returncode == 0 and said.count("tool 1.0") == 1, said


def test_exposing_programs_off_path_says_how_to_put_them_on_it(
    fresh_rootless: Identity, shared_dir: Path
) -> None:
    ident = fresh_rootless
    r = Repository(shared_dir / "repo")
    bin_dir = ident.home / ".local/bin"
    done = ident.run(python_cmd("install", str(r.add("tool", "1.0"))),
                     env={"PATH": "/usr/local/bin:/usr/bin:/bin"})  # fmt: skip
    err = done.stderr.decode()
    assert done.returncode == 0, err
    assert f"warning: {bin_dir} is not on your PATH" in err and "~/.profile" in err
    done = core(ident, "install", str(r.add("other", "1.0")))  # PATH has ~/.local/bin
    assert done.returncode == 0 and "not on your PATH" not in done.stderr.decode()


def test_usage_errors_read_like_every_other_error(fresh_rootless: Identity) -> None:
    """click's own `Error:` (and its usage banner) was a second error format."""
    for argv, said in (
        (("--bogus",), "No such option '--bogus'"),
        (("nosuchcommand",), "No such command 'nosuchcommand'"),
        (("install", "--retries", "many"), "'many' is not a valid integer"),
        (("repo", "index"), "Missing argument 'DIRECTORY'"),
    ):
        done = core(fresh_rootless, *argv)
        err = done.stderr.decode()
        assert done.returncode == 2, (argv, err)
        assert err.startswith("core: error: ") and said in err, (argv, err)
        assert "\n  hint: see core" in err and "Usage:" not in err, (argv, err)
    assert core(fresh_rootless, "--help").returncode == 0
    assert core(fresh_rootless, "list", "--help").stdout.decode().startswith("Usage: core list")
