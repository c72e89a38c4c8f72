"""`core list` and `core info`: read-only views of every installing layer's record.

`installed()` is also how root learns what a layer holds. The record is the layer
account's file, so for anyone but that account it is read through state.read_foreign
(no link followed, nothing created in the store) and every field is checked here:
a row that is not what layershell itself would have written is left out, with a
warning. What root then does with a row (profile, units, shims) comes from
layershell/packages/grants.py, never from the row's spec.
"""

from __future__ import annotations

import json
import os
import pwd
import sqlite3
import sys
import time
from dataclasses import replace
from typing import Any

import click

from layershell import names
from layershell.cli.app import App, load_stack
from layershell.errors import LayershellError
from layershell.layers.model import Layer
from layershell.packages import records, repo, target
from layershell.packages.state import Installed, State, StateError, read_foreign
from layershell.paths import ROOTLESS

SHA256_RE = names.SHA256
MAX_TEXT = 4096
_warned: set[str] = set()  # one warning per bad row and process, however often it is read


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


def _foreign(app: App, layer: Layer, uid: int) -> tuple[list[Installed], set[str]]:
    """The rows that pass the checks, and every <name>_<version> the database holds
    (a row refused here is still one it knows: not a version it lost)."""
    store = app.paths.store(layer.name)
    try:
        st = read_foreign(store, uid)
        if st is None:
            return [], set()
        with st:
            raw = st.raw()
    except sqlite3.Error as exc:
        raise StateError(
            f"the record of layer {layer.name} ({store}/state.db) cannot be read: {exc}",
            f"run core repair as {layer.account}, or as root",
        ) from None
    except StateError as exc:
        raise StateError(f"layer {layer.name} ({store}): {exc.message}", exc.hint) from None
    rows: list[Installed] = []
    known = {f"{item[0]}_{item[1]}" for item in raw if len(item) > 1}
    refused = 0
    for item in raw:
        row = _checked(item, layer, app.paths.pkgs_dir)
        if isinstance(row, str):
            refused += 1
            if row not in _warned and refused <= MAX_WARNINGS:
                _warned.add(row)
                app.err.print(f"warning: layer {layer.name}'s record: {row}; ignored")
            continue
        rows.append(row)
    if refused > MAX_WARNINGS:  # a record made to flood root's output says so once
        app.err.print(f"warning: layer {layer.name}'s record: {refused} bad rows in all; ignored")
    actives: dict[str, int] = {}
    for row in rows:
        actives[row.name] = actives.get(row.name, 0) + row.active
    double = sorted(n for n, count in actives.items() if count > 1)
    for name in double:
        if name not in _warned:
            _warned.add(name)
            app.err.print(
                f"warning: layer {layer.name}'s record has more than one active version of "
                f"{name}; none is used"
            )
    return [r for r in rows if r.name not in double], known


def _owner(app: App, layer: Layer) -> int | None:
    if app.paths.mode == ROOTLESS:
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
    return [replace(r, active=linked[r.name] == r.version) if r.name in linked else r for r in rows]


def installed(app: App, only: set[str] | None = None) -> list[Installed]:
    """Every installing layer's records (or only those of the named packages).

    A database that does not know versions its per-version records say are installed
    (lost, emptied, replaced) is an error naming the repair, never "nothing installed"."""
    rows: list[Installed] = []
    layers = load_stack(app)
    pkgs_dir = app.paths.pkgs_dir
    for layer in target.installing_layers(layers):
        uid = _owner(app, layer)
        if uid is None:
            continue
        before = records.listing(pkgs_dir)  # first: a commit renames its record after
        db = os.path.join(app.paths.store(layer.name), "state.db")
        if uid != os.getuid():
            found, known = _foreign(app, layer, uid)
        else:
            if os.path.exists(db):
                with State(db, readonly=True) as st:
                    found = st.all()
            else:
                found = []
            known = {os.path.basename(r.path) for r in found}
        lost = [
            key for key in records.lost(pkgs_dir, known) if before.get(key) == records.COMMITTED
        ]
        if lost:
            raise records.lost_error(db, pkgs_dir, lost)
        rows += [
            _redacted(r) for r in _as_linked(found, pkgs_dir) if only is None or r.name in only
        ]
    return rows


def _redacted(row: Installed) -> Installed:
    """A record written by a layershell that took passwords in URLs keeps one in its
    spec: never shown (nor used: plan.resolve refuses it with the file to fix)."""
    where = row.spec.get("repository")
    if isinstance(where, str) and repo.has_credentials(where):
        return replace(row, spec={**row.spec, "repository": repo.redact_url(where)})
    return row


def _shown(text: object) -> str:
    """A value of the record as text that cannot drive the terminal."""
    value = str(text)
    return value if value.isprintable() else value.encode("unicode_escape").decode()


def _verified(record: dict[str, object]) -> str:
    """How a version was verified, as a sentence: `signature by FPR on DATE (generation N)`."""
    how = str(record.get("verification", "?"))
    if how == "signature":
        at = record.get("at")
        when = (
            time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))
            if isinstance(at, (int, float)) and 0 <= at < 253402300800
            else "?"
        )
        return (
            f"signature by {record.get('key', '?')} on {when}"
            f" (generation {record.get('generation', '?')})"
        )
    if how == "checksum":
        return "checksum only (verify: checksum), no signature"
    if how == "none":
        return "none: a tarball installed as given"
    if how == "inbox":
        return "the inbox: checked by Ignition against the hash in the config that put it there"
    return how


@click.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--all", "show_all", is_flag=True, help="Also inactive (previous) versions.")
@click.pass_obj
def list_(app: App, as_json: bool, show_all: bool) -> None:
    """List installed packages."""
    rows = [r for r in installed(app) if show_all or r.active]
    from layershell.exposure import shims

    shown = shims.exposed(app.paths)
    from layershell.exposure import portable

    attached = portable.attached(app.paths) if app.paths.mode == "system" else {}
    for name, version in attached.items():
        if any(r.name == name and r.version == version for r in rows):
            shown.setdefault(name, []).append(f"{name}_{version} (portable)")
    from layershell.packages import grants

    table = grants.Table.load(app.paths)
    if as_json:
        out = [
            {
                **r.as_json(),
                "exposes": shown.get(r.name, []) if r.active else [],
                "granted": table.policy(r).as_json(),
            }
            for r in rows
        ]
        json.dump(out, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return
    if not rows:
        app.out.print("no packages installed")
        return
    header = ("NAME", "VERSION", "LAYER", "ACTIVE", "INSTALLED", "EXPOSES", "SOURCE")
    cells = [
        (
            _shown(r.name), _shown(r.version), _shown(r.layer), "yes" if r.active else "",
            time.strftime("%Y-%m-%d %H:%M", time.localtime(r.installed_at)),
            _shown(" ".join(shown.get(r.name, [])) if r.active else ""), _shown(r.source),
        )
        for r in rows
    ]  # fmt: skip
    if not sys.stdout.isatty():
        # Piped: plain columns, every value whole, one line per package (grep, awk, cut).
        widths = [max(len(row[i]) for row in (header, *cells)) for i in range(len(header) - 1)]
        for row in (header, *cells):
            line = "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False))
            sys.stdout.write(f"{line}  {row[-1]}".rstrip() + "\n")
        return
    from rich.table import Table

    out_table = Table(box=None, pad_edge=False)
    for col in header[:-1]:
        out_table.add_column(col, no_wrap=True)
    out_table.add_column("SOURCE", overflow="fold")
    for row in cells:
        out_table.add_row(*row)
    app.out.print(out_table)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.argument("name")
@click.pass_obj
def info(app: App, as_json: bool, name: str) -> None:
    """Show every installed version of a package and where it came from."""
    rows = [r for r in installed(app) if r.name == name]
    if not rows:
        raise LayershellError(f"{name} is not installed", "see core list")
    from layershell.packages import grants

    table = grants.Table.load(app.paths)
    if as_json:
        json.dump(
            [{**r.as_json(), "granted": table.policy(r).as_json()} for r in rows],
            sys.stdout,
            indent=1,
        )
        sys.stdout.write("\n")
        return
    for r in rows:
        app.out.print(f"{r.name} {r.version}{'  (active)' if r.active else ''}")
        for key in ("layer", "path", "source", "sha256", "files", "bytes"):
            app.out.print(f"  {key}: {_shown(getattr(r, key))}")
        for key, value in sorted(r.spec.items()):
            if value is None:
                continue  # unset (expose: all of bin/, no repository): nothing to say
            shown = _verified(value) if key == "verified" and isinstance(value, dict) else value
            app.out.print(f"  {_shown(key)}: {_shown(shown)}")
    policy = table.policy(rows[0])
    app.out.print(f"granted (what root acts on; from {policy.source}):")
    app.out.print(f"  profile: {policy.profile}")
    app.out.print(f"  install_method: {policy.install_method}")
    for key in ("enable", "start", "expose_over"):
        app.out.print(f"  {key}: {list(getattr(policy, key))}")
