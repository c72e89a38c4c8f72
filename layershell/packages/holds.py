"""Holds: packages `core update` leaves at the version they are at, until `core unhold`,
as `apt-mark hold` does. `core hold NAME` holds one; a rollback holds what it rolled back
(else the next update, a daily timer say, would undo it); removing a package forgets it.

The file is the layer's own (<store>/holds.json), read and written by the layer's
account only: it decides what the account's own update does, nothing root acts on."""

from __future__ import annotations

from typing import TYPE_CHECKING

from layershell.atomic import read_json_map, write_json
from layershell.errors import NotInstalled
from layershell.packages.target import Target

if TYPE_CHECKING:
    from layershell.packages.pipeline import Session


def read_holds(target: Target) -> dict[str, str]:
    """Held package -> the version it was held at. The layer's own file, read only by
    the layer's account: what it decides is what its own update does, nothing of root's."""
    found = read_json_map(target.holds_file, hint="core unhold NAME, or remove the file")
    return {k: v for k, v in found.items() if isinstance(v, str)}


def hold(session: Session, name: str) -> tuple[str, bool]:
    """Hold `name` at its active version: (that version, whether it was held before)."""
    active = next((r for r in session.db.versions(name) if r.active), None)
    if active is None:
        known = {r.name for r in session.db.all()}
        raise NotInstalled([name], session.target.layer.name, known)
    holds = read_holds(session.target)
    was = holds.get(name) == active.version
    holds[name] = active.version
    write_json(session.target.holds_file, holds)
    return active.version, was


def unhold(session: Session, name: str) -> bool:
    """Let `core update` move `name` again; False if it was not held. A name neither
    held nor installed is a typo (NotInstalled), not "nothing to do"."""
    holds = read_holds(session.target)
    if holds.pop(name, None) is None:
        if not session.db.versions(name):
            known = {r.name for r in session.db.all()}
            raise NotInstalled([name], session.target.layer.name, known)
        return False
    write_json(session.target.holds_file, holds)
    return True


def forget(target: Target, names: list[str]) -> None:
    holds = read_holds(target)
    if any(holds.pop(n, None) is not None for n in list(names)):
        write_json(target.holds_file, holds)
