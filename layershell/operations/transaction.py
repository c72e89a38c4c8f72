"""Root's side of switching packages: the operation journal around it (journal.py), the
exposure that follows the layer account's work, and going back, shims and all, when a
new version's service does not start (docs/updates.md)."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from layershell import faults
from layershell.cli.app import (
    App,
    as_root_of_system,
    delegate,
    installed,
    load_stack,
    sync_exposure,
)
from layershell.errors import LayershellError
from layershell.exposure import portable, portable_record
from layershell.operations import journal
from layershell.packages.target import Target


def active_versions(app: App) -> dict[str, str]:
    return {r.name: r.version for r in installed(app) if r.active}


@dataclass(frozen=True)
class Operation:
    app: App
    before: dict[str, str]  # the active versions when the operation began

    def expose(self, where: Target, keep: int | None = None, retry: Collection[str] = ()) -> bool:
        """After the account's work: shims and services follow the record; a package
        whose new service does not start goes back to the version it had; with `keep`,
        the account then prunes older versions of what moved. A package that moved, or
        is in `retry`, has its service tried again even if it failed before. False if
        anything failed."""
        app = self.app
        after = active_versions(app)
        moved = sorted(n for n, v in after.items() if self.before.get(n) != v)
        portable.clear_failed(app.paths, [*moved, *retry])
        ok = sync_exposure(app)
        broken = portable.failed(app.paths)
        back = [n for n in moved if broken.get(n) == after[n] and n in self.before]
        for name in back:
            faults.checkpoint("switching-back")  # the repair goes back in its place
            app.err.print(
                f"core: error: {name} {after[name]}: its service did not start; switching "
                f"{name} back to {self.before[name]}"
            )
            if not switch_back(app, where, name, self.before[name]):
                app.err.print(f"core: error: {name}: switching back failed too; see above")
            ok = False
        if keep is not None:
            # Only once the new service runs (or there is none) may the old version go;
            # a version switched back from goes too (prune drops held versions first).
            done = [n for n in moved if n not in back and _service_follows(app, n, after[n])]
            if done + back:
                args = ["update", "--prune-only", f"--keep={keep}", *done, *back]
                if delegate(app, where, args) != 0:
                    app.err.print("core: error: pruning previous versions failed (see above)")
                    ok = False
        return ok


def switch_back(app: App, where: Target, name: str, version: str) -> bool:
    # Not held: the failed version is held back by its failure (portable.failed), and a
    # newer one may still be tried by the next update.
    status = delegate(app, where, ["rollback", name, "--to", version, "--no-hold"])
    return status == 0 and sync_exposure(app, {name})


def _service_follows(app: App, name: str, version: str) -> bool:
    rows = [r for r in installed(app, {name}) if r.active]
    try:
        image = portable.portable_image(rows[0]) if rows else None
    except LayershellError:
        return False
    return image is None or portable_record.attached(app.paths).get(name) == version


@contextmanager
def operation(app: App, what: str, *, no_wait: bool = False) -> Iterator[Operation]:
    """A root operation under the journal: an interrupted one is repaired first; if this
    one dies before it ends, layershell-repair.service (or the next operation) repairs
    it. Outside root in system mode it only yields."""
    import click

    running = app.operations  # a root command run from another (core firstboot) does not nest
    if running or not as_root_of_system(app):
        running.append(what)
        try:
            yield Operation(app, active_versions(app) if as_root_of_system(app) else {})
        finally:
            running.pop()
        return
    with journal.held(app.paths, no_wait=no_wait, waiting=app.err.print, what=f"core {what}"):
        pending = journal.interrupted(app.paths)
        if pending is not None:
            app.err.print("repairing after an interrupted operation (core repair) ...")
            repair(app, pending)
        before = active_versions(app)
        journal.begin(app.paths, what, before)
        running.append(what)
        try:
            yield Operation(app, before)
        except (SystemExit, LayershellError, click.ClickException):
            journal.end(app.paths)  # it ended, and said how
            raise
        except BaseException:
            raise  # a bug or ^C: the journal stays, the repair unit (or next operation) mends
        else:
            journal.end(app.paths)
        finally:
            running.pop()


def repair(app: App, pending: dict[str, object] | None = None) -> bool:
    """Root: every installing layer's reconcile (as its account); a package that an
    interrupted operation left on a version whose service failed goes back to the
    version it had then; every shim and service synced to the record; the journal
    ends. False if something failed."""
    from layershell.packages import target

    layers = load_stack(app)
    ok = True
    for layer in target.installing_layers(layers):
        where = target.target_for(app.paths, layers, layer.account)
        ok = delegate(app, where, ["repair", "--quiet"]) in (0, None) and ok
    before = pending.get("before") if pending else None
    if isinstance(before, dict):
        broken = portable.failed(app.paths)
        where = target.target_for(app.paths, layers)
        for name, version in sorted(active_versions(app).items()):
            old = before.get(name)
            if isinstance(old, str) and old != version and broken.get(name) == version:
                app.err.print(f"{name} {version}: its service did not start; back to {old}")
                ok = switch_back(app, where, name, old) and ok
    ok = sync_exposure(app) and ok
    journal.end(app.paths)
    return ok
