"""Install one verified archive into a layer, atomically; remove; and reconcile.

The order makes every crash leave the old state or the new one:

1. unpack into `/opt/pkgs/.staging/<name>_<version>.<random>/tree` (unpack.py refuses
   anything unsafe and leaves nothing behind);
2. rename the tree to `/opt/pkgs/<name>_<version>` (one rename);
3. run its install.sh, if any, inside the layer as pseudo-root; on failure the tree goes
   to `.trash` and is deleted;
4. record it, active, in one database transaction (the moment the install happens);
5. point the `/opt/pkgs/<name>` link at it (rename of a new link over the old one).

A crash before 4 leaves a directory the database does not know; `reconcile`, run under
the lock before every operation, deletes it. A crash between 4 and 5 leaves a stale
link; `reconcile` repoints it. The database is the truth.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from layershell import repo, session, unpack
from layershell.errors import LayershellError
from layershell.state import Installed, State
from layershell.target import Target

INSTALL_SCRIPT = "install.sh"
DEFAULT_SCRIPT_TIMEOUT = 300.0

Log = Callable[[str], None]


CRASH_ENV = "LAYERSHELL_CRASH_AT"


def checkpoint(name: str) -> None:
    """Crash-consistency tests kill the process here, for real, with SIGKILL: the same
    state a power cut or the OOM killer leaves (tests/test_install.py). "account:NAME"
    kills only the layer account's process root handed the work to."""
    if os.environ.get(CRASH_ENV) in (name, f"account:{name}"):
        os.kill(os.getpid(), signal.SIGKILL)


def died_with(returncode: int) -> None:
    """In a crash test, root's operation dies with the account's process it handed the
    work to: the test kills `core update`, not half of it (unless it says account:)."""
    point = os.environ.get(CRASH_ENV, "")
    if point and not point.startswith("account:") and returncode == -signal.SIGKILL:
        os.kill(os.getpid(), signal.SIGKILL)


class InstallScriptFailed(LayershellError):
    exit_code = 1


@dataclass(frozen=True)
class Source:
    """A verified archive, ready to install."""

    name: str
    version: str
    archive: str  # path of the verified file (the download cache, or the user's tarball)
    sha256: str
    size: int
    origin: str  # URL, tarball path or inbox path: what the record shows as its source
    spec: dict[str, object] = field(default_factory=dict)


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
    """Move a tree out of the way in one rename, then delete it."""
    os.makedirs(target.trash_dir, exist_ok=True)
    doomed = tempfile.mkdtemp(dir=target.trash_dir)
    os.rename(path, os.path.join(doomed, "tree"))
    shutil.rmtree(doomed, ignore_errors=True)


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


def run_install_script(
    target: Target, src: Source, *, timeout: float, log: Log, lock_fd: int | None = None
) -> None:
    """install.sh, inside the layer, as its pseudo-root, with a timeout and a log file."""
    inner = target.inner_dir(src.name, src.version)
    os.makedirs(target.log_dir, exist_ok=True)
    log_path = os.path.join(target.log_dir, f"{src.name}_{src.version}.install.log")
    argv = session.layer_shell_argv(
        target.layer.name,
        # The package directory has another path inside the layer: start the script there.
        session.Request(command=f'cd "$PKG_DIR" && exec /bin/sh -e ./{INSTALL_SCRIPT}'),
    )
    env = dict(os.environ)
    env.update(PKG_NAME=src.name, PKG_VERSION=src.version, PKG_DIR=inner)
    log(f"running {src.name}'s install.sh in layer {target.layer.name} (log: {log_path})")
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=target.package_dir(src.name, src.version),
            env=env,
            start_new_session=True,  # one process group: a timeout ends all of it
            # The script holds the layer's lock too: if `core install` is killed, the next
            # run waits for an orphaned script to end before it cleans up after both.
            pass_fds=(lock_fd,) if lock_fd is not None else (),
        )
        try:
            status = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise InstallScriptFailed(
                f"{src.name} {src.version}: install.sh ran longer than {timeout:g} s and was "
                f"stopped; the install was rolled back",
                f"see {log_path}",
            ) from None
    if status != 0:
        with open(log_path, "rb") as f:
            tail = f.read().decode(errors="replace").splitlines()[-15:]
        shown = "\n".join("    " + line for line in tail)
        raise InstallScriptFailed(
            f"{src.name} {src.version}: install.sh failed with exit status {status}; the "
            f"install was rolled back. Its last lines:\n{shown}",
            f"full log: {log_path}",
        )


def install(
    target: Target,
    src: Source,
    db: State,
    *,
    script_timeout: float = DEFAULT_SCRIPT_TIMEOUT,
    log: Log = lambda _: None,
    lock_fd: int | None = None,
) -> Outcome:
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
        with db.transaction():
            db.record(known, activate=True)
        switch_link(target, src.name, src.version)
        return Outcome(src.name, src.version, final, "activated", known.files, known.bytes)
    if os.getuid() == 0:
        # Defence in depth: root hands installs to the layer's account (target.py).
        raise LayershellError("refusing to unpack a package as root", "this is a bug")
    os.makedirs(target.staging_dir, exist_ok=True)
    staging = tempfile.mkdtemp(dir=target.staging_dir, prefix=f"{src.name}_{src.version}.")
    try:
        tree = os.path.join(staging, "tree")
        result = unpack.unpack(src.archive, tree)
        checkpoint("unpacked")
        if os.path.lexists(final):
            _discard(target, final)  # an unrecorded leftover (reconcile normally got it)
        os.rename(tree, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    try:
        checkpoint("renamed")
        if os.path.isfile(os.path.join(final, INSTALL_SCRIPT)):
            run_install_script(target, src, timeout=script_timeout, log=log, lock_fd=lock_fd)
        checkpoint("before-commit")
        record = Installed(
            name=src.name,
            version=src.version,
            layer=target.layer.name,
            path=final,
            sha256=src.sha256,
            source=src.origin,
            size=src.size,
            files=result.files,
            bytes=result.total_bytes,
            installed_at=time.time(),
            active=True,
            spec=src.spec,
        )
        with db.transaction():
            db.record(record, activate=True)
    except BaseException:
        _discard(target, final)
        raise
    checkpoint("committed")
    switch_link(target, src.name, src.version)
    notes = tuple(f"{path}: {what}" for path, what in result.stripped)
    return Outcome(
        src.name, src.version, final, "installed", result.files, result.total_bytes, notes
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
    with db.transaction():
        db.forget(name, version)
        if remaining and not any(r.active for r in remaining):
            db.record(remaining[-1], activate=True)
    switch_link(target, name, remaining[-1].version if remaining else None)
    for row in rows:
        if os.path.lexists(row.path):
            _discard(target, row.path)
    return [r.version for r in rows]


def _package_dir_name(entry: str) -> bool:
    """<name>_<version>, split at the last '_' as repositories name files."""
    name, sep, version = entry.rpartition("_")
    return bool(sep) and bool(repo.NAME_RE.match(name)) and bool(repo.VERSION_RE.match(version))


def reconcile(target: Target, db: State, log: Log = lambda _: None) -> None:
    """Make /opt/pkgs agree with the database after a crash (under the lock).

    Runs before every operation, so it costs one listdir and one query, plus a readlink
    per active package; it stats only what disagrees."""
    for leftover in (target.staging_dir, target.trash_dir):
        if os.path.isdir(leftover):
            for entry in os.listdir(leftover):
                shutil.rmtree(os.path.join(leftover, entry), ignore_errors=True)
    try:
        entries = set(os.listdir(target.pkgs_dir))
    except FileNotFoundError:
        return
    rows = db.all()
    recorded = {os.path.basename(r.path) for r in rows}
    for entry in sorted(entries - recorded):
        path = os.path.join(target.pkgs_dir, entry)
        if _package_dir_name(entry) and os.path.isdir(path) and not os.path.islink(path):
            log(f"removing {path}: an interrupted install left it (not in the database)")
            _discard(target, path)
    missing = [r for r in rows if os.path.basename(r.path) not in entries]
    if missing:
        with db.transaction():
            for r in missing:
                log(f"forgetting {r.name} {r.version}: {r.path} is gone")
                db.forget(r.name, r.version)
        rows = db.all()
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
