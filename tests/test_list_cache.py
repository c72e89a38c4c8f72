"""The kept listing (layershell/cli/list_cache.py): `core list` with nothing changed prints
the listing it kept, reading no record; anything that changed what a listing shows is
seen at once; a kept listing someone else could have written is not used."""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.packages import program, tarball
from tests.support import Identity, python_cmd, rootless_identity, userns_available
from tests.test_hot_path import BLOCK

# `core ARGS`, saying on stderr how many times the records were read.
COUNTING = """
import atexit, sys
from layershell.packages import inventory
calls = [0]
real = inventory.installed
def counted(*args, **kwargs):
    calls[0] += 1
    return real(*args, **kwargs)
inventory.installed = counted
atexit.register(lambda: print(f"READS {calls[0]}", file=sys.stderr))
sys.argv[0] = "core"
from layershell.cli import main
main()
"""


@pytest.fixture
def ident() -> Iterator[Identity]:
    if not userns_available():
        pytest.skip("unprivileged user namespaces are disabled on this kernel")
    with rootless_identity() as who:
        yield who


def listing(ident: Identity, *args: str, env: dict[str, str] | None = None) -> tuple[str, int]:
    """(what `core list ARGS` printed, how many times it read the records)."""
    time.sleep(0.1)  # past the racy window of whatever changed just before
    r = ident.run([sys.executable, "-c", COUNTING, "list", *args], env=env)
    assert r.returncode == 0, r.stderr
    reads = [x for x in r.stderr.decode().splitlines() if x.startswith("READS ")]
    return r.stdout.decode(), int(reads[-1].split()[1])


def install(ident: Identity, where: Path, name: str, version: str = "1.0") -> None:
    tar = tarball(where / f"{name}_{version}.tar.gz", program(name, version))
    r = ident.run(python_cmd("install", str(tar)))
    assert r.returncode == 0, r.stderr


def cache(ident: Identity) -> Path:
    return ident.home / ".local/share/layershell/cache"


def test_nothing_changed_reads_nothing(ident: Identity, shared_dir: Path) -> None:
    install(ident, shared_dir, "tool")
    for form in (("--json",), (), ("--all",), ("--json", "--all")):
        first, reads = listing(ident, *form)
        assert reads == 1, form
        again, reads = listing(ident, *form)
        assert (again, reads) == (first, 0), form
    assert sorted(p.name for p in cache(ident).glob("list-*")) == [
        "list-json", "list-json-all", "list-table", "list-table-all",
    ]  # fmt: skip


def test_every_change_is_seen(ident: Identity, shared_dir: Path) -> None:
    install(ident, shared_dir, "tool")
    text, _ = listing(ident, "--json")
    assert [r["name"] for r in json.loads(text)] == ["tool"]
    assert listing(ident, "--json")[1] == 0
    # A package installed, a version switched, one removed: core's own changes.
    install(ident, shared_dir, "other")
    assert [r["name"] for r in json.loads(listing(ident, "--json")[0])] == ["other", "tool"]
    install(ident, shared_dir, "tool", "2.0")
    rows = {r["name"]: r["version"] for r in json.loads(listing(ident, "--json")[0])}
    assert rows == {"other": "1.0", "tool": "2.0"}
    assert ident.run(python_cmd("remove", "other")).returncode == 0
    assert [r["name"] for r in json.loads(listing(ident, "--json")[0])] == ["tool"]
    # A shim removed by hand, and its exposure gone from the listing.
    (ident.home / ".local/bin/tool").unlink()
    assert json.loads(listing(ident, "--json")[0])[0]["exposes"] == []
    # The record edited behind core's back, with SQLite rather than core: seen at once.
    db = ident.home / ".local/share/layershell/layers/arne/state.db"
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE packages SET source = 'edited' WHERE version = '2.0'")
    conn.close()
    assert json.loads(listing(ident, "--json")[0])[0]["source"] == "edited"


def test_the_time_zone_is_part_of_the_key(ident: Identity, shared_dir: Path) -> None:
    install(ident, shared_dir, "tool")
    utc, _ = listing(ident, env={"TZ": "UTC"})
    far, reads = listing(ident, env={"TZ": "IST-5:30"})  # POSIX: no tzdata needed
    assert reads == 1 and far != utc  # 5:30 apart: another INSTALLED time


def test_a_kept_listing_another_could_write_is_not_used(ident: Identity, shared_dir: Path) -> None:
    install(ident, shared_dir, "tool")
    text, _ = listing(ident, "--json")
    kept = cache(ident) / "list-json"
    planted = kept.read_text().replace('"tool"', '"planted"')
    for owner, mode in ((0, 0o644), (ident.uid, 0o666)):
        kept.write_text(planted)
        os.chown(kept, owner, ident.gid)
        kept.chmod(mode)
        again, reads = listing(ident, "--json")
        assert (again, reads) == (text, 1), (owner, oct(mode))


def test_a_kept_listing_is_printed_without_json_or_sqlite(
    ident: Identity, shared_dir: Path
) -> None:
    """What makes it fast: no module that reads the records is imported on a hit."""
    install(ident, shared_dir, "tool")
    text, _ = listing(ident, "--json")
    block = BLOCK.replace('("click", "yaml", "rich")', '("json", "sqlite3", "_sqlite3")')
    code = block + "import sys\nsys.argv = ['core', 'list', '--json']\n"
    code += "from layershell.cli import main\nmain()"
    r = ident.run([sys.executable, "-c", code])
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode() == text


def test_the_names_it_watches_are_their_owners() -> None:
    """list_cache names the files it fingerprints itself (to import nothing on a hit)."""
    from layershell.cli import list_cache
    from layershell.layers import config, stack
    from layershell.packages import records, target

    assert list_cache.RECORDS == records.RECORDS
    package = Path(list_cache.__file__).parent.parent
    assert all((package / m).is_file() for m in list_cache.CODE)
    layers = config.load_stack(stack.shipped_layers_file())
    watched = tuple(n for n in layers.layers if n.level == 1)
    assert watched == target.installing_layers(layers) != ()


LOADED = """
import os, sys
sys.argv = ["core", "list", "--json"]
from layershell.cli import quick
try:
    quick.main(sys.argv[1:])
except SystemExit:
    pass
import layershell
root = os.path.dirname(layershell.__file__)
for name, module in sorted(sys.modules.items()):
    if name.startswith("layershell") and getattr(module, "__file__", None):
        print(os.path.relpath(module.__file__, root), file=sys.stderr)
"""


def test_every_module_a_listing_imports_is_watched(ident: Identity, shared_dir: Path) -> None:
    from layershell.cli import list_cache

    install(ident, shared_dir, "tool")  # and nothing kept yet: this listing is made
    r = ident.run([sys.executable, "-c", LOADED])
    assert r.returncode == 0, r.stderr
    loaded = set(r.stderr.decode().split())
    assert "packages/inventory.py" in loaded  # it rendered, rather than printed a kept one
    assert loaded <= set(list_cache.CODE), sorted(loaded - set(list_cache.CODE))


def test_a_linked_bin_dir_is_watched_through_its_link(ident: Identity, shared_dir: Path) -> None:
    install(ident, shared_dir, "tool")
    bin_dir = ident.home / ".local/bin"
    real = ident.home / "real-bin"
    bin_dir.rename(real)
    bin_dir.symlink_to(real)
    os.lchown(bin_dir, ident.uid, ident.gid)
    assert json.loads(listing(ident, "--json")[0])[0]["exposes"] == ["tool"]
    assert listing(ident, "--json")[1] == 0
    (real / "tool").unlink()  # the link's own times do not change
    assert json.loads(listing(ident, "--json")[0])[0]["exposes"] == []


def test_a_cache_directory_others_may_write_is_not_used(ident: Identity, shared_dir: Path) -> None:
    install(ident, shared_dir, "tool")
    cache(ident).chmod(0o777)
    try:
        assert [listing(ident, "--json")[1] for _ in range(2)] == [1, 1]
        assert not (cache(ident) / "list-json").exists()
    finally:
        cache(ident).chmod(0o755)
