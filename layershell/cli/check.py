"""`core check FILE`."""

from __future__ import annotations

import click

from layershell import manifest
from layershell.cli.app import App


@click.command()
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@click.pass_obj
def check(app: App, file: str | None) -> None:
    """Validate a manifest (composable.yaml) and report every problem at once.

    Prints FILE:LINE:COL: key: message (hint) for each problem and exits 2, or a
    summary and exit 0. Without FILE, checks the host's manifest.
    """
    path = file or app.paths.manifest_file
    loaded = manifest.load_manifest(path)  # ConfigError -> printed by the group, exit 2
    names = ", ".join(p.name for p in loaded.packages) or "no packages"
    app.out.print(f"{path}: ok ({len(loaded.packages)} packages: {names})")
