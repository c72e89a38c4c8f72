"""The inventory: what every installing layer holds, read from its record.

This is also how root learns what a layer holds. The record is the layer account's
file, so for anyone but that account it is read through state.read_foreign (no link
followed, nothing created in the store) and every field is checked here: a row that is
not what layershell itself would have written is left out, with a warning. What root
then does with a row (profile, units, shims) comes from grants.py, never from the
row's spec.
"""

from __future__ import annotations

import json
import os
import pwd
import sqlite3
from collections.abc import Callable

from layershell import names
from layershell.frozen import replace
from layershell.layers.model import Layer, LayerStack
from layershell.packages import records, repo, target
from layershell.packages.state import Installed, State, StateError, read_foreign
from layershell.paths import ROOTLESS, Paths

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

Warn = Callable[[str], None]

SHA256_RE = names.SHA256
MAX_TEXT = 4096
_warned: set[str] = set()  # one warning per bad row and process, however often it is read
# Rows refused in this process, warned about or not: a listing with any is never kept
# (cli/list_cache.py), since a kept one would hide them without a word.
REFUSED = [0]


def _printable(text: str) -> bool:
    return len(text) <= MAX_TEXT and text.isprintable()


def _checked(raw: tuple[Any, ...], layer: Layer, pkgs_dir: str) -> Installed | str:
    """A row of another account's record as an Installed, or why it is not one."""
    try:
        name, version, lay, path, sha256, source, size, files, nbytes, at, active, spec = raw
    except ValueError:
        return "a row of the wrong shape"
    if not (isinstance(name, str) and isinstance(version, str)):
        return "a row without a text name and version"
    label = f"{name!r} {version!r}"
    if not (repo.NAME_RE.match(name) and repo.VERSION_RE.match(version)):
        return f"{label}: not a package name and version"
    if len(name) + len(version) > 255:
        return f"{label}: name and version too long"
    if lay != layer.name:
        return f"{label}: recorded for layer {lay!r}, not {layer.name}"
    if path != os.path.join(pkgs_dir, f"{name}_{version}"):
        return f"{label}: recorded at {path!r}, not in {pkgs_dir}"
    if not (isinstance(sha256, str) and SHA256_RE.match(sha256)):
        return f"{label}: its sha256 is not 64 hex digits"
    if not (isinstance(source, str) and _printable(source)):
        return f"{label}: its source is not printable text"
    if not all(isinstance(n, int) and n >= 0 for n in (size, files, nbytes)):
        return f"{label}: its sizes are not counts"
    # 0 .. year 9999: a time the record could not have been written at is not one
    if not (isinstance(at, (int, float)) and 0 <= at < 253402300800) or active not in (0, 1):
        return f"{label}: its time or active flag is not one"
    try:
        parsed = json.loads(spec) if isinstance(spec, str) else None
    except (ValueError, RecursionError):
        parsed = None
    if not isinstance(parsed, dict):
        return f"{label}: its spec is not a JSON object"
    return Installed(
        name, version, lay, path, sha256, source, size, files, nbytes, float(at),
        bool(active), parsed,
    )  # fmt: skip


MAX_WARNINGS = 20


def _foreign(
    paths: Paths, layer: Layer, uid: int, warn: Warn, only: set[str] | None
) -> tuple[list[Installed], set[str]]:
    """The rows (of `only`, if given) that pass the checks, and every <name>_<version>
    the database holds (a row refused here is still one it knows: not a version it
    lost)."""
    store = paths.store(layer.name)
    try:
        st = read_foreign(store, uid)
        if st is None:
            return [], set()
        with st:
            # By name, the account's schema compares (a column COLLATE NOCASE finds
            # another package's rows too): only the rows of the names asked for count.
            raw = [r for r in st.raw(only) if only is None or (r and r[0] in only)]
            keys = None if only is None else st.keys()
    except sqlite3.Error as exc:
        raise StateError(
            f"the record of layer {layer.name} ({store}/state.db) cannot be read: {exc}",
            f"run core repair as {layer.account}, or as root",
        ) from None
    except StateError as exc:
        raise StateError(f"layer {layer.name} ({store}): {exc.message}", exc.hint) from None
    rows: list[Installed] = []
    known = keys if keys is not None else {f"{item[0]}_{item[1]}" for item in raw if len(item) > 1}
    refused = 0
    for item in raw:
        row = _checked(item, layer, paths.pkgs_dir)
        if isinstance(row, str):
            refused += 1
            REFUSED[0] += 1
            if row not in _warned and refused <= MAX_WARNINGS:
                _warned.add(row)
                warn(f"warning: layer {layer.name}'s record: {row}; ignored")
            continue
        rows.append(row)
    if refused > MAX_WARNINGS:  # a record made to flood root's output says so once
        warn(f"warning: layer {layer.name}'s record: {refused} bad rows in all; ignored")
    actives: dict[str, int] = {}
    for row in rows:
        actives[row.name] = actives.get(row.name, 0) + row.active
    double = sorted(n for n, count in actives.items() if count > 1)
    for name in double:
        REFUSED[0] += 1
        if name not in _warned:
            _warned.add(name)
            warn(
                f"warning: layer {layer.name}'s record has more than one active version of "
                f"{name}; none is used"
            )
    return [r for r in rows if r.name not in double], known


def _owner(paths: Paths, layer: Layer) -> int | None:
    if paths.mode == ROOTLESS:
        return os.getuid()
    try:
        return pwd.getpwnam(layer.account).pw_uid
    except KeyError:
        return None  # no account, so no record yet (core init creates it)


def _as_linked(rows: list[Installed], pkgs_dir: str) -> list[Installed]:
    """Active as /opt/pkgs/<name> says, which is what every shim runs. The record and
    the link change one after the other (install.py): between the two, or after a crash
    there, a reader shows what runs; the next operation moves the link to the record."""
    versions: dict[str, set[str]] = {}
    for row in rows:
        versions.setdefault(row.name, set()).add(row.version)
    linked: dict[str, str] = {}
    for name, known in versions.items():
        try:
            target_name = os.readlink(os.path.join(pkgs_dir, name))  # never followed
        except OSError:
            continue
        version = target_name[len(name) + 1 :] if target_name.startswith(name + "_") else ""
        if version in known:
            linked[name] = version
    return [
        replace(r, active=not r.active)
        if r.name in linked and r.active != (linked[r.name] == r.version)
        else r
        for r in rows
    ]


def installed(
    paths: Paths, layers: LayerStack, only: set[str] | None = None, *, warn: Warn
) -> list[Installed]:
    """Every installing layer's records (or only those of the named packages).

    A database that does not know versions its per-version records say are installed
    (lost, emptied, replaced) is an error naming the repair, never "nothing installed"."""
    rows: list[Installed] = []
    pkgs_dir = paths.pkgs_dir
    for layer in target.installing_layers(layers):
        uid = _owner(paths, layer)
        if uid is None:
            continue
        before = records.listing(pkgs_dir, only)  # first: a commit renames its record after
        db = os.path.join(paths.store(layer.name), "state.db")
        if uid != os.getuid():
            found, known = _foreign(paths, layer, uid, warn, only)
        elif os.path.exists(db):
            with State(db, readonly=True) as st:
                found = st.all(only)
                known = {os.path.basename(r.path) for r in found} if only is None else st.keys()
        else:
            found, known = [], set()
        lost = records.still_lost(pkgs_dir, known, before)
        if lost:
            raise records.lost_error(db, pkgs_dir, lost)
        rows += [_redacted(r) for r in _as_linked(found, pkgs_dir)]
    return rows


def _redacted(row: Installed) -> Installed:
    """A record written by a layershell that took passwords in URLs keeps one in its
    spec: never shown (nor used: plan.resolve refuses it with the file to fix)."""
    where = row.spec.get("repository")
    # Every URL with a password has an "@": the check itself costs a split per row.
    if isinstance(where, str) and "@" in where and repo.has_credentials(where):
        return replace(row, spec={**row.spec, "repository": repo.redact_url(where)})
    return row
