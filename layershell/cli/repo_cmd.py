"""`core repo index DIR`."""

from __future__ import annotations

import click

from layershell import repo
from layershell.cli.app import App


@click.group("repo")
def repo_group() -> None:
    """Publish a repository: any static HTTP/FTP server or USB stick can serve one."""


@repo_group.command("index")
@click.argument("directory", type=click.Path(file_okay=False, exists=True))
@click.option("--arch", help="Architecture (default: the directory's name).")
@click.option("--streams", "streams_file", metavar="FILE", help="streams.yaml to narrow streams.")
@click.pass_obj
def index(app: App, directory: str, arch: str | None, streams_file: str | None) -> None:
    """Write DIRECTORY/index.json (sha256, size, streams of every tarball)."""
    built, warnings = repo.write_index(directory, arch, streams_file)
    for line in warnings:
        app.err.print(f"warning: {line}")
    count = sum(len(v) for v in built.packages.values())
    app.out.print(f"wrote {directory}/index.json: {len(built.packages)} packages, {count} versions")
