"""The operation journal: a root operation that changes what runs (install, update,
rollback, remove, gc, expose, the inbox) finishes even when its process is killed.

Under <state>/operation.lock the operation writes <state>/operation.json first and
removes it last. A package's switch happens in two places, the layer account's link
(every shim at once) and root's `portablectl reattach`; no order of the two is atomic
by itself, so a kill between them would leave shims on one version and the service on
the other. The journal closes that window: while it exists, the host may be between
two states, and `core repair` (the layer's reconcile, then every shim and service
synced to the record) ends it. layershell-repair.path starts that the moment the file
appears; the repair waits on the lock, so it does its work only if the operation died.
Without systemd, the next root operation repairs first (docs/updates.md).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from layershell import lock
from layershell.atomic import read_json_map, write_json
from layershell.paths import Paths


def interrupted(paths: Paths) -> dict[str, object] | None:
    """The journal of an operation that did not end, or None. Call with the lock held:
    otherwise it may belong to an operation that is still running."""
    if not os.path.lexists(paths.journal_file):
        return None
    # A damaged journal still says that something was interrupted.
    return read_json_map(paths.journal_file, strict=False) or {"operation": "unknown"}


@contextmanager
def held(
    paths: Paths,
    *,
    no_wait: bool = False,
    waiting: Callable[[str], None] | None = None,
    what: str = "",
) -> Iterator[None]:
    with lock.held(paths.journal_lock, no_wait=no_wait, waiting=waiting, what=what):
        yield


def begin(paths: Paths, operation: str, before: dict[str, str]) -> None:
    """`before`: the active versions as the operation began (a repair goes back to them
    for a package left on a version whose service failed)."""
    record = {"operation": operation, "pid": os.getpid(), "started": time.time()}
    write_json(paths.journal_file, {**record, "before": before})


def end(paths: Paths) -> None:
    try:
        os.unlink(paths.journal_file)
    except FileNotFoundError:
        pass


def give_up(paths: Paths) -> None:
    """A repair that failed: the journal moves aside (the path unit would start the
    repair again and again); `core repair` by hand does the whole repair anyway."""
    try:
        os.replace(paths.journal_file, paths.journal_failed_file)
    except FileNotFoundError:
        pass
