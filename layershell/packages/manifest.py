"""Validate composable.yaml (which packages a host gets, from where, how) into a Manifest.

Every problem is collected and reported at once as `FILE:LINE:COL: key: message (hint)`,
in the order they appear in the file. This module holds the Manifest and walks the
document; checker.py collects the problems, manifest_repositories.py checks repository
URLs and `repositories:`, manifest_exposure.py a package's `expose:`, `expose_over:` and
`writable:`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import Any

from layershell import load
from layershell import names as rules
from layershell.errors import ConfigError, LayershellError, Problem
from layershell.layers.config import ACCOUNT_RE
from layershell.load import Document, KeyPath
from layershell.packages import manifest_exposure, manifest_repositories
from layershell.packages.checker import Checker, kind
from layershell.packages.manifest_env import ENV_NAME_RE, NO_ENV, EnvSettings
from layershell.packages.verify.signature import RepositoryTrust


class TrackStream(str, Enum):
    stable = "stable"
    next = "next"
    testing = "testing"


class Profile(str, Enum):
    default = "default"
    nonetwork = "nonetwork"
    strict = "strict"
    trusted = "trusted"


class InstallMethod(str, Enum):
    copy = "copy"
    symlink = "symlink"
    auto = "auto"


class VersionKind(str, Enum):
    pinned = "pinned"  # exactly the version written
    latest = "latest"  # the newest version on the package's stream
    os = "os"  # the build for the host OS version, else the newest older OS version


@dataclass(frozen=True)
class PackageSpec:
    """One entry of `packages:`. `repository` None means the manifest's default."""

    name: str
    repository: str | None
    version: str
    version_kind: VersionKind
    track_stream: TrackStream = TrackStream.stable
    enable: tuple[str, ...] = ()
    start: tuple[str, ...] = ()
    profile: Profile = Profile.default
    install_method: InstallMethod = InstallMethod.auto
    sha256: str | None = None  # 64 lower-case hex digits
    user: str | None = None  # layer account; None = the stack's level-1 account
    expose: tuple[str, ...] | None = None  # executables for PATH; None = all of bin/
    expose_over: tuple[str, ...] = ()  # of those, the ones that may shadow a host program
    env: EnvSettings = NO_ENV
    writable: tuple[str, ...] = ()  # paths in the caller's home its shims may write (~/...)
    profile_given: bool = False  # the entry says profile: (else it is the default's)
    line: int = 0  # where the entry starts in the manifest, for messages


@dataclass(frozen=True)
class Manifest:
    file: str
    default_repository: str | None
    packages: tuple[PackageSpec, ...]
    # How each repository's origin is checked (verify.RepositoryTrust); one not listed
    # is verified by signature with every key in the keys directory.
    repositories: tuple[RepositoryTrust, ...] = ()

    def get(self, name: str) -> PackageSpec | None:
        return next((p for p in self.packages if p.name == name), None)

    def repository_for(self, package: PackageSpec) -> str:
        """The package's own repository, else the default (validation ensures one exists)."""
        repository = package.repository or self.default_repository
        if repository is None:
            raise LayershellError(
                f"package {package.name!r} has no repository",
                f"add repository: to it in {self.file}, or default_repository:",
            )
        return repository


TOP_KEYS = ("composable",)
MANIFEST_KEYS = ("default_repository", "repositories", "packages")
PACKAGE_KEYS = (
    "name",
    "repository",
    "version",
    "track_stream",
    "enable",
    "start",
    "profile",
    "install_method",
    "sha256",
    "user",
    "expose",
    "expose_over",
    "env",
    "writable",
)
ENV_KEYS = ("pass", "deny", "set")
MAX_ENV_ENTRIES = 64  # per list, and in set:
MAX_ENV_VALUE = 4096
# "_" separates name and version in file names (goss_v0.0.1), so neither may contain it.
NAME_RE, VERSION_RE, SHA256_RE = rules.PACKAGE, rules.VERSION, rules.SHA256
UNIT_RE = re.compile(r"\A[A-Za-z0-9:_.\\@-]{1,255}\Z")
# The unit types `portablectl attach` picks up from an image.
UNIT_TYPES = ("service", "socket", "timer", "path", "target")
VERSION_HINT = "for example v0.0.1, or latest, or os to follow the host OS version"


def parse_sha256(text: str) -> str | None:
    """A SHA-256 digest as 64 lower-case hex digits, from `<hex>` or `sha256:<hex>`;
    None when `text` is not one."""
    digest = text[len("sha256:") :] if text.startswith("sha256:") else text
    digest = digest.lower()  # some tools print upper case; the digest is the same
    return digest if SHA256_RE.match(digest) else None


def _units(
    check: Checker, path: KeyPath, value: object, package: str | None
) -> tuple[str, ...] | None:
    units = check.names(path, value, f"{package or 'goss'}.service")
    if units is None:
        return None
    if package is not None and "+" in package:
        # Unit names start with the package name, and systemd refuses '+' in them.
        check.report(
            path,
            f"package {package!r} cannot have systemd units: unit names may not contain '+'",
            "rename the package without '+' to enable or start its units",
        )
        return None
    ok = True
    for index, unit in enumerate(units):
        problem = _unit_problem(unit, package, start=path[-1] == "start")
        if problem:
            check.report((*path, index), *problem)
            ok = False
    return units if ok else None


def _unit_problem(unit: str, package: str | None, *, start: bool) -> tuple[str, str] | None:
    if not UNIT_RE.match(unit):
        return (
            f"invalid unit name {unit!r}",
            "use letters, digits, ':', '_', '.', '@' or '-', as in goss-serve.service",
        )
    if unit.rpartition(".")[2] not in UNIT_TYPES or "." not in unit:
        return (
            f"unit {unit!r} is not a portable unit type",
            "end it in " + ", ".join("." + t for t in UNIT_TYPES),
        )
    if package is not None:
        rest = unit[len(package) :] if unit.startswith(package) else ""
        if rest[:1] not in ("-", ".", "@"):
            return (
                f"unit {unit!r} does not start with the package name {package!r}",
                "systemd portable services only attach units whose name starts with the "
                f"image name and '-', '.' or '@', as in {package}.socket, "
                f"{package}-serve.service or {package}@.service",
            )
    if start and "@." in unit:
        return (
            f"cannot start the template {unit!r} without an instance",
            "name an instance, as in " + unit.replace("@.", "@main.", 1),
        )
    return None


def _name(check: Checker, path: KeyPath, raw: dict[str, Any]) -> str | None:
    if "name" not in raw:
        check.report(path, "missing key 'name'", "for example name: goss")
        return None
    name = raw["name"]
    if not isinstance(name, str) or not NAME_RE.match(name):
        check.report((*path, "name"), f"invalid package name {name!r}", rules.PACKAGE_HINT)
        return None
    return name


def _version(check: Checker, path: KeyPath, raw: dict[str, Any]) -> tuple[str, VersionKind] | None:
    if "version" not in raw:
        check.report(path, "missing key 'version'", VERSION_HINT)
        return None
    where = (*path, "version")
    version = check.text(where, raw["version"], VERSION_HINT)
    if version is None:
        return None
    if version in (VersionKind.latest.value, VersionKind.os.value):
        return version, VersionKind(version)
    if "_" in version:
        check.report(
            where,
            f"invalid version {version!r}: '_' separates name and version in file names",
            "use '.', '+', '~' or '-' instead",
        )
    elif "/" in version:
        check.report(
            where, f"invalid version {version!r}: a version may not contain '/'", VERSION_HINT
        )
    elif not VERSION_RE.match(version):
        check.report(
            where,
            f"invalid version {version!r}",
            "use letters, digits, '.', '+', '~' or '-', starting with a letter or digit",
        )
    else:
        return version, VersionKind.pinned
    return None


def _env_names(check: Checker, where: KeyPath, value: object, *, deny: bool) -> tuple[str, ...]:
    names = check.names(where, value, "MY_VAR")
    if names is None:
        return ()
    if len(names) > MAX_ENV_ENTRIES:
        check.report(where, f"more than {MAX_ENV_ENTRIES} names", "pass fewer variables")
        return ()
    for index, name in enumerate(names):
        _env_name(check, (*where, index), name, deny=deny)
    return names


def _env_name(
    check: Checker, where: KeyPath, name: str, *, key: bool = False, deny: bool = False
) -> None:
    from layershell.layers.sandbox import denied_env

    if not ENV_NAME_RE.match(name):
        check.report(
            where,
            f"invalid environment variable name {name[:130]!r}",
            "use letters, digits and '_', not starting with a digit",
            key=key,
        )
    elif denied_env(name) and not deny:
        check.report(
            where,
            f"{name} never reaches a layer's program: it changes what the loader or an"
            ' interpreter runs (docs/exposure.md, "Environment")',
            "set it inside the package instead: a script in bin/ that exports it and execs"
            ' the real program (docs/exposure.md, "Environment")',
            key=key,
        )


def _env(check: Checker, path: KeyPath, raw: object) -> EnvSettings:
    """`env: {pass: [NAME...], deny: [NAME...], set: {NAME: value}}`."""
    where = (*path, "env")
    if not isinstance(raw, dict):
        check.report(
            where, f"must be a mapping, not {kind(raw)}", "for example env: {pass: [MY_VAR]}"
        )
        return NO_ENV
    check.keys(where, raw, ENV_KEYS)
    passed = _env_names(check, (*where, "pass"), raw["pass"], deny=False) if "pass" in raw else ()
    denied = _env_names(check, (*where, "deny"), raw["deny"], deny=True) if "deny" in raw else ()
    values: list[tuple[str, str]] = []
    if "set" in raw:
        at = (*where, "set")
        given = raw["set"]
        if not isinstance(given, dict):
            check.report(at, f"must be a mapping, not {kind(given)}", "for example set: {LESS: -R}")
        elif len(given) > MAX_ENV_ENTRIES:
            check.report(at, f"more than {MAX_ENV_ENTRIES} variables", "set fewer variables")
        else:
            for name, value in given.items():
                if not isinstance(name, str):
                    check.report(at, f"a variable's name must be text, not {kind(name)}")
                    continue
                _env_name(check, (*at, name), name, key=True)
                if name in ("PATH", "PWD", "HOME"):
                    check.report(
                        (*at, name),
                        f"{name} is set by layershell for every program of the layer",
                        "set it inside the package instead: a script in bin/ that exports it"
                        " and execs the real program",
                        key=True,
                    )
                    continue
                text = check.text((*at, name), value, "give the value, quoted if need be")
                if text is None:
                    continue
                if len(text) > MAX_ENV_VALUE or not text.isprintable() or "@LAYERSHELL_" in text:
                    check.report(
                        (*at, name),
                        f"must be printable text of at most {MAX_ENV_VALUE} characters",
                        "no newlines or control characters (and no @LAYERSHELL_, which"
                        " layershell's shims use)",
                    )
                    continue
                values.append((name, text))
    return EnvSettings(passed, denied, tuple(values))


def _sha256(check: Checker, path: KeyPath, raw: dict[str, Any]) -> str | None:
    if "sha256" not in raw:
        return None
    where = (*path, "sha256")
    text = check.text(where, raw["sha256"], "sha256: followed by 64 hex digits")
    if text is None:
        return None
    sha256 = parse_sha256(text)
    if sha256 is None:
        check.report(
            where,
            "must be a SHA-256 digest: 64 hex digits, optionally after 'sha256:'",
            "copy it from `sha256sum FILE`",
        )
    return sha256


def _user(check: Checker, path: KeyPath, raw: dict[str, Any]) -> str | None:
    if "user" not in raw:
        return None
    where = (*path, "user")
    user = check.text(where, raw["user"], "name a layer account, as in user: arne")
    if user is not None and not ACCOUNT_RE.match(user):
        check.report(
            where, f"invalid account name {user!r}", "name a layer account, as in user: arne"
        )
    return user


def _package(check: Checker, path: KeyPath, raw: object, has_default: bool) -> PackageSpec | None:
    if not isinstance(raw, dict):
        check.report(path, "each package must be a mapping (name:, version:, ...)")
        return None
    before = len(check.problems)
    check.keys(path, raw, PACKAGE_KEYS)
    name = _name(check, path, raw)
    version = _version(check, path, raw)
    repository: str | None = None
    if "repository" in raw:
        repository = manifest_repositories.repository_url(
            check, (*path, "repository"), raw["repository"]
        )
    elif not has_default:
        check.report(
            path,
            "no repository: the package has none and there is no default_repository",
            "add repository: to the package, or default_repository: under composable:",
        )
    stream = TrackStream.stable
    if "track_stream" in raw:
        stream = (
            check.choice((*path, "track_stream"), raw["track_stream"], TrackStream, "track stream")
            or stream
        )
    enable: tuple[str, ...] = ()
    start: tuple[str, ...] = ()
    if "enable" in raw:
        enable = _units(check, (*path, "enable"), raw["enable"], name) or ()
    if "start" in raw:
        start = _units(check, (*path, "start"), raw["start"], name) or ()
    profile = Profile.default
    if "profile" in raw:
        profile = check.choice((*path, "profile"), raw["profile"], Profile, "profile") or profile
    method = InstallMethod.auto
    if "install_method" in raw:
        method = (
            check.choice(
                (*path, "install_method"), raw["install_method"], InstallMethod, "install method"
            )
            or method
        )
    sha256 = _sha256(check, path, raw)
    user = _user(check, path, raw)
    expose = None
    if "expose" in raw:
        expose = manifest_exposure.executables(check, (*path, "expose"), raw["expose"])
    expose_over: tuple[str, ...] = ()
    if "expose_over" in raw:
        expose_over = manifest_exposure.expose_over(check, path, raw, expose) or ()
    env = _env(check, path, raw["env"]) if "env" in raw else NO_ENV
    writable = (
        manifest_exposure.writable(check, (*path, "writable"), raw["writable"])
        if "writable" in raw
        else ()
    )
    if len(check.problems) > before:
        return None
    assert name is not None and version is not None
    return PackageSpec(
        name=name,
        repository=repository,
        version=version[0],
        version_kind=version[1],
        track_stream=stream,
        enable=enable,
        start=start,
        profile=profile,
        install_method=method,
        sha256=sha256,
        user=user,
        expose=expose,
        expose_over=expose_over,
        env=env,
        writable=writable,
        profile_given="profile" in raw,
        line=check.doc.mark(path).line,
    )


def _packages(check: Checker, raw: dict[str, Any], has_default: bool) -> tuple[PackageSpec, ...]:
    path: KeyPath = ("composable", "packages")
    if "packages" not in raw:
        check.report(
            ("composable",),
            "missing key 'packages'",
            "list them under packages:, or write packages: [] for none",
        )
        return ()
    items = raw["packages"]
    if not isinstance(items, list):
        check.report(
            path,
            f"must be a list of packages, not {kind(items)}",
            "start each package with '- name:'; use packages: [] for none",
        )
        return ()
    packages: list[PackageSpec] = []
    first_line: dict[str, int] = {}
    for index, item in enumerate(items):
        spec = _package(check, (*path, index), item, has_default)
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str):
            continue
        # Duplicates are checked on the name alone, so they show even if the entry has
        # other problems.
        if name in first_line:
            check.report(
                (*path, index, "name"),
                f"package {name!r} is listed twice (first on line {first_line[name]})",
                "keep one entry per package",
            )
            continue
        first_line[name] = check.doc.mark((*path, index)).line
        if spec is not None:
            packages.append(spec)
    return tuple(packages)


def validate(doc: Document) -> Manifest:
    """The Manifest in `doc`; raises ConfigError listing every problem."""
    check = Checker(doc)
    data = doc.data
    if not isinstance(data, dict) or not isinstance(data.get("composable"), dict):
        if isinstance(data, dict) and "composable" in data:
            check.report(
                ("composable",),
                "must be a mapping with default_repository: and packages:",
                "indent them below composable:",
            )
        else:
            check.report(
                (), "must be a mapping with a 'composable:' key", "start the file with composable:"
            )
        if isinstance(data, dict):
            check.keys((), data, TOP_KEYS)
        raise ConfigError(_in_order(check.problems))
    check.keys((), data, TOP_KEYS)
    raw: dict[str, Any] = data["composable"]
    check.keys(("composable",), raw, MANIFEST_KEYS)
    default = None
    if "default_repository" in raw:
        default = manifest_repositories.repository_url(
            check, ("composable", "default_repository"), raw["default_repository"]
        )
    packages = _packages(check, raw, has_default="default_repository" in raw)
    repositories = (
        manifest_repositories.repositories(check, raw.get("repositories"))
        if "repositories" in raw
        else ()
    )
    if check.problems:
        raise ConfigError(_in_order(check.problems))
    return Manifest(doc.file, default, packages, repositories)


def _in_order(problems: list[Problem]) -> list[Problem]:
    # Stable: problems at one position keep the order they were found in.
    return sorted(problems, key=lambda p: (p.line, p.column))


def load_manifest(path: str) -> Manifest:
    """Read and validate composable.yaml; raises ConfigError listing every problem."""
    return validate(load.load_file(path))
