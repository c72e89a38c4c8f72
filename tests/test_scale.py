"""Nothing an install, a remove or a listing does per call grows with the number of
installed packages beyond the rows it shows (issue 16, item 5): counted, never timed.
With MANY packages installed, one more install and its removal decode a handful of
records and grants, read no shim file of another package, and do not reconcile the
layer again after an operation that left it settled (packages/settled.py). A linear pass
would count MANY or more; on the code before grants.db and the settled stamp, one
install among 60 decoded 241 records and parsed 182 grants."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from tests.packages import program, tarball
from tests.support import Identity, python_cmd

# `core ARGS`, counting the per-row work; the counts go to stderr as one JSON line.
COUNTING = """
import atexit, json, sys
from layershell.exposure import shim_marks, shims
from layershell.packages import grants, install, pipeline, state
counts = {"rows": 0, "grants": 0, "marks": 0, "reconciles": 0}
def counted(module, name, key):
    real = getattr(module, name)
    def wrapper(*args, **kwargs):
        counts[key] += 1
        return real(*args, **kwargs)
    setattr(module, name, wrapper)
counted(state, "_row", "rows")
counted(grants, "_parse", "grants")
counted(shim_marks, "owner_of", "marks")
counted(shims, "owner_of", "marks")
counted(install, "reconcile", "reconciles")
atexit.register(lambda: print("COUNTS " + json.dumps(counts), file=sys.stderr))
sys.argv[0] = "core"
from layershell.cli import main
main()
"""
MANY = 60


def counted(ident: Identity, *args: str) -> dict[str, int]:
    r = ident.run([sys.executable, "-c", COUNTING, *args])
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stderr.decode().splitlines() if x.startswith("COUNTS "))
    counts: dict[str, int] = json.loads(line[len("COUNTS ") :])
    return counts


def fill(ident: Identity, where: Path, count: int) -> None:
    tars = [
        str(tarball(where / f"pkg{i:03d}_1.0.tar.gz", program(f"pkg{i:03d}", "1.0")))
        for i in range(count)
    ]
    r = ident.run(python_cmd("install", *tars))
    assert r.returncode == 0, r.stderr


def test_an_install_reads_only_its_own_rows(fresh_rootless: Identity, shared_dir: Path) -> None:
    fill(fresh_rootless, shared_dir, MANY)
    probe = tarball(shared_dir / "probe_1.0.tar.gz", program("probe", "1.0"))
    work = counted(fresh_rootless, "install", str(probe))
    assert work["reconciles"] == 0, work  # the fill left the layer settled
    # A handful for the package itself (its versions, read a few times), never one per
    # installed package: with MANY installed, a linear pass would count MANY or more.
    assert max(work.values()) < 10, work
    assert (fresh_rootless.home / ".local/bin/probe").is_file()
    work = counted(fresh_rootless, "remove", "probe")
    assert max(work.values()) < 10, work
    assert not (fresh_rootless.home / ".local/bin/probe").exists()
    # The listing reads every row it shows, and the shim files not at all.
    work = counted(fresh_rootless, "list", "--json")
    assert work["rows"] == MANY and work["marks"] == 0, work


def test_a_change_by_hand_is_reconciled(fresh_rootless: Identity, shared_dir: Path) -> None:
    """The settled stamp never hides what changed since: a tree removed by hand is
    forgotten by the next operation, as before the stamp."""
    fill(fresh_rootless, shared_dir, 3)
    store = fresh_rootless.home / ".local/share/layershell/layers/arne"
    assert (store / "reconciled").is_file()
    pkgs = Path(
        json.loads(fresh_rootless.run(python_cmd("list", "--json")).stdout)[0]["path"]
    ).parent
    tree = pkgs / "pkg001_1.0"
    r = fresh_rootless.run(["rm", "-rf", str(tree)])
    assert r.returncode == 0, r.stderr
    probe = tarball(shared_dir / "probe_1.0.tar.gz", program("probe", "1.0"))
    work = counted(fresh_rootless, "install", str(probe))
    assert work["reconciles"] == 1, work
    names = [
        row["name"] for row in json.loads(fresh_rootless.run(python_cmd("list", "--json")).stdout)
    ]
    assert names == ["pkg000", "pkg002", "probe"], names
    # A stamp the account did not write (another owner) is not trusted.
    os.chown(store / "reconciled", 0, 0)
    assert counted(fresh_rootless, "remove", "probe")["reconciles"] == 1
