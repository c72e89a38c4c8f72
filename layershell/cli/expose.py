"""`core expose` and `core unexpose`."""

from __future__ import annotations

import click

from layershell.cli import common, complete
from layershell.cli.app import App, installed, load_stack, not_installed, sync_exposure
from layershell.errors import LayershellError, suggest
from layershell.exposure import portable, shims
from layershell.operations.transaction import operation
from layershell.packages import grants


def _current(app: App, name: str) -> list[str]:
    rows = [r for r in installed(app) if r.name == name and r.active]
    if not rows:
        raise not_installed(app, [name])
    overrides = shims.load_overrides(app.paths)
    inner = shims.pkgs_inner(load_stack(app), app.paths)
    policy = grants.Table.load(app.paths, [name]).policy(rows[0])
    wanted = shims.wanted(rows[0], inner, overrides.get(name), policy, app.paths.pkgs_dir)
    return [s.name for s in wanted]


def _check_programs(app: App, name: str, bins: tuple[str, ...]) -> None:
    """Each --bin PROG is a program of the package's bin/ with a name a shim can have:
    a typo is an error before anything changes, not a warning after."""
    row = next(r for r in installed(app) if r.name == name and r.active)
    programs, _, _ = shims.package_tree(app.paths.pkgs_dir, row)
    for prog in bins:
        if prog not in programs or not shims.BIN_NAME_RE.match(prog):
            raise LayershellError(
                f"{name} {row.version} has no program bin/{prog}",
                suggest(prog, programs) or f"its programs: {', '.join(programs) or 'none'}",
                exit_code=2,
            )


def _services(app: App, name: str, change: object) -> None:
    """Apply a change of a package's enabled-and-started units (root, system mode):
    each a unit of the package's image, checked before systemctl sees it."""
    import os

    rows = [r for r in installed(app, {name}) if r.active]
    if not rows:
        raise not_installed(app, [name])
    if os.getuid() != 0:
        raise LayershellError("services need root", f"sudo core expose/unexpose {name} ...")
    image = portable.portable_image(rows[0])
    if image is None:
        raise LayershellError(f"{name} has no units", "see core info " + name)
    before = [u for u in portable.wanted_services(app.paths, rows[0])
              if not portable.unit_refusal(u, image)]  # fmt: skip
    after = change(before)  # type: ignore[operator]
    refused = [why for why in (portable.unit_refusal(u, image) for u in after) if why]
    if refused:
        raise LayershellError(
            f"{name}: {'; '.join(refused)}", f"its units: {', '.join(image.units)}"
        )
    overrides = portable.service_overrides(app.paths)
    overrides[name] = sorted(after)
    portable.save_service_overrides(app.paths, overrides)
    errors = portable.apply_services(before, after)
    for message in errors:
        app.err.print(f"core: error: {message}")
    if errors:
        raise SystemExit(1)


@click.command()
@common.options()
@click.option("--bin", "bins", multiple=True, metavar="PROG", help="Expose this program too.")
@click.option(
    "--service", "services", multiple=True, metavar="UNIT", help="Enable and start this unit."
)
@click.option("--sync", "sync_only", is_flag=True, help="Only rewrite all shims.")
@click.argument("name", required=False, shell_complete=complete.packages)
@click.pass_obj
def expose(
    app: App, bins: tuple[str, ...], services: tuple[str, ...], sync_only: bool, name: str | None
) -> None:
    """Put a package's programs on PATH as shims that run in layer otto, or enable and
    start its portable service units.

    Without --bin, back to the package's default (the manifest's expose:, else all of
    bin/); with --bin, add those programs. --service UNIT enables and starts UNIT of an
    attached portable image. --sync rewrites every shim and attaches what is missing.
    """
    with operation(app, "expose"):
        if name is not None and services:
            _services(app, name, lambda before: sorted({*before, *services}))
            if not bins:
                return
        if name is not None and not sync_only:
            overrides = shims.load_overrides(app.paths)
            if bins:
                current = _current(app, name)
                _check_programs(app, name, bins)
                overrides[name] = sorted({*current, *bins})
            else:
                _current(app, name)  # must be installed
                overrides.pop(name, None)
            shims.save_overrides(app.paths, overrides)
        elif not sync_only:
            raise click.UsageError("name a package, or use --sync")
        if not sync_exposure(app):
            raise SystemExit(1)


@click.command()
@common.options()
@click.option("--bin", "bins", multiple=True, metavar="PROG", help="Remove only this shim.")
@click.option(
    "--service", "services", multiple=True, metavar="UNIT", help="Stop and disable this unit."
)
@click.argument("name", shell_complete=complete.packages)
@click.pass_obj
def unexpose(app: App, bins: tuple[str, ...], services: tuple[str, ...], name: str) -> None:
    """Take a package's programs off PATH (all of them, or --bin PROG), or stop and
    disable units of its portable service (--service UNIT)."""
    with operation(app, "unexpose"):
        if services:
            _services(app, name, lambda before: [u for u in before if u not in services])
            if not bins:
                return
        current = _current(app, name)
        overrides = shims.load_overrides(app.paths)
        overrides[name] = [b for b in current if b not in bins] if bins else []
        shims.save_overrides(app.paths, overrides)
        if not sync_exposure(app):
            raise SystemExit(1)
