"""Attacks on the batched inbox (cli/inbox_cmd.py) and core's quick list front
(cli/quick.py), review 12.

The layer account's `core install --json` output is the account's word: its process runs
with the account's uid (which may trace or alter it), so root must survive any JSON in
it. What it says about a drop ends up in that drop's `failed/<file>.reason`, a file of
root's that an admin reads with cat: no control character of a package's may reach it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from layershell.cli import inbox_cmd
from layershell.packages import inbox
from tests.packages import program, tarball
from tests.support import SystemStack, python_cmd

CLICK_PATH = "import sys; sys.argv[0] = 'core'; from layershell.cli.core import main; main()"

HOSTILE_RESULTS = [
    '{"changed": 1, "failed": []}',
    '{"changed": [], "failed": true}',
    '{"changed": [{"name": ["a"], "version": "1.0", "action": "installed"}]}',
    '{"changed": [{"name": "a", "version": {"x": 1}, "action": "installed"}]}',
    '{"changed": [{"name": "a", "version": "1.0", "action": ["installed"]}]}',
    '{"failed": [{"name": {"a": 1}, "error": "no"}]}',
    '{"failed": [{"name": ["b"], "error": "no"}]}',
]


@pytest.mark.parametrize("said", HOSTILE_RESULTS)
def test_a_hostile_install_result_never_crashes_roots_inbox_run(
    said: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A result object of the right outer shape with values of the wrong type (a list
    where a name goes, a number where a list goes) raised TypeError in root's run: a
    traceback, the group's drops and every later account's left unsettled, and the same
    again at every run. What root cannot read is not a report: drop by drop."""
    drops = [
        inbox.Drop(f"/inbox/default/arne/{n}_1.0.tar.gz", "default", "arne", n, "1.0")
        for n in ("a", "b")
    ]

    def as_account(*_args: Any, **_kwargs: Any) -> tuple[int, str, str]:
        return 0, said, ""

    monkeypatch.setattr(inbox_cmd, "_as_account", as_account)
    found = inbox_cmd._install_together(None, None, drops)  # type: ignore[arg-type]
    assert found == {}


def test_a_well_formed_install_result_still_maps_each_drop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    drops = [
        inbox.Drop(f"/inbox/default/arne/{n}_1.0.tar.gz", "default", "arne", n, "1.0")
        for n in ("a", "b")
    ]
    said = (
        '{"changed": [{"action": "installed", "name": "a", "version": "1.0", "layer": "arne",'
        ' "path": "/opt/pkgs/a_1.0"}], "failed": [{"name": "b", "error": "bad", "hint": "h"}]}'
    )
    monkeypatch.setattr(inbox_cmd, "_as_account", lambda *_a, **_k: (1, said, ""))
    found = inbox_cmd._install_together(None, None, drops)  # type: ignore[arg-type]
    assert found == {
        drops[0].path: (True, "installed a 1.0 in layer arne (/opt/pkgs/a_1.0)"),
        drops[1].path: (False, "bad\n  hint: h"),
    }


def test_a_packages_escape_sequence_never_reaches_a_reason_file(
    system: SystemStack, shared_dir: Path
) -> None:
    """install.sh's last lines are in the install's error. Handed on as the account's
    stderr (one drop) they were made printable; read from its --json result (a
    directory of drops) they came back with the raw ESC and BEL that json.dumps had
    escaped, and root wrote them into failed/<file>.reason, where `cat` hands them to
    the admin's terminal (OSC 52 sets the clipboard)."""
    box = shared_dir / "inbox-escape"
    udir = box / "default" / system.arne
    udir.mkdir(parents=True)
    tarball(udir / "calm_1.0.tar.gz", program("calm", "1.0"))
    script = "printf '\\033]52;c;cm0gLXJmIH4K\\007\\033[2J'\nexit 3\n"
    tarball(udir / "loud_1.0.tar.gz", {**program("loud", "1.0"), "install.sh": script})
    for d, _, files in os.walk(box):
        os.chmod(d, 0o755)
        for f in files:
            os.chmod(os.path.join(d, f), 0o644)
    try:
        r = system.core("inbox", str(box))
        assert r.returncode == 1, r.stderr.decode()
        assert (udir / "done/calm_1.0.tar.gz").is_file(), r.stderr.decode()
        reason = (udir / "failed/loud_1.0.tar.gz.reason").read_bytes()
        assert b"install.sh" in reason, reason
        assert b"\x1b" not in reason and b"\x07" not in reason, reason
        assert b"\\x1b]52;c;" in reason, reason  # shown, not obeyed
    finally:
        system.core("remove", "calm")


def _closed_pipe() -> int:
    read, write = os.pipe()
    os.close(read)
    return write


def _full() -> int:
    return os.open("/dev/full", os.O_WRONLY)


@pytest.mark.parametrize(
    ("opened", "said"),
    [
        (_closed_pipe, b"core: error: Broken pipe\n"),
        (_full, b"core: error: No space left on device\n  hint: the filesystem is full"),
    ],
    ids=["closed pipe", "full disk"],
)
@pytest.mark.parametrize("form", [("list",), ("list", "--json")], ids=" ".join)
def test_the_quick_list_into_a_stdout_it_cannot_write_says_so_as_click_does(
    form: tuple[str, ...], opened: Any, said: bytes, tmp_path: Path
) -> None:
    """`core list | head -0` (the reader gone), `core list > /dev/full`: the quick
    front let BrokenPipeError or OSError out of sys.stdout.write, a traceback; the click
    command says `core: error: ...` and exits 1."""
    args = ("--root", str(tmp_path / "no-root"), *form)
    results = []
    for argv in (python_cmd(*args), [sys.executable, "-c", CLICK_PATH, *args]):
        out = opened()
        try:
            r = subprocess.run(argv, stdout=out, stderr=subprocess.PIPE, timeout=60, check=False)
        finally:
            os.close(out)
        assert b"Traceback" not in r.stderr and b"Exception ignored" not in r.stderr, r.stderr
        results.append((r.returncode, r.stderr))
    assert results[0] == results[1], results
    assert results[0][0] == 1 and results[0][1].startswith(said), results


def test_a_reason_is_written_printable_whatever_it_holds(tmp_path: Path) -> None:
    """settle() writes any reason it is given as printable UTF-8: a control character
    shown as \\xNN, and a lone surrogate (a JSON string may hold one: "\\ud800") no
    UnicodeEncodeError out of root's run."""
    udir = tmp_path / "default" / "arne"
    udir.mkdir(parents=True)
    for d in (tmp_path, tmp_path / "default", udir):
        d.chmod(0o755)
    drop = udir / "bad_1.0.tar.gz"
    drop.write_bytes(b"x")
    inbox.settle(str(drop), False, "bad \x1b]52;c;eA==\x07 \ud800 end")
    reason = (udir / "failed/bad_1.0.tar.gz.reason").read_bytes()
    assert reason == b"bad \\x1b]52;c;eA==\\x07 \\ud800 end\n", reason
