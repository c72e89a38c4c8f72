"""Per-version records: each installed version's own record, next to its tree, so the
database can be rebuilt from what is on disk (`core repair --rebuild`).

    /opt/pkgs/.records/<name>_<version>.installing   written just before the commit
    /opt/pkgs/.records/<name>_<version>.json         after the database committed it
    /opt/pkgs/.records/<name>_<version>.removing     before the database forgets it

The state is in the file name, so a reader learns it from one listdir and a change of
state is one rename. The database stays the truth while it exists; a record only
answers the question the database cannot answer once it is lost: was this tree ever
installed? A tree whose record is `.json` was committed, so it is never deleted because
a database does not know it (that database was lost or replaced: the operation stops
and names `core repair --rebuild`); a tree whose record is `.installing` or `.removing`
(or has none) is an interrupted install or removal, deleted as before.

Records are the layer account's, written by it, as its database is. Root takes no
instruction from them (what root does as root comes from grants.json, grants.py), so a
database rebuilt from them grants nothing the old one did not.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterable

from layershell.atomic import write_atomic
from layershell.errors import LayershellError
from layershell.frozen import Frozen, replace
from layershell.packages import repo
from layershell.packages.state import Installed

RECORDS = ".records"
COMMITTED, INSTALLING, REMOVING = ".json", ".installing", ".removing"
SUFFIXES = (COMMITTED, INSTALLING, REMOVING)
FORMAT = 1
MAX_RECORD_BYTES = 1 << 20  # a record is a few hundred bytes; a spec at most a few kB
MAX_RECORDS = 100_000  # versions of packages in one layer, far above any real one

# Every field of a row, and its type: a record is checked as hostile input would be.
_FIELDS: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "version": str,
    "layer": str,
    "path": str,
    "sha256": str,
    "source": str,
    "size": int,
    "files": int,
    "bytes": int,
    "installed_at": (int, float),
    "spec": dict,
}


class RecordError(LayershellError):
    pass


def records_dir(pkgs_dir: str) -> str:
    return os.path.join(pkgs_dir, RECORDS)


def _file(pkgs_dir: str, name: str, version: str, suffix: str) -> str:
    return os.path.join(records_dir(pkgs_dir), f"{name}_{version}{suffix}")


def as_record(row: Installed) -> bytes:
    data: dict[str, object] = {"format": FORMAT, **row.as_json()}
    where = row.spec.get("repository")
    if isinstance(where, str) and repo.has_credentials(where):  # an older record's
        data["spec"] = {**row.spec, "repository": repo.redact_url(where)}
    del data["active"]  # the /opt/pkgs/<name> link says which version is active
    return (json.dumps(data, sort_keys=True, indent=1) + "\n").encode()


def begin(pkgs_dir: str, row: Installed) -> None:
    """Just before the database commits the version: `.installing`, the whole row."""
    os.makedirs(records_dir(pkgs_dir), exist_ok=True)
    write_atomic(_file(pkgs_dir, row.name, row.version, INSTALLING), as_record(row))


def committed(pkgs_dir: str, row: Installed) -> None:
    """After the database committed the version: the record of a finished install.
    One rename of the `.installing` record (written with the same row just before the
    commit) or of a `.removing` one (a removal that did not happen), so it needs no
    free space: a full disk can still be repaired. Written only for a row that has no
    record at all (a version an older layershell installed)."""
    final = _file(pkgs_dir, row.name, row.version, COMMITTED)
    for other in (INSTALLING, REMOVING):
        try:
            os.rename(_file(pkgs_dir, row.name, row.version, other), final)
            return
        except FileNotFoundError:
            continue
    os.makedirs(records_dir(pkgs_dir), exist_ok=True)
    write_atomic(final, as_record(row))


def removing(pkgs_dir: str, name: str, version: str) -> None:
    """Before the database forgets a version: a crash from here on removes it."""
    try:
        os.rename(
            _file(pkgs_dir, name, version, COMMITTED), _file(pkgs_dir, name, version, REMOVING)
        )
    except FileNotFoundError:
        pass


def forget(pkgs_dir: str, name: str, version: str) -> None:
    """Once the tree is gone: no record of it in any state."""
    for suffix in SUFFIXES:
        _unlink(_file(pkgs_dir, name, version, suffix))


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def listing(pkgs_dir: str, names: Iterable[str] | None = None) -> dict[str, str]:
    """<name>_<version> -> its state (a suffix), from one listdir (of the packages
    `names` only, if given: the other entries are not parsed). A directory that is not
    there, or is not a directory, has no records. Opened without following a link: root
    reads a layer's records too (cli/listing.py), and follows no link in a store."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(records_dir(pkgs_dir), flags)
    except OSError:
        return {}
    try:
        entries = os.listdir(fd)
    finally:
        os.close(fd)
    if len(entries) > MAX_RECORDS:
        # The account's directory: root reads it too, and a million names planted
        # there must not make every root operation slow.
        raise RecordError(
            f"{records_dir(pkgs_dir)} holds {len(entries)} entries, more than the "
            f"{MAX_RECORDS} records a layer may have",
            "the layer's account must remove what it did not install there",
        )
    if names is not None:
        wanted = set(names)
        prefixes = tuple(f"{n}_" for n in wanted)
        entries = [e for e in entries if e.startswith(prefixes) and e.rpartition("_")[0] in wanted]
    found: dict[str, str] = {}
    for entry in entries:
        key, _, ext = entry.rpartition(".")
        suffix = _BY_EXTENSION.get(ext)
        # Two states of one version (a crash between the write and the unlink in
        # `committed`): the committed one wins.
        if suffix is not None and found.get(key) != COMMITTED and package_key(key):
            found[key] = suffix
    return found


_BY_EXTENSION = {s[1:]: s for s in SUFFIXES}


def package_key(key: str) -> bool:
    """<name>_<version>, split at the last '_' as repositories name files."""
    name, sep, version = key.rpartition("_")
    return bool(sep) and bool(repo.NAME_RE.match(name)) and bool(repo.VERSION_RE.match(version))


def lost(pkgs_dir: str, known: Iterable[str]) -> list[str]:
    """Committed versions (<name>_<version>) whose tree is there that a database with
    the trees `known` does not know: it is not the database that recorded them."""
    keys = set(known)
    return sorted(
        key
        for key, state in listing(pkgs_dir).items()
        if state == COMMITTED and key not in keys and is_tree(os.path.join(pkgs_dir, key))
    )


def still_lost(pkgs_dir: str, known: Iterable[str], before: dict[str, str]) -> list[str]:
    """lost(), for a reader that listed the records (`before`) before it read the
    database (which knows `known`): the committed versions it does not know whose record
    still says committed and whose tree is there. Only those are looked at again (a
    removal renames its record before the database forgets it), not the whole
    directory."""
    keys = set(known)
    candidates = [k for k, state in before.items() if state == COMMITTED and k not in keys]
    if not candidates:
        return []
    # The directory is the account's: opened without following a link, as listing does.
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(records_dir(pkgs_dir), flags)
    except OSError:
        return []
    try:
        found = []
        for key in sorted(candidates):
            try:
                os.stat(key + COMMITTED, dir_fd=fd, follow_symlinks=False)
            except OSError:
                continue
            if is_tree(os.path.join(pkgs_dir, key)):
                found.append(key)
        return found
    finally:
        os.close(fd)


def is_tree(path: str) -> bool:
    """A directory itself, not a link to one (lstat: root follows no link of a layer's)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def lost_error(database: str, pkgs_dir: str, keys: list[str]) -> RecordError:
    shown = ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
    return RecordError(
        f"the state database {database} does not know {len(keys)} installed "
        f"version{'s' * (len(keys) != 1)} ({shown}) that {records_dir(pkgs_dir)} records "
        "as installed: the database was lost, emptied or replaced; nothing was changed",
        "rebuild it from the records: core repair --rebuild (the database there now is "
        "kept as a dated backup)",
    )


def read(pkgs_dir: str, key: str) -> Installed:
    """A committed record, checked field by field; RecordError naming the file."""
    path = os.path.join(records_dir(pkgs_dir), key + COMMITTED)
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
        with os.fdopen(fd, "rb") as f:
            raw = f.read(MAX_RECORD_BYTES + 1)
    except OSError as exc:
        raise RecordError(f"cannot read the record {path}: {exc.strerror}") from None
    try:
        if len(raw) > MAX_RECORD_BYTES:
            raise ValueError(f"larger than {MAX_RECORD_BYTES} bytes")
        data = json.loads(raw.decode("utf-8"))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        for field, kind in _FIELDS.items():
            value = data.get(field)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ValueError(f"field {field!r} is missing or not a {_kind(kind)}")
        if f"{data['name']}_{data['version']}" != key:
            raise ValueError(f"it is the record of {data['name']} {data['version']}")
        _values(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        # RecursionError: nested deeper than the parser goes (a spec of a million '[')
        raise RecordError(f"the record {path} is damaged: {exc}") from None
    return Installed(
        name=data["name"],
        version=data["version"],
        layer=data["layer"],
        path=data["path"],
        sha256=data["sha256"],
        source=data["source"],
        size=data["size"],
        files=data["files"],
        bytes=data["bytes"],
        installed_at=float(data["installed_at"]),
        active=False,
        spec=data["spec"],
    )


MAX_COUNT = 1 << 63  # what SQLite's INTEGER holds
MAX_TIME = 253402300800  # year 9999: time.localtime (core list) takes nothing later


def _values(data: dict[str, object]) -> None:
    """The values layershell writes, no others: a size SQLite can store, a time core
    list can show (not NaN, Infinity or 1e300), a sha256 (root reads the rebuilt
    database through the same checks, cli/listing.py)."""
    for field in ("size", "files", "bytes"):
        value = data[field]
        if not (isinstance(value, int) and 0 <= value < MAX_COUNT):
            raise ValueError(f"field {field!r} is not a count")
    at = data["installed_at"]
    if not (isinstance(at, (int, float)) and 0 <= at < MAX_TIME):  # NaN fails both
        raise ValueError("field 'installed_at' is not a time")
    if not repo.SHA256_RE.match(str(data["sha256"])):
        raise ValueError("field 'sha256' is not 64 hex digits")


def _kind(kind: type | tuple[type, ...]) -> str:
    names = {str: "string", int: "number", float: "number", dict: "JSON object"}
    first = kind[0] if isinstance(kind, tuple) else kind
    return names.get(first, first.__name__)


class Rebuilt(Frozen):
    rows: tuple[Installed, ...]  # with `active` from the links
    problems: tuple[str, ...]  # records that could not be used, said why


def rebuild_rows(pkgs_dir: str, layer: str) -> Rebuilt:
    """The rows of a database rebuilt from the committed records whose tree is there,
    and what could not be used (a record that is not what layershell writes). Active:
    the version the /opt/pkgs/<name> link points at, else the newest."""
    rows: list[Installed] = []
    problems: list[str] = []
    for key, state in sorted(listing(pkgs_dir).items()):
        if state != COMMITTED:
            continue  # never committed, or being removed: not installed
        tree = os.path.join(pkgs_dir, key)
        if not is_tree(tree):
            problems.append(f"{key}: recorded, but {tree} is gone: not rebuilt")
            continue
        try:
            row = read(pkgs_dir, key)
        except RecordError as exc:
            problems.append(f"{exc.message}; {tree} is not in the rebuilt database")
            continue
        # This layer's, whatever the record says (a layer renamed in layers.yaml): its
        # tree is in this layer's package directory, which no other layer shares.
        rows.append(replace(row, layer=layer))
    by_name: dict[str, list[Installed]] = {}
    for row in rows:
        by_name.setdefault(row.name, []).append(row)
    out: list[Installed] = []
    for name, versions in sorted(by_name.items()):
        try:
            linked = os.readlink(os.path.join(pkgs_dir, name))
        except OSError:
            linked = ""
        chosen = next(
            (r for r in versions if f"{r.name}_{r.version}" == linked),
            max(versions, key=lambda r: r.installed_at),
        )
        out += [_with_active(r, r is chosen) for r in versions]
    return Rebuilt(tuple(out), tuple(problems))


def _with_active(row: Installed, active: bool) -> Installed:
    return replace(row, active=active)
