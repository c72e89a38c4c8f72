"""`core repair --rebuild`: a layer's database made again from its per-version records.

Under the layer's lock, as its account. The database there now (missing, empty,
damaged, or simply not the one that recorded the trees) is renamed aside with a dated
name first, never deleted; the new one holds every committed version whose tree is
there (records.rebuild_rows), active as the links say; then the usual reconcile runs, so
the links, the leftovers and the records agree with it. What a rebuild cannot restore:
the event history (it stays in the backup) and versions whose record is damaged or
missing (said, and left on disk untouched).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from layershell.frozen import replace
from layershell.packages import install, records
from layershell.packages.state import State, StateError, backup_name
from layershell.packages.target import Target

Log = Callable[[str], None]


@dataclass(frozen=True)
class Result:
    restored: int
    backup: str | None  # where the database that was there went
    problems: tuple[str, ...]  # records that could not be used


def _set_aside(database: str) -> str | None:
    """Rename the database and its WAL files aside, as one dated set (the WAL holds
    commits a checkpoint has not written back: the backup is only whole with it)."""
    if not any(os.path.lexists(database + s) for s in ("", "-wal", "-shm")):
        return None
    kept = backup_name(database, "before-rebuild")
    for suffix in ("", "-wal", "-shm"):
        if os.path.lexists(database + suffix):
            os.rename(database + suffix, kept + suffix)
    return kept


def _save_rows(target: Target) -> None:
    """What the database there now can still say, first: a row whose tree is there but
    that has no committed record (an install by a layershell before records) gets one,
    so a rebuild of a database that is readable loses nothing."""
    try:
        with State(target.database, readonly=True) as old:
            rows = old.all()
    except StateError:
        return  # missing or damaged: the records are all there is
    states = records.listing(target.pkgs_dir)
    for row in rows:
        tree = target.package_dir(row.name, row.version)
        key = os.path.basename(tree)
        on_disk = os.path.isdir(tree) and not os.path.islink(tree)
        if states.get(key) != records.COMMITTED and on_disk:
            records.committed(target.pkgs_dir, replace(row, path=tree))


def rebuild(target: Target, log: Log) -> Result:
    """Call with the layer's lock held."""
    _save_rows(target)
    found = records.rebuild_rows(target.pkgs_dir, target.layer.name)
    kept = _set_aside(target.database)
    with State(target.database) as db:
        with db.transaction():
            for row in found.rows:
                # The tree's own path, whatever the record says: it was found there.
                row_at = replace(row, path=target.package_dir(row.name, row.version))
                db.record(row_at, activate=row_at.active)
                db.event(row.name, row.version, "rebuild", "from its per-version record")
        left = records.lost(target.pkgs_dir, {f"{r.name}_{r.version}" for r in found.rows})
        if left:
            # A tree whose record is damaged: reconcile would refuse to go on (it never
            # deletes a tree recorded as installed) and name this command again.
            raise records.RecordError(
                f"rebuilt {target.database} without {', '.join(left)}: "
                + "; ".join(found.problems)
                + ("" if kept is None else f" (the database that was there is kept as {kept})"),
                f"mend that record, or move the tree out of {target.pkgs_dir} to give the "
                "version up; then run core repair --rebuild again. Until then every "
                "operation stops before it changes anything",
            )
        install.reconcile(target, db, log)
    return Result(len(found.rows), kept, found.problems)
