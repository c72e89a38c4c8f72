"""`core check [FILE|PACKAGE]`: a manifest, or a package's units."""

from __future__ import annotations

import os
import shutil
import tempfile

import click

from layershell.cli import common
from layershell.cli.app import App
from layershell.errors import ConfigError, LayershellError
from layershell.packages import manifest

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.zst", ".tzst", ".tar")


@click.command()
@common.options()
@common.config_option
@click.argument("file", required=False, type=click.Path())
@click.option("--name", metavar="NAME", help="The package's name (default: from PACKAGE).")
@click.pass_obj
def check(app: App, config: str | None, file: str | None, name: str | None) -> None:
    """Validate a manifest (composable.yaml), or a package, and report every problem.

    FILE is a manifest; a directory or a tarball (.tar.gz, .tar.xz, .tar.zst, .tar) is a
    package, whose systemd units are checked the way root checks them before attaching
    (docs/exposure.md). Prints FILE:LINE[:COL]: key: message (hint) for each problem and
    exits 2, or a summary and exit 0. Without FILE, checks the host's manifest.
    """
    if file is not None and (os.path.isdir(file) or file.endswith(ARCHIVE_SUFFIXES)):
        check_package(app, file, name)
        return
    path = common.manifest_path(app, config, file)
    loaded = manifest.load_manifest(path)  # ConfigError -> printed by the group, exit 2
    names = ", ".join(p.name for p in loaded.packages) or "no packages"
    app.out.print(f"{path}: ok ({len(loaded.packages)} packages: {names})")
    app.result.extra.update(manifest=path, packages=[p.name for p in loaded.packages])


def package_name(path: str) -> str | None:
    """NAME of NAME_VERSION[.tar.gz] (or of NAME alone), as repositories name packages."""
    from layershell.packages import repo

    base = os.path.basename(os.path.normpath(path))
    for suffix in ARCHIVE_SUFFIXES:
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    stem, sep, version = base.rpartition("_")
    if sep and repo.NAME_RE.match(stem) and repo.VERSION_RE.match(version):
        return stem
    return base if repo.NAME_RE.match(base) else None


def check_package(app: App, path: str, name: str | None) -> None:
    from layershell.exposure import image, units
    from layershell.packages import unpack

    name = name or package_name(path)
    if name is None:
        raise LayershellError(f"{path}: cannot tell the package's name", "pass --name NAME")
    scratch = None
    try:
        tree = os.path.realpath(path)  # the caller's own path: no race to fear here
        if not os.path.isdir(path):
            scratch = tempfile.mkdtemp(prefix="layershell-check-")
            tree = os.path.join(scratch, "package")
            unpack.unpack(path, tree)  # the installer's own checks, refusals included
        fd = image.open_package(tree)
        try:
            report = units.check_tree(fd, name, label=path)
        finally:
            os.close(fd)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    if report.problems:
        raise ConfigError(list(report.problems))
    listed = ", ".join(u.name for u in report.units) or "no units"
    app.out.print(f"{path}: ok (package {name}: {listed})")
    app.result.extra.update(package=name, units=[u.name for u in report.units])
