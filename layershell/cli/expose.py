"""`core expose` and `core unexpose`."""

from __future__ import annotations

import click

from layershell import shims
from layershell.cli import listing
from layershell.cli.app import App, load_stack, sync_exposure
from layershell.errors import LayershellError


def _current(app: App, name: str) -> list[str]:
    rows = [r for r in listing.installed(app) if r.name == name and r.active]
    if not rows:
        raise LayershellError(f"{name} is not installed", "see core list")
    overrides = shims.load_overrides(app.paths)
    inner = shims.pkgs_inner(load_stack(app), app.paths)
    return [s.name for s in shims.wanted(rows[0], inner, overrides.get(name))]


@click.command()
@click.option("--bin", "bins", multiple=True, metavar="PROG", help="Expose this program too.")
@click.option("--sync", "sync_only", is_flag=True, help="Only rewrite all shims.")
@click.argument("name", required=False)
@click.pass_obj
def expose(app: App, bins: tuple[str, ...], sync_only: bool, name: str | None) -> None:
    """Put a package's programs on PATH as shims that run in layer otto.

    Without --bin, back to the package's default (the manifest's expose:, else all of
    bin/); with --bin, add those programs. --sync rewrites every shim.
    """
    if name is not None and not sync_only:
        overrides = shims.load_overrides(app.paths)
        if bins:
            overrides[name] = sorted({*_current(app, name), *bins})
        else:
            _current(app, name)  # must be installed
            overrides.pop(name, None)
        shims.save_overrides(app.paths, overrides)
    elif not sync_only:
        raise click.UsageError("name a package, or use --sync")
    if not sync_exposure(app):
        raise SystemExit(1)


@click.command()
@click.option("--bin", "bins", multiple=True, metavar="PROG", help="Remove only this shim.")
@click.argument("name")
@click.pass_obj
def unexpose(app: App, bins: tuple[str, ...], name: str) -> None:
    """Take a package's programs off PATH (all of them, or --bin PROG)."""
    current = _current(app, name)
    overrides = shims.load_overrides(app.paths)
    overrides[name] = [b for b in current if b not in bins] if bins else []
    shims.save_overrides(app.paths, overrides)
    if not sync_exposure(app):
        raise SystemExit(1)
