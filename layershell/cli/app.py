"""The object every `core` command receives in ctx.obj."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from rich.console import Console

from layershell import paths as paths_mod
from layershell.cli.common import Result, forwarded
from layershell.layers.model import LayerStack
from layershell.packages.target import Target
from layershell.paths import Paths

if TYPE_CHECKING:
    import subprocess

    from layershell.errors import LayershellError
    from layershell.packages.state import Installed


@dataclass(frozen=True)
class App:
    paths: Paths
    out: Console  # results for people (nothing with --json: stdout is the result object)
    err: Console  # warnings and errors
    log: Console  # progress and notes: nothing with -q
    as_json: bool = False
    verbosity: int = 0  # -1 with -q, 1 with -v
    result: Result = field(default_factory=lambda: Result("core"))
    # The root operations under way in this process, outermost first: one run from
    # another (core firstboot runs inbox and install) joins the outer one's journal.
    operations: list[str] = field(default_factory=list)

    def configured(self, command: str, as_json: bool, verbosity: int) -> App:
        """This app for one command and its -q/-v/--json (cli/common.py)."""
        from layershell import ui

        return replace(
            self,
            out=ui.console(quiet=as_json),
            log=ui.console(True, quiet=verbosity < 0),
            as_json=as_json,
            verbosity=verbosity,
            result=Result(command),
        )

    @property
    def quiet(self) -> bool:
        return self.verbosity < 0

    def debug(self, line: str) -> None:
        if self.verbosity > 0:
            self.err.print(line)


def make_app(root: str | None, rootless: bool | None) -> App:
    from layershell import ui

    paths = paths_mod.detect(root=root, rootless=rootless)
    return App(paths, ui.console(), ui.console(True), ui.console(True))


def load_stack(app: App) -> LayerStack:
    from layershell.layers import stack

    return stack.for_caller(app.paths)


def installed(app: App, only: set[str] | None = None) -> list[Installed]:
    """Every installing layer's packages (or only the named ones), checked
    (packages/inventory.py); a bad row is a warning on stderr."""
    from layershell.packages import inventory

    return inventory.installed(app.paths, load_stack(app), only, warn=app.err.print)


def not_installed(app: App, names: list[str]) -> LayershellError:
    """Names that are not installed, with the closest one that is."""
    from layershell.errors import NotInstalled

    return NotInstalled(names, "", {r.name for r in installed(app)})


def delegate(app: App, target: Target, args: list[str]) -> int | None:
    """Root never installs or removes itself: it runs the same `core` command as the
    layer's account and returns its exit status; None if the caller is the account."""
    import subprocess

    from layershell.packages import target as target_mod

    if not target_mod.must_run_as_account(target):
        return None
    from layershell.packages.repo import reference as repo

    # A password in a URL is refused by the account's core, shown as ***; root refuses
    # it first, or its -v line would print it and the account's argv (which every user
    # reads in /proc) carry it.
    secret = next((a for a in args if repo.has_credentials(a)), None)
    if secret is not None:
        raise repo.BadReference(repo.credentials_refusal(secret), repo.CREDENTIALS_HINT)
    args = [*args[:1], *forwarded(app, args), *args[1:]]
    argv, env = target_mod.as_account_argv(app.paths, args)
    app.debug(f"as {target.account}: core {' '.join(args)}")
    # A session of its own: the account's process (and anything it runs) has no
    # controlling terminal, so it cannot push input into root's (TIOCSTI needs the
    # caller's own). It is then out of the terminal's process group: root passes on
    # the keyboard's INT and QUIT itself.
    proc = subprocess.Popen(
        argv, env=env, cwd="/", user=target.uid, group=target.gid, extra_groups=[],
        start_new_session=True, stdout=subprocess.PIPE if app.as_json else None,
    )  # fmt: skip
    returncode = _wait_forwarding(proc, app)
    from layershell import faults

    faults.died_with(returncode)
    if returncode < 0 and args[:1] != ["repair"]:
        # Killed (the OOM killer, say) between the record and the link: bring the layer
        # in line with its record before root exposes anything from it.
        app.err.print(
            f"core: error: the layer account's process died (signal {-returncode}); "
            "bringing the layer in line with its record"
        )
        delegate(app, target, ["repair", "--quiet"])
        return 128 - returncode  # as a shell reports it, not a negative exit status
    return returncode


def _wait_forwarding(proc: subprocess.Popen[bytes], app: App) -> int:
    """Wait for `proc`, passing on INT, QUIT, TERM and HUP (it has its own session); with
    --json, its result object joins this command's (one object on stdout, not two)."""
    import json
    import signal

    passed = (signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, lambda n, _f: proc.send_signal(n)) for sig in passed}
    try:
        out = _read_bounded(proc) if proc.stdout is not None else None
        proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if out is not None:
        try:
            theirs = json.loads(out)
        except (ValueError, RecursionError):
            theirs = None
        if isinstance(theirs, dict):
            app.result.merge(theirs)
        else:
            app.result.fail(None, "the layer account's core printed no result")
    return proc.returncode


MAX_RESULT = 1 << 20  # an account's result object root reads: bytes, the rest is dropped


def _read_bounded(proc: subprocess.Popen[bytes]) -> bytes:
    """Up to MAX_RESULT bytes of `proc`'s stdout, read while it runs (so it never blocks
    on a full pipe) and, once it has ended, only what is already there: something it
    left running with the pipe open must not keep root waiting."""
    import os
    import select
    import time

    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    kept = bytearray()
    ended: float | None = None  # when it ended
    while True:
        # Asked on every round, not only when the pipe is quiet: a leftover that keeps
        # writing would otherwise keep it from ever being asked.
        if ended is None and proc.poll() is not None:
            ended = time.monotonic()
        elif ended is not None and time.monotonic() - ended >= 1.0:
            break  # it ended a second ago: what still comes is not its to say
        ready, _, _ = select.select([fd], [], [], 0.2 if ended is None else 0)
        if not ready:
            if ended is not None:
                break  # it ended, and nothing more is waiting
            continue
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break  # end of file: every writer is gone
        if len(kept) <= MAX_RESULT:
            kept += chunk
    return bytes(kept) if len(kept) <= MAX_RESULT else b""


def sync_shims(app: App, only: set[str] | None = None) -> None:
    """Bring the shims on PATH in line with what is installed (after install/remove);
    `only` limits the work to the packages an operation changed."""
    import os

    from layershell.exposure import shims
    from layershell.packages import grants
    from layershell.packages.target import DELEGATED_ENV

    if os.environ.get(DELEGATED_ENV) == "1":
        return  # run for root, which syncs after this process ends
    if not os.access(app.paths.bin_dir, os.W_OK):
        app.err.print(f"note: shims in {app.paths.bin_dir} need root; run: sudo core expose --sync")
        return
    rows = installed(app, only)
    if grants.may_grant(app.paths):
        grants.forget_removed(app.paths, rows, only)
    report = shims.sync(
        app.paths,
        load_stack(app),
        rows,
        shims.load_overrides(app.paths),
        only,
        # Root's word about each package, never the record.
        grants.Table.load(app.paths, None if only is None else {r.name for r in rows} | only),
    )
    for path in report.written:
        app.err.print(f"exposed {path}")
        app.result.change("exposed", path=path)
    if (
        report.written
        and (app.paths.mode == paths_mod.ROOTLESS or os.path.realpath(app.paths.root) == "/")
        and not _on_path(app.paths.bin_dir)
    ):
        # As pipx ensurepath would: the programs just exposed are not found by name (a
        # relocated root's shims are for an image, never for this PATH).
        shown = app.paths.bin_dir
        app.err.print(
            f"warning: {shown} is not on your PATH, so these programs are not found by name;"
            f" add it: echo 'export PATH=\"{shown}:$PATH\"' >> ~/.profile, then log in again"
        )
    for path in report.removed:
        app.err.print(f"removed shim {path}")
        app.result.change("unexposed", path=path)
    for line in report.collisions + report.warnings:
        app.err.print(f"warning: {line}")
    from layershell.exposure import completions, manpages

    done = completions.sync(app.paths, load_stack(app), dict(report.shims), report.inner_pkgs, only)
    for path in done.written:
        app.err.print(f"completion {path}")
    for line in done.collisions:
        app.err.print(f"warning: {line}")
    pages = manpages.sync(app.paths, rows, only)
    for path in pages.written:
        app.err.print(f"manual page {path}")
    for line in pages.collisions:
        app.err.print(f"warning: {line}")


def _on_path(directory: str) -> bool:
    import os

    real = os.path.realpath(directory)
    return any(
        entry and os.path.realpath(entry) == real
        for entry in os.environ.get("PATH", "").split(os.pathsep)
    )


def sync_exposure(app: App, only: set[str] | None = None) -> bool:
    """Shims, then portable services (root, system mode); False if a service failed."""
    import os

    from layershell.exposure import portable

    sync_shims(app, only)
    if app.paths.mode != paths_mod.SYSTEM or os.getuid() != 0:
        return True
    from layershell import faults

    faults.checkpoint("shims-switched")  # the window the operation journal closes
    errors = portable.sync(app.paths, installed(app, only), log=app.err.print, only=only)
    for message in errors:
        app.err.print(f"core: error: {message}")
    return not errors


def as_root_of_system(app: App) -> bool:
    """Root in system mode: the one caller that exposes shims and services."""
    import os

    return app.paths.mode == paths_mod.SYSTEM and os.getuid() == 0
