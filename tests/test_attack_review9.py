"""The ninth attack review's findings (-q/-v/--json and the result object, root's
hand-over through common.argv_of, holds, hints under --root, the update plan), each
written as the attack and asserting that it fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import click
import pytest

from tests.packages import ARCH, Repository, program
from tests.support import IS_ROOT, NOBODY, Identity, SystemStack, python_cmd


def core(ident: Identity, *args: str) -> subprocess.CompletedProcess[bytes]:
    return ident.run(python_cmd(*args), timeout=120)


def root_core(
    system: SystemStack, cwd: Path | str, *args: str
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        python_cmd(*args), env=system.env, cwd=str(cwd), capture_output=True, timeout=120,
        check=False,
    )  # fmt: skip


# -- root's hand-over: what it forwards, and what it prints -------------------------


def test_a_file_in_roots_cwd_named_like_the_package_is_not_forwarded_as_a_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """common.argv_of made every value that named a file in root's cwd an absolute
    path: `cd /usr/local/bin && core remove tool` (the shim `tool` is a file there)
    handed the account `remove -- /usr/local/bin/tool`, `rollback --to 1.0` with a file
    `1.0` around `--to /root/1.0`. Only a Path option, or an install item (a tarball),
    is a file; a package name or a version is passed as typed."""
    from layershell.cli import common
    from layershell.cli.core import cli

    for name in ("tool", "1.0", "strict", "pkg_1.0.tar.gz"):
        (tmp_path / name).write_text("")
    monkeypatch.chdir(tmp_path)

    def forwarded(*argv: str) -> list[str]:
        command = cli.get_command(click.Context(cli), argv[0])
        assert command is not None
        return common.argv_of(command.make_context(argv[0], list(argv[1:])))

    assert forwarded("remove", "tool") == ["remove", "--", "tool"]
    assert forwarded("hold", "tool") == ["hold", "--", "tool"]
    assert forwarded("update", "tool") == ["update", "--", "tool"]
    assert forwarded("rollback", "--to", "1.0", "tool") == ["rollback", "--to", "1.0", "--", "tool"]
    assert forwarded("install", "--profile", "strict", "pkg_1.0.tar.gz") == [
        "install", "--profile", "strict", "--", str(tmp_path / "pkg_1.0.tar.gz"),
    ]  # fmt: skip


def test_root_in_the_shim_directory_can_hold_and_remove_a_package(
    system: SystemStack, shared_dir: Path
) -> None:
    """The same attack end to end: root's cwd is the shim directory, which holds a file
    named after every exposed package."""
    tarball = Repository(shared_dir / "repo").add("cwdtool", "1.0", program("cwdtool", "1.0"))
    done = system.core("install", str(tarball))
    assert done.returncode == 0, done.stderr.decode()
    bin_dir = system.root / "usr/local/bin"
    assert (bin_dir / "cwdtool").is_file()
    try:
        done = root_core(system, bin_dir, "hold", "cwdtool")
        assert done.returncode == 0, done.stderr.decode()
        assert b"cwdtool is now held at 1.0" in done.stdout
    finally:
        done = root_core(system, bin_dir, "remove", "cwdtool")
    assert done.returncode == 0, done.stderr.decode()
    assert not (bin_dir / "cwdtool").exists()


def test_verbose_root_can_repair_every_layer(system: SystemStack) -> None:
    """Root's own hand-overs that ask for a quiet account (`repair --quiet`, for every
    layer, after an interrupted operation or a dead account process) got root's
    `--verbose` as well, and the account's core refused `-q and -v do not go together`:
    with -v, every repair and every operation after an interrupted one failed."""
    done = system.core("repair", "-v")
    err = done.stderr.decode()
    assert "do not go together" not in err, err
    assert done.returncode == 0, err
    done = system.core("repair", "-q", "--json")
    assert done.returncode == 0, done.stderr.decode()
    assert json.loads(done.stdout)["ok"] is True


def test_a_password_on_roots_command_line_is_not_printed_by_verbose(system: SystemStack) -> None:
    """`core install -v https://user:pass@host/...` as root: the account's core refuses
    the URL and shows the password as ***, but root's -v line (what it runs as the
    account) printed the command line first, password and all, and put it in the
    account's argv, which every user on the host reads in /proc. Root refuses it as the
    account would, before anything runs."""
    secret = "s3cret-pw-9"
    url = f"https://user:{secret}@127.0.0.1:1/{ARCH}/tool_1.0"
    for args in (("install", "-v", url), ("install", "--dry-run", "-v", "--json", url)):
        done = system.core(*args)
        out = done.stdout.decode() + done.stderr.decode()
        assert secret not in out, out
        assert done.returncode == 2, out
        assert "user name or password" in out and "***@127.0.0.1" in out, out


# -- the result object --------------------------------------------------------------


def test_json_does_not_say_ok_when_the_command_dies_of_an_os_error(shared_dir: Path) -> None:
    """An OSError is reported by the group (`core: error: ...`, exit 1), but the result
    object printed before it said `"ok": true, "exit_status": 0`: a script reading
    --json took a failed `core repo index` (a directory it may not write) for done."""
    if not IS_ROOT:
        pytest.skip("borrows uid 65534 (CI runs as root)")
    repo = Repository(shared_dir / "repo")  # root's: uid 65534 cannot write index.json
    repo.add("tool", "1.0", program("tool", "1.0"))
    done = subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--",
         *python_cmd("repo", "index", "--json", str(repo.arch_dir))],
        capture_output=True, timeout=60, check=False, cwd="/",
        env={**os.environ, "HOME": str(shared_dir)},
    )  # fmt: skip
    assert done.returncode == 1, done.stderr.decode()
    result = json.loads(done.stdout)
    assert result["ok"] is False and result["exit_status"] == done.returncode, result
    assert "Permission denied" in str(result["failed"]), result


# -- hints under --root -------------------------------------------------------------


def test_a_root_with_a_backslash_gives_a_hint_not_a_traceback(tmp_path: Path) -> None:
    """ui.with_root passed `core --root ROOT` to re.sub as a template: a backslash in
    ROOT (`\\1`, `\\x`) was a group reference or a bad escape, and the error's hint
    ended in a re.error traceback instead."""
    if not IS_ROOT:
        pytest.skip("system mode under --root needs root (CI runs as root)")
    for odd in ("img\\1", "img\\x", "img\\g<0>"):
        root = tmp_path / odd
        root.mkdir()
        done = subprocess.run(
            [sys.executable, "-m", "layershell", "--root", str(root), "install", "x"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert "Traceback" not in done.stderr, done.stderr
        assert done.returncode == 1, done.stderr
        quoted = "'" + str(root) + "'"
        assert f"hint: run core --root {quoted} init first" in done.stderr, done.stderr


# -- holds --------------------------------------------------------------------------


def test_unhold_of_a_mistyped_name_is_an_error_not_done(
    fresh_rootless: Identity, shared_dir: Path
) -> None:
    """`core unhold tol` (tool is held) said "tol was not held" and exited 0: the typo
    left tool held, and a script took it for done. A name neither held nor installed
    is bad input (2), with the closest name, as hold, remove and rollback say."""
    tarball = Repository(shared_dir / "repo").add("tool", "1.0", program("tool", "1.0"))
    done = core(fresh_rootless, "install", str(tarball))
    assert done.returncode == 0, done.stderr.decode()
    assert core(fresh_rootless, "hold", "tool").returncode == 0
    done = core(fresh_rootless, "unhold", "tol")
    err = done.stderr.decode()
    assert done.returncode == 2, (done.stdout, err)
    assert "hint: did you mean tool?" in err, err
    done = core(fresh_rootless, "unhold", "tool")
    assert done.returncode == 0 and b"tool is no longer held" in done.stdout
    done = core(fresh_rootless, "unhold", "tool")  # installed, not held: nothing to do
    assert done.returncode == 0 and b"tool was not held" in done.stdout


def test_update_of_a_mistyped_name_is_an_error_not_up_to_date(
    fresh_rootless: Identity, shared_dir: Path
) -> None:
    """`core update tol` said "everything is up to date" and exited 0 while tool stayed
    where it was; the dry run printed an empty plan. Same class as unhold: a name that
    is not installed is bad input (2), with the closest name."""
    tarball = Repository(shared_dir / "repo").add("tool", "1.0", program("tool", "1.0"))
    done = core(fresh_rootless, "install", str(tarball))
    assert done.returncode == 0, done.stderr.decode()
    for args in (("update", "tol"), ("update", "--dry-run", "tol"), ("update", "tool", "tol")):
        done = core(fresh_rootless, *args)
        err = done.stderr.decode()
        assert done.returncode == 2, (args, done.stdout, err)
        assert "not installed in layer arne: tol" in err and "did you mean tool?" in err, err
    done = core(fresh_rootless, "update", "tool")  # installed (as a file): nothing to follow
    assert done.returncode == 0, done.stderr.decode()


# -- the update plan ----------------------------------------------------------------

ESCAPE = "\x1b]52;c;cm0gLXJmIH4K\x07"  # OSC 52: sets the clipboard root pastes next


@pytest.fixture
def hostile_mirror(shared_dir: Path) -> Iterator[tuple[Repository, str, list[int]]]:
    """An http mirror of a repository; once `hostile[0]` is a status, every answer is
    that status with an escape sequence for its reason phrase (no signature needed)."""
    repo = Repository(shared_dir / "mirror")
    hostile = [0]

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            path = repo.root / self.path.lstrip("/")
            if hostile[0] or not path.is_file():
                self.send_response(hostile[0] or 404, f"teapot {ESCAPE}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = path.read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield repo, f"http://127.0.0.1:{server.server_address[1]}", hostile
    finally:
        server.shutdown()
        server.server_close()


def test_a_mirrors_reason_phrase_reaches_the_update_plan_only_as_text(
    fresh_rootless: Identity, hostile_mirror: tuple[Repository, str, list[int]]
) -> None:
    """`core update --dry-run` printed its plan as a rich table, whose cells rich passes
    on as they are: the NOTE (why a package could not be resolved, here a mirror's
    HTTP reason phrase) wrote an escape sequence to the terminal of whoever ran it (root's
    too: the account's core prints the plan on root's stdout). Every other line core
    prints shows it as \\x1b."""
    repo, url, hostile = hostile_mirror
    repo.add("tool", "1.0", program("tool", "1.0"))
    repo.index()
    done = core(fresh_rootless, "install", f"{url}/{ARCH}/tool_latest")
    assert done.returncode == 0, done.stderr.decode()
    hostile[0] = 418
    done = core(fresh_rootless, "update", "--dry-run")
    out = done.stdout.decode()
    assert "teapot" in out, (out, done.stderr.decode())
    assert "\x1b" not in out and "\x07" not in out, repr(out)
    assert "\\x1b" in out, out


def test_a_mirrors_reason_phrase_reaches_the_retry_lines_only_as_text(
    fresh_rootless: Identity, hostile_mirror: tuple[Repository, str, list[int]]
) -> None:
    """The same phrase with a status fetch retries (503): the progress reporter wrote
    `retrying SHA256SUMS in 0.4 s: HTTP 503 <reason>` to stderr as it was, the escape
    sequence included, on every attempt (as the account, on root's terminal too)."""
    repo, url, hostile = hostile_mirror
    repo.add("tool", "1.0", program("tool", "1.0"))
    repo.index()
    done = core(fresh_rootless, "install", f"{url}/{ARCH}/tool_latest")
    assert done.returncode == 0, done.stderr.decode()
    hostile[0] = 503
    done = core(fresh_rootless, "update")
    err = done.stderr.decode()
    assert "retrying" in err and "teapot" in err, err  # a warning: update goes on
    assert "\x1b" not in err and "\x07" not in err, repr(err)
