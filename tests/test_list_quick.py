"""`core list` answered by the quick front (cli/quick.py) is what the click command
answers: the same stdout, stderr and exit status for every form it takes, and it imports
neither click nor rich (nor yaml, without a host manifest) while doing so."""

from __future__ import annotations

import json
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.packages import tarball
from tests.support import Identity, python_cmd, rootless_identity, userns_available
from tests.test_hot_path import BLOCK

CLICK_PATH = "import sys; sys.argv[0] = 'core'; from layershell.cli.core import main; main()"
FORMS = [
    ("list",), ("list", "--json"), ("list", "--all"), ("list", "--json", "--all"),
    ("--rootless", "list"), ("--rootless", "list", "--json"), ("--system", "list"),
    ("--root", "/nonexistent-root", "list"), ("--root=/nonexistent-root", "list", "--json"),
]  # fmt: skip


@pytest.fixture(scope="module")
def listed() -> Iterator[Identity]:
    if not userns_available():
        pytest.skip("unprivileged user namespaces are disabled on this kernel")
    with rootless_identity() as ident:
        for version in ("1.0", "2.0"):  # 2.0 makes 1.0 inactive: --all shows it
            where = ident.home.parent / f"quick_{version}.tar.gz"  # readable by the identity
            tar = tarball(where, {"bin/quick": "#!/bin/sh\n"})
            r = ident.run(python_cmd("install", str(tar)))
            assert r.returncode == 0, r.stderr
        yield ident


@pytest.mark.parametrize("form", FORMS, ids=" ".join)
def test_quick_front_answers_as_the_click_command(listed: Identity, form: tuple[str, ...]) -> None:
    quick = listed.run(python_cmd(*form))
    slow = listed.run([sys.executable, "-c", CLICK_PATH, *form])
    assert (quick.returncode, quick.stdout, quick.stderr) == (
        slow.returncode, slow.stdout, slow.stderr
    )  # fmt: skip


def test_a_damaged_record_is_the_same_both_ways(fresh_rootless: Identity, shared_dir: Path) -> None:
    tar = tarball(shared_dir / "warned_1.0.tar.gz", {"bin/warned": "#!/bin/sh\n"})
    assert fresh_rootless.run(python_cmd("install", str(tar))).returncode == 0
    db = fresh_rootless.home / ".local/share/layershell/layers/arne/state.db"
    with sqlite3.connect(db) as conn:  # a row no install writes
        conn.execute("UPDATE packages SET version = '1.0/../x' WHERE name = 'warned'")
    for form in (("list",), ("list", "--json")):
        quick = fresh_rootless.run(python_cmd(*form))
        slow = fresh_rootless.run([sys.executable, "-c", CLICK_PATH, *form])
        assert (quick.returncode, quick.stdout, quick.stderr) == (
            slow.returncode, slow.stdout, slow.stderr
        )  # fmt: skip


def test_the_quick_front_imports_no_click_rich_or_yaml(listed: Identity) -> None:
    code = BLOCK + (
        "import sys\nsys.argv = ['core', 'list', '--json']\nfrom layershell.cli import main\nmain()"
    )
    r = listed.run([sys.executable, "-c", code])
    assert r.returncode == 0, r.stderr
    assert [x["name"] for x in json.loads(r.stdout)] == ["quick"]


# What a listing does not need: each cost it milliseconds of its 50 (docs/testing.md).
HEAVY = ("dataclasses", "inspect", "typing", "tempfile", "urllib", "ipaddress", "shutil")


@pytest.mark.parametrize("form", [("list", "--json"), ("list",)], ids=" ".join)
def test_the_listing_imports_nothing_heavy(listed: Identity, form: tuple[str, ...]) -> None:
    block = BLOCK.replace('("click", "yaml", "rich")', repr(("click", "yaml", "rich", *HEAVY)))
    assert block != BLOCK
    code = block + f"import sys\nsys.argv = ['core', *{list(form)!r}]\n"
    code += "from layershell.cli import main\nmain()"
    r = listed.run([sys.executable, "-c", code])
    assert r.returncode == 0, r.stderr
    assert b"quick" in r.stdout


def test_other_forms_go_to_click(listed: Identity) -> None:
    code = BLOCK + "import sys\nsys.argv = ['core', 'list', '-v']\n"
    code += "from layershell.cli import main\nmain()"
    r = listed.run([sys.executable, "-c", code])
    assert r.returncode != 0 and b"must not import" in r.stderr
