"""Install one verified archive into a layer, atomically; remove; and reconcile.

The order makes every crash leave the old state or the new one:

1. admit it: the archive's headers (unpack.scan) against the layer's limits (limits.py):
   the depth limit, the disk budget (what the layer's packages use, from the records, plus
   what this one unpacks to) and the free-space floor of the filesystem; nothing is written;
2. unpack into `/opt/pkgs/.staging/<name>_<version>.<random>/tree` (unpack.py refuses
   anything unsafe and leaves nothing behind);
3. rename the tree to `/opt/pkgs/<name>_<version>` (one rename);
4. run its install.sh, if any, inside the layer as pseudo-root, contained (its own pid
   namespace: everything it started dies when it exits; a time limit, a memory limit,
   a file-size limit, a watch on free space; its exit status in the install log:
   install_script.py);
5. neutralise and measure the finished tree in one walk (trees.neutralise: setuid and
   setgid bits, file capabilities, ACLs, devices, foreign hard links, depth), and check
   the budget again with what install.sh added;
6. record it, active, in one database transaction (the moment the install happens);
7. point the `/opt/pkgs/<name>` link at it (rename of a new link over the old one).
A failure at 2 to 6 sends the tree to `.trash`, where it is deleted (trees.remove).

A crash before 6 leaves a directory the database does not know; `reconcile`, run under
the lock before every operation, deletes it. A crash between 6 and 7 leaves a stale
link; `reconcile` repoints it. The database is the truth.
"""

from __future__ import annotations

import os
import pwd
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

from layershell import faults
from layershell.errors import LayershellError
from layershell.layers import sandbox
from layershell.packages import records, trees, unpack
from layershell.packages.install_script import INSTALL_SCRIPT, run_install_script
from layershell.packages.limits import InstallLimits, free_inodes, free_space, human
from layershell.packages.source import Source
from layershell.packages.state import Brief, Installed, State
from layershell.packages.target import Target

Log = Callable[[str], None]


class PackageRefused(LayershellError):
    """Over a limit of the layer, or not safe to expose; nothing of it was installed."""

    exit_code = 1


def _plain(path: str) -> str:
    """A path for a note: escaped as unpack.show escapes names, without its quotes."""
    return unpack.show(path)[1:-1]


def _budget_hint(layer: str) -> str:
    return (
        f"raise limits.disk_budget of layer {layer} in layers.yaml (docs/packages.md, "
        '"Safe installs"), or make room: core remove NAME, core gc'
    )


def _used(db: State) -> int:
    """What the layer's package trees take on disk, from their records (measured after
    each install): a running total, so no install walks the whole layer."""
    return db.total_bytes()


def _admit(target: Target, src: Source, db: State, limits: InstallLimits) -> int:
    """Check the archive against the layer's limits before anything is unpacked; the
    budget left for it, in bytes."""
    layer = target.layer.name
    what = f"{src.name} {src.version}"
    used = _used(db)
    left = limits.disk_budget - used
    os.makedirs(target.pkgs_dir, exist_ok=True)
    free, size = free_space(target.pkgs_dir)
    floor = limits.floor(size)
    inodes, inode_floor = free_inodes(target.pkgs_dir)
    # unpack() refuses to expand past max_ratio times the compressed size, and checks
    # depth and sizes as it writes (into staging, removed on refusal): an archive that
    # could not break a limit even at that ratio needs no reading beforehand, which
    # would decompress it a second time.
    most = max(unpack.RATIO_FLOOR, int(unpack.Limits().max_ratio * os.path.getsize(src.archive)))
    if most <= min(left, free - floor) and inodes - unpack.Limits().max_files >= inode_floor:
        return left
    scan = unpack.scan(src.archive)
    if scan.depth > limits.max_depth:
        raise PackageRefused(
            f"{what}: entry {unpack.show(scan.deepest)}: "
            f"{unpack.depth_refusal(scan.depth, limits.max_depth)} (limits.max_depth of "
            f"layer {layer}); nothing was installed",
            f"if the package really needs it, raise limits.max_depth of layer {layer} "
            "in layers.yaml",
        )
    if scan.total_bytes > left:
        raise PackageRefused(
            f"{what}: it unpacks to {human(scan.total_bytes)}, but layer {layer} has "
            f"{human(max(left, 0))} of its disk budget left ({human(used)} of "
            f"{human(limits.disk_budget)} used); nothing was installed",
            _budget_hint(layer),
        )
    if free - scan.total_bytes < floor:
        raise PackageRefused(
            f"{what}: it unpacks to {human(scan.total_bytes)}, which would leave "
            f"{human(max(free - scan.total_bytes, 0))} free on the filesystem of "
            f"{target.pkgs_dir}, below the floor of {human(floor)}; nothing was installed",
            f"free some space there, or set limits.min_free of layer {layer} in layers.yaml",
        )
    if inode_floor and inodes - scan.entries < inode_floor:
        raise PackageRefused(
            f"{what}: its {scan.entries} entries would leave {max(inodes - scan.entries, 0)} "
            f"inodes free on the filesystem of {target.pkgs_dir}, below the floor of "
            f"{inode_floor}; nothing was installed",
            "remove files or packages there (core remove NAME, core gc)",
        )
    return left


@dataclass(frozen=True)
class Outcome:
    name: str
    version: str
    path: str
    status: str  # installed | unchanged | activated
    files: int = 0
    bytes: int = 0
    notes: tuple[str, ...] = ()  # what unpack neutralised (a setuid bit stripped, ...)


def _discard(target: Target, path: str) -> None:
    """Move a tree out of the way in one rename, then delete it (iteratively: a tree
    may be deeper than Python recurses). If the deletion fails, the tree waits in
    .trash, where reconcile deletes it at the next operation."""
    os.makedirs(target.trash_dir, exist_ok=True)
    doomed = tempfile.mkdtemp(dir=target.trash_dir)
    os.rename(path, os.path.join(doomed, "tree"))
    try:
        trees.remove(doomed)
    except OSError:
        pass


def switch_link(target: Target, name: str, version: str | None) -> None:
    """/opt/pkgs/<name> -> <name>_<version>, replaced atomically; None removes it."""
    link = os.path.join(target.pkgs_dir, name)
    if version is None:
        if os.path.islink(link):
            os.unlink(link)
        return
    tmp = f"{link}.{os.getpid()}.link"
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(f"{name}_{version}", tmp)
    os.rename(tmp, link)


LOCAL_COPIES = "local"  # <cache>/local: private copies of local tarballs while installed


def recheck(target: Target, name: str, version: str) -> trees.TreeReport:
    """Before an installed, inactive version becomes visible again (activation,
    rollback): the same rule as a new install, since a tree an older layershell
    installed may still carry what its install.sh left."""
    limits = InstallLimits.of(target.layer)
    try:
        return trees.neutralise(
            target.package_dir(name, version), owner=os.getuid(), max_depth=limits.max_depth
        )
    except trees.TreeRefused as exc:
        raise PackageRefused(
            f"{name} {version}: {exc.where}: {exc.reason}; it stays inactive",
            f"remove it (core remove {name}) and install it again",
        ) from None


def layer_trees(target: Target) -> list[str]:
    """The host directories install.sh can write: the layer's writable trees and its
    home (the same templates launch.py binds)."""
    state = os.path.dirname(os.path.dirname(target.store))  # <state>/layers/<layer>
    layer = target.layer
    found = [sandbox.expand(t, target.store, target.pkgs_dir, state) for _, t in layer.writable]
    # As launch.home_of: the layer's template; in rootless mode (packages live under
    # the state directory) {store}/home; else the account's password-database home.
    if layer.home or target.pkgs_dir.startswith(state + os.sep):
        found.append(
            sandbox.expand(layer.home or "{store}/home", target.store, target.pkgs_dir, state)
        )
    else:
        found.append(pwd.getpwuid(os.getuid()).pw_dir)
    return list(dict.fromkeys(found))


def _sweep_layer(target: Target, src: Source) -> list[str]:
    """install.sh may also have left a setuid bit or a capability elsewhere in its layer
    (/usr/local, the home, another package's tree), where any local user could run it:
    strip those too, as notes naming the host path. The new package itself is left to
    _finish_tree (which also refuses what cannot be made safe)."""
    notes = []
    own = os.path.basename(target.package_dir(src.name, src.version))
    for root in layer_trees(target):
        skip = (own, ".staging", ".trash") if root == target.pkgs_dir else ()
        for key, what in trees.strip_privileges(root, owner=os.getuid(), skip=skip):
            notes.append(
                f"{_plain(os.path.join(root, key))}: {what} (outside the package, by install.sh)"
            )
    return notes


def _finish_tree(target: Target, src: Source, db: State, limits: InstallLimits) -> trees.TreeReport:
    """Neutralise and measure the finished tree (after install.sh), and check the budget
    and the free-space floor with what it really takes on disk."""
    what = f"{src.name} {src.version}"
    final = target.package_dir(src.name, src.version)
    try:
        report = trees.neutralise(final, owner=os.getuid(), max_depth=limits.max_depth)
    except trees.TreeRefused as exc:
        raise PackageRefused(
            f"{what}: {exc.where}: {exc.reason}; the install was rolled back",
            "install.sh must leave its package a plain tree of the layer's own files",
        ) from None
    used = _used(db)
    if used + report.disk_bytes > limits.disk_budget:
        raise PackageRefused(
            f"{what}: with what install.sh wrote it takes {human(report.disk_bytes)} on "
            f"disk, and layer {target.layer.name} would use {human(used + report.disk_bytes)}"
            f" of its disk budget of {human(limits.disk_budget)}; the install was rolled back",
            _budget_hint(target.layer.name),
        )
    free, size = free_space(final)
    if free < limits.floor(size):
        raise PackageRefused(
            f"{what}: only {human(free)} is left free on the filesystem of {final}, below "
            f"the floor of {human(limits.floor(size))}; the install was rolled back",
            "free some space there, or set limits.min_free of layer "
            f"{target.layer.name} in layers.yaml",
        )
    return report


def install(
    target: Target,
    src: Source,
    db: State,
    *,
    script_timeout: float | None = None,
    log: Log = lambda _: None,
    lock_fd: int | None = None,
) -> Outcome:
    limits = InstallLimits.of(target.layer)
    final = target.package_dir(src.name, src.version)
    known = db.get(src.name, src.version)
    if known is not None and os.path.isdir(final):
        if known.sha256 != src.sha256:
            raise LayershellError(
                f"{src.name} {src.version} is installed with sha256 {known.sha256}, but the "
                f"repository now offers {src.sha256} under the same version",
                "a published version must never change; ask the publisher, or remove the "
                f"installed one first (core remove {src.name})",
            )
        if known.active:
            return Outcome(src.name, src.version, final, "unchanged", known.files, known.bytes)
        again = recheck(target, src.name, src.version)
        with db.transaction():
            db.record(known, activate=True)
        switch_link(target, src.name, src.version)
        notes = tuple(f"{_plain(path)}: {what}" for path, what in again.stripped)
        return Outcome(src.name, src.version, final, "activated", known.files, known.bytes, notes)
    if os.getuid() == 0:
        # Defence in depth: root hands installs to the layer's account (target.py).
        raise LayershellError("refusing to unpack a package as root", "this is a bug")
    left = _admit(target, src, db, limits)
    swept: list[str] = []
    os.makedirs(target.staging_dir, exist_ok=True)
    staging = tempfile.mkdtemp(dir=target.staging_dir, prefix=f"{src.name}_{src.version}.")
    try:
        tree = os.path.join(staging, "tree")
        caps = unpack.Limits(
            max_total_bytes=max(min(unpack.Limits().max_total_bytes, left), 1),
            max_depth=limits.max_depth,
        )
        result = unpack.unpack(src.archive, tree, caps)
        faults.checkpoint("unpacked")
        if os.path.lexists(final):
            _discard(target, final)  # an unrecorded leftover (reconcile normally got it)
        os.rename(tree, final)
    finally:
        trees.remove(staging)
    try:
        faults.checkpoint("renamed")
        if os.path.isfile(os.path.join(final, INSTALL_SCRIPT)):
            run_install_script(
                target,
                src,
                timeout=limits.script_timeout if script_timeout is None else script_timeout,
                log=log,
                lock_fd=lock_fd,
                limits=limits,
                file_size=left,
            )
            swept = _sweep_layer(target, src)
        # After install.sh, before anything can see the package: nothing privileged in
        # it, and it fits the budget with what install.sh added.
        report = _finish_tree(target, src, db, limits)
        # Written before the commit, so that marking it committed is one rename (no
        # room needed). A tree with no record, or this one, is an interrupted install.
        record = _row(target, src, final, report.files, report.disk_bytes)
        records.begin(target.pkgs_dir, record)
        faults.checkpoint("before-commit")
        with db.transaction():
            db.record(record, activate=True)
    except BaseException:
        _discard(target, final)
        records.forget(target.pkgs_dir, src.name, src.version)
        raise
    faults.checkpoint("committed")
    # From here a lost database is rebuilt with this version in it (records.py).
    records.committed(target.pkgs_dir, record)
    switch_link(target, src.name, src.version)
    # show(): a name install.sh made with a newline in it must not forge a line of output
    notes = tuple(f"{_plain(path)}: {what}" for path, what in result.stripped)
    notes += tuple(f"{_plain(path)}: {what} (after install.sh)" for path, what in report.stripped)
    notes += tuple(swept)
    return Outcome(
        src.name, src.version, final, "installed", report.files, report.disk_bytes, notes
    )


def _row(target: Target, src: Source, final: str, files: int, nbytes: int) -> Installed:
    return Installed(
        name=src.name,
        version=src.version,
        layer=target.layer.name,
        path=final,
        sha256=src.sha256,
        source=src.origin,
        size=src.size,
        files=files,
        bytes=nbytes,
        installed_at=time.time(),
        active=True,
        spec=src.spec,
    )


def remove(target: Target, db: State, name: str, version: str | None = None) -> list[str]:
    """Remove all versions of a package (or one), record first, then the trees."""
    rows = [r for r in db.versions(name) if version is None or r.version == version]
    if not rows:
        raise LayershellError(
            f"{name}{' ' + version if version else ''} is not installed in layer "
            f"{target.layer.name}",
            "see what is installed: core list",
            exit_code=1,
        )
    remaining = [r for r in db.versions(name) if r not in rows]
    for row in rows:  # first: from here a crash removes it, even with the database lost
        records.removing(target.pkgs_dir, row.name, row.version)
    try:
        with db.transaction():
            db.forget(name, version)
            if remaining and not any(r.active for r in remaining):
                db.record(remaining[-1], activate=True)
    except BaseException:
        # The database still has them (a full disk refused the change): so do their
        # records, or a database lost before the next reconcile would lose the trees.
        for row in rows:
            try:
                records.committed(target.pkgs_dir, row)
            except OSError:
                pass  # the error that matters is the database's
        raise
    switch_link(target, name, remaining[-1].version if remaining else None)
    for row in rows:
        if os.path.lexists(row.path):
            _discard(target, row.path)
        records.forget(target.pkgs_dir, row.name, row.version)
    return [r.version for r in rows]


def reconcile(target: Target, db: State, log: Log = lambda _: None) -> None:
    """Make /opt/pkgs agree with the database after a crash (under the lock).

    Runs before every operation, so it costs two listdirs and one query, plus a readlink
    per active package; it stats only what disagrees. A tree the database does not know
    is deleted only when its record says it was never committed (records.py): if the
    record says committed, this database is not the one that recorded it, and the
    operation stops before anything is changed."""
    try:
        entries: set[str] | None = set(os.listdir(target.pkgs_dir))
    except FileNotFoundError:
        entries = None
    rows = db.brief()
    recorded = {os.path.basename(r.path) for r in rows}
    lost = records.lost(target.pkgs_dir, recorded)
    if lost:
        raise records.lost_error(db.path, target.pkgs_dir, lost)
    _empty_leftovers(target, log)
    if entries is None:
        return
    _discard_unrecorded(target, entries - recorded, log)
    rows = _forget_missing(target, db, rows, entries, log)
    _settle_records(target, db, rows)
    _settle_links(target, entries, rows, log)


def _empty_leftovers(target: Target, log: Log) -> None:
    """Empty the staging, trash and local-copy directories a run that died left (reconcile)."""
    # ... and the private copies of local tarballs (pipeline._source) of a run that died.
    copies = os.path.join(target.cache_dir, LOCAL_COPIES)
    for leftover in (target.staging_dir, target.trash_dir, copies):
        # Iteratively: a leftover may be 10,000 directories deep (an older layershell
        # left such trees); one that cannot go is reported, and does not block the run.
        for path, exc in trees.empty(leftover):
            log(f"warning: cannot remove {path}: {exc.strerror or exc}")


def _discard_unrecorded(target: Target, unrecorded: set[str], log: Log) -> None:
    """Delete the package trees in /opt/pkgs that the database does not know (reconcile
    has checked that their records say they were never committed)."""
    for entry in sorted(unrecorded):
        path = os.path.join(target.pkgs_dir, entry)
        if records.package_key(entry) and os.path.isdir(path) and not os.path.islink(path):
            log(f"removing {path}: an interrupted install left it (not in the database)")
            _discard(target, path)
            records.forget(target.pkgs_dir, *entry.rsplit("_", 1))


def _forget_missing(
    target: Target, db: State, rows: list[Brief], entries: set[str], log: Log
) -> list[Brief]:
    """Forget the rows whose trees are gone from /opt/pkgs; the rows that remain."""
    missing = [r for r in rows if os.path.basename(r.path) not in entries]
    if not missing:
        return rows
    with db.transaction():
        for r in missing:
            log(f"forgetting {r.name} {r.version}: {r.path} is gone")
            db.forget(r.name, r.version)
    for r in missing:
        records.forget(target.pkgs_dir, r.name, r.version)
    return db.brief()


def _settle_records(target: Target, db: State, rows: list[Brief]) -> None:
    """Make the records agree with the database's rows (reconcile)."""
    states = records.listing(target.pkgs_dir)
    for r in rows:
        # The database committed it: its record says so too (a crash between the two,
        # a removal that did not happen, or a version an older layershell installed).
        if states.pop(f"{r.name}_{r.version}", None) != records.COMMITTED:
            row = db.get(r.name, r.version)
            if row is not None:
                records.committed(target.pkgs_dir, row)
    for key in states:  # records of trees that are gone and were never (or no longer) ours
        records.forget(target.pkgs_dir, *key.rsplit("_", 1))


def _settle_links(target: Target, entries: set[str], rows: list[Brief], log: Log) -> None:
    """Point each package's <name> link at its active version, and remove our links of
    packages with none (reconcile)."""
    active = {r.name: r.version for r in rows if r.active}
    for entry in entries - set(active):
        path = os.path.join(target.pkgs_dir, entry)
        # Only our own links: <name> -> <name>_<version>.
        if os.path.islink(path) and os.readlink(path).startswith(entry + "_"):
            os.unlink(path)
    for name, version in active.items():
        link = os.path.join(target.pkgs_dir, name)
        try:
            current = os.readlink(link)
        except OSError:
            current = ""
        if current != f"{name}_{version}":
            log(f"pointing {link} at {name}_{version}, the active version in the record")
            switch_link(target, name, version)
