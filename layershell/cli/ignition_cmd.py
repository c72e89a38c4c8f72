"""`core ignition`."""

from __future__ import annotations

import os

import click

from layershell.atomic import write_atomic
from layershell.cli import common
from layershell.cli.app import App
from layershell.host import ignition as ignition_lib
from layershell.layers import config as layers_config
from layershell.layers import stack
from layershell.packages import fetch


def _file_mode() -> int:
    """0666 less the umask, as any program that creates a file would."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


@click.command("ignition")
@common.options()
@common.config_option
@click.argument("file", type=click.Path(dir_okay=False), required=False)
@click.option(
    "--format",
    "fmt",
    type=click.Choice([f.value for f in ignition_lib.Format]),
    default=ignition_lib.Format.ignition.value,
    show_default=True,
    help="Ignition JSON, or Butane YAML (variant fcos) for butane to translate.",
)
@click.option(
    "--spec",
    default=ignition_lib.DEFAULT_SPEC,
    show_default=True,
    metavar="VERSION",
    help="Ignition spec version to write (Butane: the version that produces it).",
)
@click.option("-o", "--output", metavar="OUT", help="Write here (atomically), not to stdout.")
@click.option(
    "--max-embed",
    type=click.IntRange(min=0),
    default=ignition_lib.DEFAULT_MAX_EMBED,
    show_default=True,
    metavar="BYTES",
    help="Largest file:// or ftp:// package embedded in the config.",
)
@click.option("--arch", metavar="ARCH", help="The target host's arch (default: this host's).")
@click.option("--os-version", metavar="VERSION", help="The target's OS version, for `version: os`.")
@click.option(
    "--sysext",
    metavar="URL|FILE",
    help="Deliver layershell itself: its system extension image (./dev.sh sysext), an"
    " http(s) URL Ignition fetches or a file embedded (within --max-embed).",
)
@click.option(
    "--sysext-sha256",
    metavar="HEX",
    help="The image's sha256 (default: from the SHA256SUMS beside the URL).",
)
@click.option(
    "--keys-dir",
    metavar="DIR",
    type=click.Path(file_okay=False, exists=True),
    help="The public keys to check signed repositories with, and to give the host"
    " (default: this machine's keys directory).",
)
@click.pass_obj
def ignition(
    app: App,
    config: str | None,
    file: str | None,
    fmt: str,
    spec: str,
    output: str | None,
    max_embed: int,
    arch: str | None,
    os_version: str | None,
    sysext: str | None,
    sysext_sha256: str | None,
    keys_dir: str | None,
) -> None:
    """Render the Ignition config (or Butane) that provisions a host for FILE.

    \b
    The host gets FILE as /etc/layershell/composable.yaml, each package's tarball in
    /opt/inbox/<profile>/<user>/ (versions resolved now), the layer accounts, and
    layershell's first-boot and inbox units. http(s) packages are fetched by Ignition;
    file:// and ftp:// ones are embedded. With --sysext the host also gets layershell
    itself, as a system extension merged at boot. Signed repositories are checked as the
    host would, and the keys that check them go to its /etc/layershell/keys/. See
    docs/boot.md.
    """
    file = common.manifest_path(app, config, file)
    if app.as_json and output is None:
        raise click.UsageError("--json prints the result: write the config with -o OUT")
    form = ignition_lib.Format(fmt)
    ignition_lib.check_spec(spec, form)
    loaded, data = ignition_lib.read_manifest(file)  # ConfigError: exit 2, nothing written
    layers = layers_config.load_stack(stack.stack_file(app.paths.layers_file))

    def log(line: str) -> None:
        app.log.print(line)

    rendered = ignition_lib.render(
        loaded,
        data,
        layers,
        arch=arch,
        os_version=os_version,
        max_embed=max_embed,
        progress=fetch.progress_for(quiet=app.quiet or app.as_json),
        log=log,
        sysext=sysext,
        sysext_sha256=sysext_sha256,
        keys_dir=keys_dir or app.paths.keys_dir,
    )
    text = ignition_lib.dump(rendered, form, spec)
    what = f"Ignition {spec}"
    if form is ignition_lib.Format.butane:
        what = f"Butane {ignition_lib.check_spec(spec, form)} (Ignition {spec})"
    if output is None:
        click.echo(text, nl=False)
        return
    write_atomic(output, text, mode=_file_mode())
    app.result.change("wrote", path=output, packages=len(rendered.packages))
    log(
        f"wrote {output}: {what}, {len(rendered.packages)} packages,"
        f" {len(rendered.users)} accounts, {len(rendered.units)} units"
    )
