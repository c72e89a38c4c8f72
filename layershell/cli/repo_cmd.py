"""`core repo index DIR`."""

from __future__ import annotations

import re

import click

from layershell.cli import common
from layershell.cli.app import App
from layershell.packages import repo

DURATION_RE = re.compile(r"\A([0-9]{1,6})([smhd])\Z")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(_ctx: click.Context, _param: click.Parameter, value: str) -> float:
    found = DURATION_RE.match(value.strip())
    if found is None or int(found.group(1)) == 0:
        raise click.BadParameter(f"{value!r} is not a duration like 30d, 12h, 90m or 600s")
    return float(int(found.group(1)) * UNITS[found.group(2)])


@click.group("repo")
def repo_group() -> None:
    """Publish a repository: any static HTTP/FTP server or USB stick can serve one."""


@repo_group.command("index")
@common.options()
@click.argument("directory", type=click.Path(file_okay=False, exists=True))
@click.option("--arch", help="Architecture (default: the directory's name).")
@click.option("--streams", "streams_file", metavar="FILE", help="streams.yaml to narrow streams.")
@click.option(
    "--sign",
    metavar="KEY",
    help="Sign SHA256SUMS with this gpg key (fingerprint or e-mail): SHA256SUMS.gpg.",
)
@click.option(
    "--expires",
    "expires_in",
    default="30d",
    show_default=True,
    metavar="DURATION",
    callback=_duration,
    help="How long hosts may use this index (30d, 12h, ...).",
)
@click.option(
    "--generation",
    type=click.IntRange(1, (1 << 63) - 1),
    metavar="N",
    help="The index's generation (default: the previous one plus 1).",
)
@click.pass_obj
def index(
    app: App,
    directory: str,
    arch: str | None,
    streams_file: str | None,
    sign: str | None,
    expires_in: float,
    generation: int | None,
) -> None:
    """Write DIRECTORY/index.json (sha256, size, streams of every tarball, a generation and
    an expiry) and SHA256SUMS over it; with --sign, SHA256SUMS.gpg too (docs/repository.md)."""
    built, warnings = repo.write_index(
        directory, arch, streams_file, sign=sign, expires_in=expires_in, generation=generation
    )
    for line in warnings:
        app.err.print(f"warning: {line}")
    count = sum(len(v) for v in built.packages.values())
    app.result.change("wrote", path=f"{directory}/index.json", generation=built.generation)
    signed = f", {repo.SIGNATURE_NAME} by {sign}" if sign else " (unsigned)"
    app.out.print(
        f"wrote {directory}/index.json: {len(built.packages)} packages, {count} versions,"
        f" generation {built.generation}, expires {built.expires}; {repo.SUMS_NAME}{signed}"
    )
