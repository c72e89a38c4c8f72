"""`core ignition`: render a host's first-boot Ignition config (or Butane) from its manifest.

The config makes a freshly provisioned host ready for layershell's first-boot unit:

- the manifest itself at /etc/layershell/composable.yaml;
- every package's tarball in the inbox, /opt/inbox/<profile>/<user>/<name>_<version>.tar.gz,
  with its sha256 for Ignition to verify. Versions are resolved now, by the planner
  `core install` uses, so the host gets exactly what was resolved here. Ignition fetches
  only http(s) and data: URLs: http(s) artifacts are referenced, file:// and ftp:// ones
  are fetched here and embedded as data: URLs, up to a size limit;
- the accounts of the layers above the host, with layer-shell as their shell;
- the directories layershell expects, with their owners and modes;
- the first-boot and inbox units from units/, enabled.

Rendering only reads the manifest and the stack and fetches artifacts (into a temporary
cache); it never needs root and never writes anything but its output. docs/boot.md
describes the result. The config itself, whatever its format, is ignition_config.py;
the system extension image in it (--sysext), ignition_sysext.py.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from typing import Any

import yaml

from layershell import load
from layershell.errors import LayershellError
from layershell.host import origin
from layershell.host.ignition_config import (
    DIR_MODE,
    FETCHED_BY_IGNITION,
    FILE_MODE,
    HOST,
    INBOX_USER_MODE,
    LAYER_SHELL,
    Config,
    Directory,
    File,
    Link,
    Package,
    RenderError,
    Unit,
    User,
    data_url,
    scheme,
    text_data_url,
)
from layershell.host.ignition_sysext import EXTENSION_DIR, EXTENSION_LINK, extension_of
from layershell.layers import sandbox, stack
from layershell.layers.model import Layer, LayerStack
from layershell.packages import fetch, manifest, pipeline, repo, verify
from layershell.packages.manifest import Manifest

Log = Callable[[str], None]


class Format(str, Enum):
    butane = "butane"
    ignition = "ignition"


DEFAULT_SPEC = "3.3.0"
# The oldest spec whose `verification.hash` accepts sha256 (3.0.0 knows only sha512).
MIN_SPEC = (3, 1, 0)
SPEC_RE = re.compile(r"\A3\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-experimental)?\Z")
# Butane's fcos variant: the version that produces each Ignition spec.
BUTANE_VARIANT = "fcos"
BUTANE_VERSIONS = {"3.1.0": "1.1.0", "3.2.0": "1.3.0", "3.3.0": "1.4.0", "3.4.0": "1.5.0",
                   "3.5.0": "1.6.0"}  # fmt: skip
DEFAULT_MAX_EMBED = 1 << 20

FIRSTBOOT_UNIT = "layershell-firstboot.service"
UNITS = origin.UNITS
EXTENSION_UNIT = origin.EXTENSION_UNIT
SYSEXT_UNIT = "systemd-sysext.service"
NETWORK_DROPIN = "10-layershell-network.conf"
NETWORK_DROPIN_TEXT = "[Unit]\nWants=network-online.target\nAfter=network-online.target\n"
REMOTE_SCHEMES = ("http", "https", "ftp")

# Ignition's JSON names -> Butane's YAML names, for the keys this module writes.
BUTANE_KEYS = {"homeDir": "home_dir", "noCreateHome": "no_create_home"}

EMBED_HINT = (
    "Ignition cannot fetch file:// or ftp:// URLs, so those packages are embedded in the"
    " config; serve the repository over http(s) so Ignition fetches it, or raise the"
    " limit with --max-embed BYTES"
)


# --- inputs -------------------------------------------------------------------------------


def default_units_dir() -> str:
    return os.path.join(stack.data_dir(), "units")


def read_manifest(path: str) -> tuple[Manifest, bytes]:
    """The validated manifest and its exact bytes (what is validated is what is embedded);
    raises ConfigError (exit 2) listing every problem."""
    try:
        with open(path, "rb") as f:
            data = f.read()
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError):
        manifest.load_manifest(path)  # words the problem as every command does
        raise
    return manifest.validate(load.load_text(text, path)), data


def check_spec(spec: str, fmt: Format) -> str:
    """The Ignition spec version to write; for Butane, the Butane version producing it."""
    m = SPEC_RE.match(spec)
    if m is None or (3, int(m[1]), int(m[2])) < MIN_SPEC:
        raise LayershellError(
            f"--spec {spec!r}: layershell writes Ignition spec 3.1.0 or newer",
            f"use a version such as {DEFAULT_SPEC} (the default) or 3.4.0",
            exit_code=2,
        )
    if fmt is Format.butane:
        butane = BUTANE_VERSIONS.get(spec)
        if butane is None:
            known = ", ".join(BUTANE_VERSIONS)
            raise LayershellError(
                f"--spec {spec}: no Butane {BUTANE_VARIANT} version is known to produce it",
                f"use one of {known}, or --format ignition",
                exit_code=2,
            )
        return butane
    return spec


def layer_home(layer: Layer) -> str:
    """A layer account's home on the provisioned host: its layers.yaml template expanded
    with the system paths, else /home/<account>."""
    if not layer.home:
        return os.path.join("/home", layer.account)
    return sandbox.expand(layer.home, HOST.store(layer.name), HOST.pkgs_dir, HOST.state_dir)


def _read_unit(units_dir: str, name: str) -> str:
    path = os.path.join(units_dir, name)
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as exc:
        raise RenderError(
            f"cannot read the unit {path}: {exc.strerror}",
            "layershell ships its units in units/; reinstall it",
        ) from None


def _read_units(units_dir: str, remote: bool, extension: bool) -> tuple[Unit, ...]:
    """layershell's units with their contents; with the extension, which ships them,
    only what the host needs before the image is merged: systemd-sysext enabled and
    layershell-extension.service, which makes systemd 252 load the image's units."""
    network = ((NETWORK_DROPIN, NETWORK_DROPIN_TEXT),) if remote else ()
    if extension:
        return (
            Unit(EXTENSION_UNIT, _read_unit(units_dir, EXTENSION_UNIT), True),
            Unit(FIRSTBOOT_UNIT, None, None, network),
            Unit(SYSEXT_UNIT, None, True),
        )
    units = []
    for name, enabled in sorted(UNITS.items()):
        dropins = network if name == FIRSTBOOT_UNIT else ()
        units.append(Unit(name, _read_unit(units_dir, name), enabled, dropins))
    return tuple(units)


# --- rendering ----------------------------------------------------------------------------


@contextmanager
def _temporary_fetcher(progress: fetch.Progress | None) -> Iterator[fetch.Fetcher]:
    with tempfile.TemporaryDirectory(prefix="layershell-ignition-") as cache:
        yield fetch.Fetcher(cache, progress=progress)


def _local_size(url: str) -> int | None:
    try:
        return os.stat(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).st_size
    except OSError:
        return None  # the fetch says why, in its own words


def _too_big(job: pipeline.Job, size: int, limit: int) -> RenderError:
    return RenderError(
        f"{job.name} {job.version}: {pipeline.redact(job.url or '')} is {size} bytes,"
        f" over the limit of {limit} bytes for a package embedded in the config",
        EMBED_HINT,
    )


def _check_users(loaded: Manifest, account: str, layer: str) -> None:
    # `core inbox` installs only from the installing layer's account's directory, so a
    # tarball for anyone else would wait there forever: refuse it now, as install does.
    for spec in loaded.packages:
        if spec.user is not None and spec.user != account:
            raise LayershellError(
                f"{loaded.file}:{spec.line}: package {spec.name} is for user {spec.user},"
                f" but the installing layer {layer} belongs to {account}",
                "set user: to the layer's account, or leave it out",
                exit_code=2,
            )


def _package(
    job: pipeline.Job, profile: str, account: str, fetcher: fetch.Fetcher, max_embed: int
) -> tuple[Package, File]:
    url = job.url
    assert url is not None  # a manifest package always resolves to a URL
    file_name = os.path.basename(urllib.parse.urlsplit(url).path)
    parsed = repo.split_artifact_name(urllib.parse.unquote(file_name))
    ext = parsed[2] if parsed else ".tar.gz"
    inbox = os.path.join(HOST.inbox_dir, profile, account, f"{job.name}_{job.version}{ext}")
    if scheme(url) in FETCHED_BY_IGNITION:
        if job.sha256 is None:
            raise RenderError(
                f"{job.name} {job.version}: nothing gives the sha256 of {url}",
                "add sha256: to the package in the manifest",
            )
        package = Package(job.name, job.version, url, job.sha256, inbox, False, job.size)
        # root's, not the account's: core inbox installs only what root alone could
        # have changed (the account could otherwise rewrite what root installs with the
        # profile its directory names); the account reads it through the directory.
        return package, File(inbox, url, FILE_MODE, None, job.sha256)
    path = fetcher.fetch(url, sha256=job.sha256, size=job.size, name=job.name)
    size = os.path.getsize(path)
    if size > max_embed:
        raise _too_big(job, size, max_embed)
    with open(path, "rb") as f:
        data = f.read()
    digest = job.sha256 or verify.sha256_file(path)[0]
    package = Package(job.name, job.version, url, digest, inbox, True, size)
    return package, File(inbox, data_url(data), FILE_MODE, None, digest)


def _keys(loaded: Manifest, trust: verify.Trust) -> list[File]:
    """The public keys the manifest's signed repositories are checked with, as files in
    the host's keys directory (the same names, so a manifest's `keys:` still finds them)."""
    found: dict[str, bytes] = {}
    for spec in loaded.packages:
        settings = trust.settings_for(repo.check_repository(loaded.repository_for(spec)))
        if settings.verify is not verify.Verification.SIGNATURE:
            continue
        for path in verify.key_files(trust.keys_dir, settings.keys):
            found[os.path.basename(path)] = verify.read_key_file(path)
    return [
        File(os.path.join(HOST.keys_dir, name), data_url(data), FILE_MODE)
        for name, data in sorted(found.items())
    ]


def render(
    loaded: Manifest,
    manifest_bytes: bytes,
    layers: LayerStack,
    *,
    arch: str | None = None,
    os_version: str | None = None,
    max_embed: int = DEFAULT_MAX_EMBED,
    units_dir: str | None = None,
    fetcher: fetch.Fetcher | None = None,
    progress: fetch.Progress | None = None,
    log: Log | None = None,
    sysext: str | None = None,
    sysext_sha256: str | None = None,
    keys_dir: str | None = None,
) -> Config:
    """The config for a host that gets `loaded` (whose file holds `manifest_bytes`).

    Every repository is accepted as the host would (verify/trust.py) with the keys in
    `keys_dir` (this machine's), and the keys that proved a signed repository's origin
    go into the config at /etc/layershell/keys/ for the host's later updates.

    arch and os_version are the target host's (default: this host's), for resolving
    `os` versions and the repository's arch directory. Without `fetcher`, artifacts are
    fetched into a temporary cache that is removed afterwards. `sysext` (and
    `sysext_sha256`) add layershell's system extension image (extension_of).
    """
    if fetcher is None:
        with _temporary_fetcher(progress) as temporary:
            return render(
                loaded, manifest_bytes, layers, arch=arch, os_version=os_version,
                max_embed=max_embed, units_dir=units_dir, fetcher=temporary, log=log,
                sysext=sysext, sysext_sha256=sysext_sha256, keys_dir=keys_dir,
            )  # fmt: skip
    installing = layers.layers[1]
    account = installing.account
    _check_users(loaded, account, installing.name)
    arch = arch or repo.host_arch()
    extension = None
    if sysext is not None:
        extension, image = extension_of(sysext, sysext_sha256, arch, fetcher, max_embed)
    elif sysext_sha256 is not None:
        raise LayershellError(
            "--sysext-sha256 is the sha256 of the image --sysext names, and no --sysext was given",
            "add --sysext URL, or leave --sysext-sha256 out",
            exit_code=2,
        )
    trust = verify.Trust(
        keys_dir or HOST.keys_dir, loaded.repositories, warn=log if log is not None else None
    )
    planner = pipeline.Planner(
        fetcher,
        arch=arch,
        os_version=os_version if os_version is not None else pipeline.os_version(HOST),
        trust=trust,
    )
    # Every package resolved, and every embedding checked against the limit where the
    # size is known, before anything is downloaded.
    planned = [
        (spec, planner.from_spec(spec, loaded.repository_for(spec))) for spec in loaded.packages
    ]
    for _, job in planned:
        url = job.url or ""
        if scheme(url) in FETCHED_BY_IGNITION:
            continue
        size = (
            job.size
            if job.size is not None
            else (_local_size(url) if scheme(url) == "file" else None)
        )
        if size is not None and size > max_embed:
            raise _too_big(job, size, max_embed)
    files = [File(HOST.manifest_file, text_data_url(manifest_bytes))]
    files += _keys(loaded, trust)
    links = []
    if extension is not None:
        files.append(image)
        links.append(Link(EXTENSION_LINK, extension.path))
        if log is not None:
            how = "embedded from" if extension.embedded else "fetched by Ignition from"
            log(f"layershell {extension.version}: {extension.path}, {how} {extension.source}")
    packages = []
    profiles: set[str] = set()
    for spec, job in planned:
        package, entry = _package(job, spec.profile.value, account, fetcher, max_embed)
        if log is not None:
            how = "embedded" if package.embedded else "fetched by Ignition from"
            log(f"{package.name} {package.version}: {package.inbox_path}, {how} {job.origin}")
        packages.append(package)
        files.append(entry)
        profiles.add(spec.profile.value)
    directories = [
        Directory(HOST.config_dir),
        Directory(HOST.state_dir),
        Directory(HOST.pkgs_dir, DIR_MODE, account, account),
        Directory(HOST.inbox_dir),
    ]
    for profile in sorted(profiles):
        directories.append(Directory(os.path.join(HOST.inbox_dir, profile)))
        directories.append(
            Directory(
                os.path.join(HOST.inbox_dir, profile, account), INBOX_USER_MODE, None, account
            )
        )
    if extension is not None:
        directories.append(Directory(EXTENSION_DIR))
    shell = origin.EXTENSION_SHELL if extension is not None else LAYER_SHELL
    users = tuple(User(x.account, layer_home(x), shell) for x in layers.layers if x.level >= 1)
    remote = any(scheme(loaded.repository_for(spec)) in REMOTE_SCHEMES for spec in loaded.packages)
    return Config(
        files=tuple(sorted(files, key=lambda f: f.path)),
        directories=tuple(sorted(directories, key=lambda d: d.path)),
        users=users,
        units=_read_units(units_dir or default_units_dir(), remote, extension is not None),
        packages=tuple(packages),
        links=tuple(links),
        extension=extension,
    )


# --- output -------------------------------------------------------------------------------


class _Mode(int):
    """A file mode: octal in Butane (0644), as its documentation writes them."""


def _owner(name: str | None) -> dict[str, Any]:
    return {"name": name} if name is not None else {}


def tree(config: Config, *, butane: bool) -> dict[str, Any]:
    """The config as Ignition's JSON object (without `ignition:`), or with Butane's
    key names. Butane and Ignition carry the same data, data: URLs included."""

    def mode(value: int) -> int:
        return _Mode(value) if butane else value

    def key(name: str) -> str:
        return BUTANE_KEYS.get(name, name) if butane else name

    files = []
    for f in config.files:
        contents: dict[str, Any] = {"source": f.source}
        if f.sha256 is not None:
            contents["verification"] = {"hash": f"sha256-{f.sha256}"}
        entry: dict[str, Any] = {"path": f.path, "mode": mode(f.mode), "contents": contents}
        if f.owner is not None:
            entry |= {"user": _owner(f.owner), "group": _owner(f.owner)}
        files.append(entry)
    directories = []
    for d in config.directories:
        entry = {"path": d.path, "mode": mode(d.mode)}
        if d.owner is not None:
            entry["user"] = _owner(d.owner)
        if d.group is not None:
            entry["group"] = _owner(d.group)
        directories.append(entry)
    users = [{"name": u.name, key("homeDir"): u.home, "shell": u.shell} for u in config.users]
    units = []
    for u in config.units:
        unit: dict[str, Any] = {"name": u.name}
        if u.contents is not None:
            unit["contents"] = u.contents
        if u.enabled is not None:
            unit["enabled"] = u.enabled
        if u.dropins:
            unit["dropins"] = [{"name": n, "contents": c} for n, c in u.dropins]
        units.append(unit)
    storage: dict[str, Any] = {"directories": directories, "files": files}
    if config.links:
        storage["links"] = [{"path": x.path, "target": x.target} for x in config.links]
    return {
        "passwd": {"users": users},
        "storage": storage,
        "systemd": {"units": units},
    }


class _ButaneDumper(yaml.SafeDumper):
    """Block style, literal blocks for multi-line text, octal modes."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


def _represent_mode(dumper: yaml.SafeDumper, value: _Mode) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:int", f"0{int(value):o}")


_ButaneDumper.add_representer(str, _represent_str)
_ButaneDumper.add_representer(_Mode, _represent_mode)


def dump(config: Config, fmt: Format, spec: str = DEFAULT_SPEC) -> str:
    """The config as text: Ignition JSON (sorted keys) or Butane YAML; spec is the
    Ignition spec version (checked by check_spec)."""
    version = check_spec(spec, fmt)
    if fmt is Format.ignition:
        body = {"ignition": {"version": version}, **tree(config, butane=False)}
        return json.dumps(body, indent=2, sort_keys=True, ensure_ascii=True) + "\n"
    body = {"variant": BUTANE_VARIANT, "version": version, **tree(config, butane=True)}
    text: str = yaml.dump(
        body, Dumper=_ButaneDumper, sort_keys=False, default_flow_style=False, width=100
    )
    return text
