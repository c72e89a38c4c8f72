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
describes the result.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import re
import stat
import tempfile
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from typing import Any

import yaml

from layershell import load, names
from layershell.errors import LayershellError
from layershell.host import origin
from layershell.layers import sandbox, stack
from layershell.layers.stack import LayerStack
from layershell.packages import fetch, manifest, pipeline, repo, verify
from layershell.packages.manifest import Manifest
from layershell.paths import Paths

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

# Where things go on the provisioned host (system mode, root "/").
HOST = Paths.system("/")
LAYER_SHELL = os.path.join(HOST.bin_dir, "layer-shell")
INBOX_USER_MODE = 0o750  # root writes (Ignition, `core inbox`), the account's group reads
FILE_MODE = 0o644
DIR_MODE = 0o755

FIRSTBOOT_UNIT = "layershell-firstboot.service"
UNITS = origin.UNITS
# The system extension: versioned files side by side, the one merged named by a link
# (Flatcar's sysext-bakery layout), so an update or a rollback is one rename.
EXTENSION_DIR = "/opt/extensions/layershell"
EXTENSION_LINK = "/etc/extensions/layershell.raw"
EXTENSION_UNIT = origin.EXTENSION_UNIT
SYSEXT_UNIT = "systemd-sysext.service"
SUMS = "SHA256SUMS"
SHA256_RE = names.SHA256
MAX_SUMS = 1 << 20  # a SHA256SUMS of a few thousand lines
MAX_IMAGE_VERSION = 64  # the name stays far below a file name's 255 bytes
SQUASHFS_MAGIC = b"hsqs"  # little-endian squashfs, as mksquashfs writes it
EROFS_OFFSET, EROFS_MAGIC = 1024, b"\xe2\xe1\xf5\xe0"  # EROFS_SUPER_MAGIC_V1, LE
NETWORK_DROPIN = "10-layershell-network.conf"
NETWORK_DROPIN_TEXT = "[Unit]\nWants=network-online.target\nAfter=network-online.target\n"
REMOTE_SCHEMES = ("http", "https", "ftp")
FETCHED_BY_IGNITION = ("http", "https")

# Ignition's JSON names -> Butane's YAML names, for the keys this module writes.
BUTANE_KEYS = {"homeDir": "home_dir", "noCreateHome": "no_create_home"}

EMBED_HINT = (
    "Ignition cannot fetch file:// or ftp:// URLs, so those packages are embedded in the"
    " config; serve the repository over http(s) so Ignition fetches it, or raise the"
    " limit with --max-embed BYTES"
)


class RenderError(LayershellError):
    """The manifest is valid, but it cannot become an Ignition config as it is."""

    exit_code = 1


# --- the config, independent of its format ----------------------------------------------


@dataclass(frozen=True)
class File:
    path: str
    source: str  # an http(s) URL or a data: URL
    mode: int = FILE_MODE
    owner: str | None = None  # account and group name; None = root
    sha256: str | None = None


@dataclass(frozen=True)
class Link:
    path: str
    target: str


@dataclass(frozen=True)
class Directory:
    path: str
    mode: int = DIR_MODE
    owner: str | None = None
    group: str | None = None


@dataclass(frozen=True)
class User:
    name: str
    home: str
    shell: str = LAYER_SHELL


@dataclass(frozen=True)
class Unit:
    name: str
    contents: str | None  # None: a unit the host already has (systemd's, the extension's)
    enabled: bool | None = None
    dropins: tuple[tuple[str, str], ...] = ()  # (name, contents)


@dataclass(frozen=True)
class Package:
    """One package as rendered: what was resolved and how the host gets it."""

    name: str
    version: str
    url: str
    sha256: str
    inbox_path: str
    embedded: bool
    size: int | None


@dataclass(frozen=True)
class Extension:
    """layershell's system extension image, as rendered (docs/boot.md)."""

    name: str  # layershell-<version>-<arch>.raw
    version: str
    source: str  # the URL Ignition fetches, or the local file embedded
    sha256: str
    embedded: bool
    path: str  # where the host keeps it; EXTENSION_LINK points here


@dataclass(frozen=True)
class Config:
    """Everything the host gets, in a stable order (paths sorted, users in stack order)."""

    files: tuple[File, ...]
    directories: tuple[Directory, ...]
    users: tuple[User, ...]
    units: tuple[Unit, ...]
    packages: tuple[Package, ...]
    links: tuple[Link, ...] = ()
    extension: Extension | None = None


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


def layer_home(layer: stack.Layer) -> str:
    """A layer account's home on the provisioned host: its layers.yaml template expanded
    with the system paths, else /home/<account>."""
    if not layer.home:
        return os.path.join("/home", layer.account)
    return sandbox.expand(layer.home, HOST.store(layer.name), HOST.pkgs_dir, HOST.state_dir)


def _scheme(url: str) -> str:
    return urllib.parse.urlsplit(url).scheme.lower()


def data_url(data: bytes) -> str:
    """RFC 2397, base64: for tarballs."""
    return "data:;base64," + base64.b64encode(data).decode("ascii")


def text_data_url(data: bytes) -> str:
    """RFC 2397, percent-encoded: for text, which stays readable in the config."""
    return "data:," + urllib.parse.quote_from_bytes(data, safe="/")


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


# --- the system extension -----------------------------------------------------------------


def _systemd_arch(arch: str) -> str:
    found = origin.ARCHITECTURES.get(arch)
    if found is None:
        known = ", ".join(sorted(origin.ARCHITECTURES))
        raise LayershellError(
            f"--arch {arch}: no systemd architecture is known for it",
            f"use one of {known}",
            exit_code=2,
        )
    return found


def _image_version(name: str, arch: str) -> str:
    """The version in layershell-<version>-<arch>.raw (the name `./dev.sh sysext` gives)."""
    prefix, suffix = "layershell-", f"-{_systemd_arch(arch)}.raw"
    version = name[len(prefix) : -len(suffix)] if name.startswith(prefix) else ""
    if (
        not name.endswith(suffix)
        or not version
        or len(version) > MAX_IMAGE_VERSION
        or not repo.VERSION_RE.match(version)
    ):
        raise LayershellError(
            f"--sysext: {name[:300]!r} is not named layershell-<version>{suffix}"
            f" (a version of at most {MAX_IMAGE_VERSION} characters)",
            "give the image ./dev.sh sysext built, under its own name: the name says its"
            " version and its architecture, which must be the target host's (--arch)",
            exit_code=2,
        )
    return version


def _shown(url: str) -> str:
    """A URL as logs and messages show it: no password, no query (a signed URL's token)."""
    parts = urllib.parse.urlsplit(pipeline.redact(url))
    return urllib.parse.urlunsplit(parts._replace(query="", fragment=""))


def _listed_sha256(fetcher: fetch.Fetcher, url: str, name: str) -> str:
    """The image's sha256 from the SHA256SUMS beside it (sysext-bakery's convention);
    the list is small, so it is capped at MAX_SUMS bytes."""
    sums_url = urllib.parse.urljoin(url, SUMS)
    hint = f"publish {SUMS} beside the image (./dev.sh sysext writes it), or pass --sysext-sha256"
    capped = copy.copy(fetcher)
    capped.max_size = MAX_SUMS
    try:
        path = capped.fetch(sums_url, sha256=None, name=SUMS)
    except LayershellError as exc:
        raise RenderError(f"--sysext: cannot read {_shown(sums_url)}: {exc}", hint) from None
    with open(path, "rb") as f:
        text = f.read(MAX_SUMS + 1).decode("utf-8", errors="replace")
    for line in text.splitlines():
        digest, _, listed = line.strip().partition("  ")
        if listed.lstrip("*") == name and SHA256_RE.match(digest.lower()):
            return digest.lower()
    raise RenderError(f"--sysext: {_shown(sums_url)} lists no sha256 for {name}", hint)


def _read_image(local: str, max_embed: int) -> bytes:
    """The bytes of a local image to embed: a regular file (not a FIFO or a device,
    which would block or never end), at most max_embed bytes, and a squashfs or erofs
    image by its magic (what systemd-sysext merges)."""
    hint = "give the .raw ./dev.sh sysext built"
    try:
        fd = os.open(local, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise LayershellError(f"--sysext {local}: {exc.strerror}", hint, exit_code=2) from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise LayershellError(f"--sysext {local}: not a regular file", hint, exit_code=2)
        if st.st_size > max_embed:
            raise _image_too_big(local, st.st_size, max_embed)
        data = f.read(max_embed + 1)
    if len(data) > max_embed:  # it grew since the fstat
        raise _image_too_big(local, len(data), max_embed)
    if data[:4] != SQUASHFS_MAGIC and data[EROFS_OFFSET : EROFS_OFFSET + 4] != EROFS_MAGIC:
        raise LayershellError(f"--sysext {local}: not a squashfs or erofs image", hint, exit_code=2)
    return data


def _image_too_big(local: str, size: int, max_embed: int) -> RenderError:
    return RenderError(
        f"--sysext {local} is {size} bytes, over the limit of {max_embed} bytes for a file"
        " embedded in the config",
        "publish it over http(s) with its SHA256SUMS and pass the URL, or raise --max-embed BYTES",
    )


def extension_of(
    source: str,
    sha256: str | None,
    arch: str,
    fetcher: fetch.Fetcher,
    max_embed: int,
) -> tuple[Extension, File]:
    """The image at `source` (an http(s) URL Ignition fetches, else a local file or
    file:// URL, embedded), with its sha256: given, from SHA256SUMS beside a URL, or
    computed from the local file (and checked when given)."""
    if sha256 is not None and not SHA256_RE.match(sha256.lower()):
        raise LayershellError(
            f"--sysext-sha256 {sha256[:100]!r} is not a sha256", "give 64 hex digits",
            exit_code=2,
        )  # fmt: skip
    sha256 = sha256.lower() if sha256 else None
    if repo.has_credentials(source):
        # Before anything shows it: the config is handed around, and Ignition logs URLs.
        raise LayershellError(
            f"--sysext {repo.credentials_refusal(source)}",
            "serve the image where Ignition needs no password (the sha256 protects it),"
            " or embed a local file",
            exit_code=2,
        )
    remote = _scheme(source) in FETCHED_BY_IGNITION
    if _scheme(source) not in ("", "file") and not remote:
        raise LayershellError(
            f"--sysext {_shown(source)}: Ignition fetches only http(s) URLs",
            "serve the image over http(s), or give a local file to embed",
            exit_code=2,
        )
    if _scheme(source) == "":
        local = source
    else:
        local = urllib.parse.unquote(urllib.parse.urlsplit(source).path)
    name = os.path.basename(local)
    version = _image_version(name, arch)
    path = os.path.join(EXTENSION_DIR, name)
    if remote:
        digest = sha256 or _listed_sha256(fetcher, source, name)
        extension = Extension(name, version, _shown(source), digest, False, path)
        return extension, File(path, source, FILE_MODE, None, digest)
    data = _read_image(local, max_embed)
    digest = hashlib.sha256(data).hexdigest()
    if sha256 is not None and sha256 != digest:
        raise RenderError(
            f"--sysext {local}: its sha256 is {digest}, not {sha256}",
            "give the image --sysext-sha256 names, or leave the option out",
        )
    extension = Extension(name, version, os.path.abspath(local), digest, True, path)
    return extension, File(path, data_url(data), FILE_MODE, None, digest)


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
    if _scheme(url) in FETCHED_BY_IGNITION:
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
    digest = job.sha256 or verify.sha256_file(path)
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
        if _scheme(url) in FETCHED_BY_IGNITION:
            continue
        size = (
            job.size
            if job.size is not None
            else (_local_size(url) if _scheme(url) == "file" else None)
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
    remote = any(_scheme(loaded.repository_for(spec)) in REMOTE_SCHEMES for spec in loaded.packages)
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
