"""Validate composable.yaml (which packages a host gets, from where, how) into a Manifest.

Every problem is collected and reported at once as `FILE:LINE:COL: key: message (hint)`,
in the order they appear in the file.
"""

from __future__ import annotations

import datetime
import difflib
import re
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeVar
from urllib.parse import urlsplit

from layershell import load
from layershell import names as rules
from layershell.errors import ConfigError, LayershellError, Problem
from layershell.layers.config import ACCOUNT_RE, did_you_mean
from layershell.load import Document, KeyPath
from layershell.packages import repo
from layershell.packages.verify.signature import RepositoryTrust, Verification, normal_fingerprint


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
class EnvSettings:
    """A package's `env:`: what of the caller's environment its shims' programs get,
    beyond the profile's rule (docs/exposure.md, "Environment")."""

    passed: tuple[str, ...] = ()  # `pass:` also under strict (which passes a short list)
    denied: tuple[str, ...] = ()  # `deny:` never, under any profile
    set: tuple[tuple[str, str], ...] = ()  # `set:` always, whatever the caller has

    def as_json(self) -> dict[str, object]:
        return {"pass": list(self.passed), "deny": list(self.denied), "set": dict(self.set)}


NO_ENV = EnvSettings()


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
REPOSITORY_KEYS = ("url", "verify", "keys", "key_fingerprint")
KEY_FILE_RE = re.compile(r"\A[A-Za-z0-9_][A-Za-z0-9._+@-]{0,127}\.(?:asc|gpg|pgp)\Z")
MAX_REPOSITORIES = 64
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
MAX_WRITABLE = 16
# Never writable through `writable:`: layershell's own trees in a (rootless) home.
PROTECTED_HOME_PATHS = (
    ".local/share/layershell", ".config/layershell", ".local/bin",
    ".local/share/layershell-programs",
)  # fmt: skip
ENV_KEYS = ("pass", "deny", "set")
ENV_NAME_RE = re.compile(r"\A[A-Za-z_][A-Za-z0-9_]{0,127}\Z")
MAX_ENV_ENTRIES = 64  # per list, and in set:
MAX_ENV_VALUE = 4096
# "_" separates name and version in file names (goss_v0.0.1), so neither may contain it.
NAME_RE, VERSION_RE, SHA256_RE = rules.PACKAGE, rules.VERSION, rules.SHA256
EXECUTABLE_RE = rules.EXECUTABLE
UNIT_RE = re.compile(r"\A[A-Za-z0-9:_.\\@-]{1,255}\Z")
# The unit types `portablectl attach` picks up from an image.
UNIT_TYPES = ("service", "socket", "timer", "path", "target")
SCHEMES = rules.SCHEMES
URL_EXAMPLE = "for example https://composable.example or file:///run/media/usb/repo"
VERSION_HINT = "for example v0.0.1, or latest, or os to follow the host OS version"

E = TypeVar("E", bound=Enum)


def parse_sha256(text: str) -> str | None:
    """A SHA-256 digest as 64 lower-case hex digits, from `<hex>` or `sha256:<hex>`;
    None when `text` is not one."""
    digest = text[len("sha256:") :] if text.startswith("sha256:") else text
    digest = digest.lower()  # some tools print upper case; the digest is the same
    return digest if SHA256_RE.match(digest) else None


def parse_repository(text: str) -> str:
    """A repository URL, checked and without trailing "/"; raises LayershellError
    (message and hint) when it is not a file://, http://, https:// or ftp:// URL, or
    when it carries a user name or password (the message shows them as ***)."""
    if repo.has_credentials(text):
        raise LayershellError(repo.credentials_refusal(text), repo.CREDENTIALS_HINT)
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in text):
        raise LayershellError(
            "must not contain spaces or control characters", "percent-encode them, as in %20"
        )
    scheme, sep, rest = text.partition("://")
    if not sep:
        raise LayershellError(
            f"{text!r} is not a file://, http://, https:// or ftp:// URL", URL_EXAMPLE
        )
    if scheme.lower() not in SCHEMES:
        raise LayershellError(
            f"unsupported protocol {scheme!r}", "use file://, http://, https:// or ftp://"
        )
    scheme = scheme.lower()
    if "?" in rest or "#" in rest:
        raise LayershellError(
            "must not have a query ('?') or fragment ('#')",
            "name the directory that holds the package files",
        )
    try:
        parts = urlsplit(f"{scheme}://{rest}")
        port = parts.port
    except ValueError as exc:
        raise LayershellError(f"not a valid URL: {exc}", URL_EXAMPLE) from None
    if scheme == "file":
        if parts.netloc or not parts.path.startswith("/"):
            raise LayershellError(
                "a file:// URL needs an absolute path and no host",
                "use three slashes, as in file:///run/media/usb/repo",
            )
        if parts.path.strip("/") == "":
            return "file:///"
    else:
        if not parts.hostname:
            raise LayershellError(
                f"a {scheme}:// URL needs a host", f"for example {scheme}://composable.example"
            )
        if port == 0:
            raise LayershellError("port 0 is not a port", "use a number from 1 to 65535")
    return f"{scheme}://{rest}".rstrip("/")


def _kind(value: object) -> str:
    if value is None:
        return "empty"
    if isinstance(value, str):
        return "text"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, (datetime.date, datetime.datetime)):
        return "a date"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _choice_hint(value: str, choices: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(value, choices, n=1)
    return f"did you mean {close[0]!r}?" if close else f"use one of {', '.join(choices)}"


class _Checker:
    """Collects problems for one document; each method returns the checked value or None."""

    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.problems: list[Problem] = []

    def report(self, path: KeyPath, message: str, hint: str = "", *, key: bool = False) -> None:
        self.problems.append(self.doc.problem(path, message, hint, key=key))

    def keys(self, path: KeyPath, data: dict[str, Any], allowed: tuple[str, ...]) -> None:
        for key in data:
            if key not in allowed:
                self.report((*path, key), "unknown key", did_you_mean(key, allowed), key=True)

    def text(self, path: KeyPath, value: object, empty_hint: str) -> str | None:
        """A non-empty string; `empty_hint` says what to write when there is none."""
        if value is None or value == "":
            self.report(path, "needs a value", empty_hint)
        elif isinstance(value, (list, dict)):
            self.report(path, f"must be text, not {_kind(value)}", empty_hint)
        elif not isinstance(value, str):
            # YAML turned it into a number, boolean or date; quoting keeps it as written.
            self.report(path, f"must be text, not {_kind(value)}", "put it in quotes")
        else:
            return value
        return None

    def choice(self, path: KeyPath, value: object, enum: type[E], what: str) -> E | None:
        choices = tuple(str(m.value) for m in enum)
        if isinstance(value, str) and value in choices:
            return enum(value)
        shown = str(value) if isinstance(value, str) else ""
        self.report(path, f"unknown {what} {value!r}", _choice_hint(shown, choices))
        return None

    def names(self, path: KeyPath, value: object, example: str) -> tuple[str, ...] | None:
        """A list of strings; each item's own rules are checked by the caller."""
        if isinstance(value, str):
            self.report(path, "must be a list", f"use a list: [{value}]")
            return None
        if value is None:
            self.report(path, "needs a value", f"for example [{example}], or [] for none")
            return None
        if not isinstance(value, list):
            self.report(path, f"must be a list, not {_kind(value)}", f"for example [{example}]")
            return None
        ok = True
        for index, item in enumerate(value):
            if not isinstance(item, str) or not item:
                what = "empty" if item == "" else _kind(item)
                self.report((*path, index), f"must be a name, not {what}")
                ok = False
        return tuple(value) if ok else None

    def repository(self, path: KeyPath, value: object) -> str | None:
        text = self.text(path, value, URL_EXAMPLE)
        if text is None:
            return None
        try:
            return parse_repository(text)
        except LayershellError as exc:
            self.report(path, exc.message, exc.hint)
            return None

    def units(self, path: KeyPath, value: object, package: str | None) -> tuple[str, ...] | None:
        units = self.names(path, value, f"{package or 'goss'}.service")
        if units is None:
            return None
        if package is not None and "+" in package:
            # Unit names start with the package name, and systemd refuses '+' in them.
            self.report(
                path,
                f"package {package!r} cannot have systemd units: unit names may not contain '+'",
                "rename the package without '+' to enable or start its units",
            )
            return None
        ok = True
        for index, unit in enumerate(units):
            problem = _unit_problem(unit, package, start=path[-1] == "start")
            if problem:
                self.report((*path, index), *problem)
                ok = False
        return units if ok else None

    def expose(self, path: KeyPath, value: object) -> tuple[str, ...] | None:
        names = self.names(path, value, "goss")
        if names is None:
            return None
        ok = True
        for index, name in enumerate(names):
            if "/" in name:
                self.report(
                    (*path, index),
                    f"{name!r} is a path, not a file name",
                    "name the executable in the package's bin/, as in goss",
                )
                ok = False
            elif not EXECUTABLE_RE.match(name):
                self.report(
                    (*path, index),
                    f"invalid executable name {name!r}",
                    rules.EXECUTABLE_HINT,
                )
                ok = False
        return names if ok else None


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


def _name(check: _Checker, path: KeyPath, raw: dict[str, Any]) -> str | None:
    if "name" not in raw:
        check.report(path, "missing key 'name'", "for example name: goss")
        return None
    name = raw["name"]
    if not isinstance(name, str) or not NAME_RE.match(name):
        check.report((*path, "name"), f"invalid package name {name!r}", rules.PACKAGE_HINT)
        return None
    return name


def _version(check: _Checker, path: KeyPath, raw: dict[str, Any]) -> tuple[str, VersionKind] | None:
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


def _expose_over(
    check: _Checker, path: KeyPath, raw: dict[str, Any], expose: tuple[str, ...] | None
) -> tuple[str, ...] | None:
    """The host's word that these shims may take a name a host program already has on
    PATH (ls, python3): each must be one of the package's `expose`."""
    where = (*path, "expose_over")
    names = check.expose(where, raw["expose_over"])
    if names is None:
        return None
    if "expose" not in raw:
        check.report(
            where,
            "needs an expose: list naming those programs",
            f"add expose: [{', '.join(names) or 'PROG'}] to the package",
        )
        return None
    if expose is None:
        return None  # expose itself is wrong, and says so
    from layershell.exposure.shims import sensitive

    ok = True
    for index, name in enumerate(names):
        if sensitive(name):
            check.report(
                (*where, index),
                f"{name!r} asks for passwords or changes identity: never put on PATH",
                "remove it; a package's program can run under another name",
            )
            ok = False
        elif name not in expose:
            check.report(
                (*where, index),
                f"{name!r} is not in the package's expose: list",
                f"add it to expose: too, or remove it here (expose: [{', '.join(expose)}])",
            )
            ok = False
    return names if ok else None


def _env_names(check: _Checker, where: KeyPath, value: object, *, deny: bool) -> tuple[str, ...]:
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
    check: _Checker, where: KeyPath, name: str, *, key: bool = False, deny: bool = False
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


def _env(check: _Checker, path: KeyPath, raw: object) -> EnvSettings:
    """`env: {pass: [NAME...], deny: [NAME...], set: {NAME: value}}`."""
    where = (*path, "env")
    if not isinstance(raw, dict):
        check.report(
            where, f"must be a mapping, not {_kind(raw)}", "for example env: {pass: [MY_VAR]}"
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
            check.report(
                at, f"must be a mapping, not {_kind(given)}", "for example set: {LESS: -R}"
            )
        elif len(given) > MAX_ENV_ENTRIES:
            check.report(at, f"more than {MAX_ENV_ENTRIES} variables", "set fewer variables")
        else:
            for name, value in given.items():
                if not isinstance(name, str):
                    check.report(at, f"a variable's name must be text, not {_kind(name)}")
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


def _meets(a: str, b: str) -> bool:
    """One of two relative paths is, or lies below, the other."""
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


def _writable(check: _Checker, where: KeyPath, value: object) -> tuple[str, ...]:
    """`writable: [~/.htoprc, ~/.config/htop]`: paths below the caller's home."""
    names = check.names(where, value, "~/.config/NAME")
    if names is None:
        return ()
    if len(names) > MAX_WRITABLE:
        check.report(where, f"more than {MAX_WRITABLE} paths", "name fewer paths")
        return ()
    out = []
    for index, text in enumerate(names):
        at = (*where, index)
        rel = text[2:] if text.startswith("~/") else ""
        parts = rel.split("/")
        if not rel or len(text) > 255 or not text.isprintable() or "@LAYERSHELL_" in text:
            check.report(
                at,
                f"{text[:100]!r} is not a path below the home",
                "write it as ~/PATH, for example ~/.config/htop",
            )
        elif any(p in ("", ".", "..") for p in parts):
            check.report(
                at, f"{text!r} has an empty, '.' or '..' part", "write it as ~/PATH, plainly"
            )
        elif any(_meets(rel, p) for p in PROTECTED_HOME_PATHS):
            check.report(
                at,
                f"{text!r} is or holds one of layershell's own trees",
                "name the program's own file or directory instead",
            )
        else:
            out.append(text)
    return tuple(out)


def _package(check: _Checker, path: KeyPath, raw: object, has_default: bool) -> PackageSpec | None:
    if not isinstance(raw, dict):
        check.report(path, "each package must be a mapping (name:, version:, ...)")
        return None
    before = len(check.problems)
    check.keys(path, raw, PACKAGE_KEYS)
    name = _name(check, path, raw)
    version = _version(check, path, raw)
    repository: str | None = None
    if "repository" in raw:
        repository = check.repository((*path, "repository"), raw["repository"])
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
        enable = check.units((*path, "enable"), raw["enable"], name) or ()
    if "start" in raw:
        start = check.units((*path, "start"), raw["start"], name) or ()
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
    sha256 = None
    if "sha256" in raw:
        where = (*path, "sha256")
        text = check.text(where, raw["sha256"], "sha256: followed by 64 hex digits")
        if text is not None:
            sha256 = parse_sha256(text)
            if sha256 is None:
                check.report(
                    where,
                    "must be a SHA-256 digest: 64 hex digits, optionally after 'sha256:'",
                    "copy it from `sha256sum FILE`",
                )
    user = None
    if "user" in raw:
        where = (*path, "user")
        user = check.text(where, raw["user"], "name a layer account, as in user: arne")
        if user is not None and not ACCOUNT_RE.match(user):
            check.report(
                where, f"invalid account name {user!r}", "name a layer account, as in user: arne"
            )
    expose = None
    if "expose" in raw:
        expose = check.expose((*path, "expose"), raw["expose"])
    expose_over: tuple[str, ...] = ()
    if "expose_over" in raw:
        expose_over = _expose_over(check, path, raw, expose) or ()
    env = _env(check, path, raw["env"]) if "env" in raw else NO_ENV
    writable = _writable(check, (*path, "writable"), raw["writable"]) if "writable" in raw else ()
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


def _packages(check: _Checker, raw: dict[str, Any], has_default: bool) -> tuple[PackageSpec, ...]:
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
            f"must be a list of packages, not {_kind(items)}",
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
    check = _Checker(doc)
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
        default = check.repository(("composable", "default_repository"), raw["default_repository"])
    packages = _packages(check, raw, has_default="default_repository" in raw)
    repositories = _repositories(check, raw.get("repositories")) if "repositories" in raw else ()
    if check.problems:
        raise ConfigError(_in_order(check.problems))
    return Manifest(doc.file, default, packages, repositories)


def _repositories(check: _Checker, raw: object) -> tuple[RepositoryTrust, ...]:
    """`repositories:`, a list of {url, verify, keys, key_fingerprint}."""
    path: KeyPath = ("composable", "repositories")
    example = "[{url: https://repo.example/fcos, key_fingerprint: <40 hex digits>}]"
    if not isinstance(raw, list):
        check.report(path, f"must be a list, not {_kind(raw)}", f"for example {example}")
        return ()
    if len(raw) > MAX_REPOSITORIES:
        check.report(
            path,
            f"lists {len(raw)} repositories, more than {MAX_REPOSITORIES}",
            "keep the ones the packages use",
        )
        return ()
    out: list[RepositoryTrust] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(raw):
        at = (*path, index)
        if not isinstance(entry, dict):
            check.report(at, f"must be a mapping, not {_kind(entry)}", f"for example {example}")
            continue
        check.keys(at, entry, REPOSITORY_KEYS)
        if "url" not in entry:
            check.report(at, "needs url:", "the repository's base URL, as in default_repository:")
            continue
        url = check.repository((*at, "url"), entry["url"])
        verification = Verification.SIGNATURE
        if "verify" in entry:
            verification = (
                check.choice((*at, "verify"), entry["verify"], Verification, "verification")
                or verification
            )
        keys: tuple[str, ...] = ()
        if "keys" in entry:
            keys = check.names((*at, "keys"), entry["keys"], "fleet.asc") or ()
            for k, name in enumerate(keys):
                if not KEY_FILE_RE.match(name):
                    check.report(
                        (*at, "keys", k),
                        f"{name!r} is not a key file name",
                        "name a file in the keys directory: NAME.asc, .gpg or .pgp",
                    )
        fingerprints: list[str] = []
        if "key_fingerprint" in entry:
            value = entry["key_fingerprint"]
            listed = [value] if isinstance(value, str) else value
            if not isinstance(listed, list) or not listed:
                check.report(
                    (*at, "key_fingerprint"),
                    "must be a fingerprint or a list of them",
                    "copy it from gpg --fingerprint KEY",
                )
                listed = []
            for k, item in enumerate(listed):
                fpr = normal_fingerprint(item) if isinstance(item, str) else None
                if fpr is None:
                    where = (*at, "key_fingerprint") + ((k,) if isinstance(value, list) else ())
                    check.report(
                        where,
                        f"{item!r} is not an OpenPGP fingerprint (40 or 64 hex digits)",
                        "copy it from gpg --fingerprint KEY",
                    )
                else:
                    fingerprints.append(fpr)
        if verification is Verification.CHECKSUM and (keys or fingerprints):
            check.report(
                (*at, "verify"),
                "is checksum, so keys: and key_fingerprint: would never be used",
                "remove them, or verify: signature",
            )
        if url is None:
            continue
        if url in seen:
            check.report(
                (*at, "url"),
                f"{url} is listed twice (first as entry {seen[url]})",
                "keep one entry per repository",
            )
            continue
        seen[url] = index
        out.append(RepositoryTrust(url, verification, tuple(keys), tuple(fingerprints)))
    return tuple(out)


def _in_order(problems: list[Problem]) -> list[Problem]:
    # Stable: problems at one position keep the order they were found in.
    return sorted(problems, key=lambda p: (p.line, p.column))


def load_manifest(path: str) -> Manifest:
    """Read and validate composable.yaml; raises ConfigError listing every problem."""
    return validate(load.load_file(path))
