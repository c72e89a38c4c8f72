"""The stamp an operation leaves when it ended with the layer's tree and record in
agreement, so that the next one need not reconcile them again (install.reconcile costs a
listdir, a readlink and an lstat per installed package: most of an install at 10,000).

pipeline.locked takes the stamp away before the operation changes anything and writes it
again only after the operation returned and its database closed (the close checkpoints
the WAL, which changes the files). A run that died leaves no stamp. Anything else that
changed the files since (a database replaced, emptied or lost; a tree removed or added
by hand; a leftover in staging) shows in the fingerprint: the inode, size, mtime and
ctime of the database, its WAL, /opt/pkgs, its records, staging and trash directories,
and the local copies. A change by hand within the same clock tick as the stamp could go
unseen: `core repair`, which always reconciles in full, settles it.

The stamp is the layer account's file about its own layer, read only by that account
(a process of another uid, root included, never trusts it and reconciles in full)."""

from __future__ import annotations

import os

from layershell.atomic import write_atomic
from layershell.packages import records
from layershell.packages.target import Target

NAME = "reconciled"
MAX_BYTES = 4096


def _path(target: Target) -> str:
    return os.path.join(target.store, NAME)


def _watched(target: Target) -> tuple[str, ...]:
    from layershell.packages.install import LOCAL_COPIES

    return (
        target.database, target.database + "-wal", target.pkgs_dir,
        records.records_dir(target.pkgs_dir), target.staging_dir, target.trash_dir,
        os.path.join(target.cache_dir, LOCAL_COPIES),
    )  # fmt: skip


def fingerprint(target: Target) -> str:
    lines = []
    for path in _watched(target):
        try:
            st = os.lstat(path)
        except OSError:
            lines.append(f"{path} -")
            continue
        lines.append(
            f"{path} {st.st_dev}:{st.st_ino}:{st.st_mode}:{st.st_size}:{st.st_mtime_ns}:"
            f"{st.st_ctime_ns}"
        )
    return "\n".join(lines) + "\n"


def clean(target: Target) -> bool:
    """Whether the last operation left the layer settled and nothing changed since."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(_path(target), flags)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if st.st_uid != os.getuid() or not os.path.samestat(st, os.lstat(_path(target))):
            return False
        data = os.read(fd, MAX_BYTES + 1)
    except OSError:
        return False
    finally:
        os.close(fd)
    return len(data) <= MAX_BYTES and data == fingerprint(target).encode()


def take(target: Target) -> None:
    """Before an operation changes anything: a crash from here on reconciles in full."""
    try:
        os.unlink(_path(target))
    except FileNotFoundError:
        pass


def leave(target: Target) -> None:
    """After an operation ended without an error and its database closed."""
    for leftover in (target.staging_dir, target.trash_dir):
        try:
            if os.listdir(leftover):
                return  # something to empty: the next operation reconciles in full
        except FileNotFoundError:
            continue
        except OSError:
            return
    try:
        write_atomic(_path(target), fingerprint(target), mode=0o644)
    except OSError:
        pass  # a full disk: the next operation reconciles in full, as it would anyway
