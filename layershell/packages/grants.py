"""What root granted each package: the only source of what root then does as root.

A layer account's record (its state.db) is data about its own layer: which versions
exist and which is active. It is never an instruction to root (docs/exposure.md, "What
root grants"). Everything root acts on as root comes from the host's manifest
(paths.manifest_file) or from this record, which root itself writes:

    <state>/grants.db     package -> {profile, install_method, enable, start, expose,
                                      expose_over, env, source}   (grants_db.py)

written in one transaction when root runs `core install` with a manifest (the host's or
`--config`) or `--profile`, and when the inbox installs a tarball with its directory's
profile. In rootless mode the caller is both the account and the one who exposes, and
writes it in its own state directory.

The effective policy of a package (`Table.policy`): root's grant, else the host
manifest's entry, else nothing granted (profile `default`, nothing enabled or started,
every executable of bin/). The account's record may only ask for a stricter profile
(trusted < default < nonetwork < strict), never a looser one.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterable, Mapping

from layershell.errors import LayershellError
from layershell.frozen import Frozen, replace
from layershell.packages import grants_db, manifest_env
from layershell.packages.state import Installed
from layershell.paths import Paths

TYPE_CHECKING = False
if TYPE_CHECKING:
    from layershell.packages.manifest import Manifest, PackageSpec

# Loosest first: a record may move a package right (stricter), never left.
PROFILE_ORDER = ("trusted", "default", "nonetwork", "strict")
METHODS = ("copy", "symlink", "auto")


def stricter(a: str, b: str) -> str:
    """The stricter of two profiles (an unknown word counts as no request)."""
    if b not in PROFILE_ORDER:
        return a
    return a if PROFILE_ORDER.index(a) >= PROFILE_ORDER.index(b) else b


class Grant(Frozen):
    """Root's word about one package."""

    profile: str = "default"
    install_method: str = "auto"
    enable: tuple[str, ...] = ()
    start: tuple[str, ...] = ()
    expose: tuple[str, ...] | None = None  # None: every executable of bin/
    expose_over: tuple[str, ...] = ()  # host programs its shims may shadow
    source: str = ""  # where root said it, for core info
    env: manifest_env.EnvSettings = manifest_env.NO_ENV  # its shims' environment (env:)
    # Root named the profile (a manifest entry, --profile, an inbox directory): then it
    # stands, and a record asking for a stricter one (from an earlier install) does not
    # keep a changed manifest from applying.
    profile_given: bool = False
    writable: tuple[str, ...] = ()  # ~/PATHs its shims' programs may write (writable:)

    def as_json(self) -> dict[str, object]:
        return {
            "profile": self.profile,
            "install_method": self.install_method,
            "enable": list(self.enable),
            "start": list(self.start),
            "expose": None if self.expose is None else list(self.expose),
            "expose_over": list(self.expose_over),
            "env": self.env.as_json(),
            "profile_given": self.profile_given,
            "writable": list(self.writable),
            "source": self.source,
        }


NOTHING = Grant(source="nothing granted")


def from_spec(spec: PackageSpec, source: str, profile: str | None = None) -> Grant:
    """A grant from a validated manifest entry; `profile` (root's --profile, the inbox
    directory's) replaces the entry's, as it does in the record."""
    return Grant(
        profile=profile or spec.profile.value,
        install_method=spec.install_method.value,
        enable=spec.enable,
        start=spec.start,
        expose=spec.expose,
        expose_over=spec.expose_over,
        source=source,
        env=spec.env,
        profile_given=profile is not None or spec.profile_given,
        writable=spec.writable,
    )


def _names(value: object) -> tuple[str, ...] | None:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return None
    return tuple(value)


def _parse_env(raw: object) -> manifest_env.EnvSettings | None:
    """env as as_json wrote it (grants.json from before env: has none: NO_ENV)."""
    if raw is None:
        return manifest_env.NO_ENV
    if not isinstance(raw, dict):
        return None
    passed, denied, values = _names(raw.get("pass")), _names(raw.get("deny")), raw.get("set")
    if passed is None or denied is None or not isinstance(values, dict):
        return None
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in values.items()):
        return None
    names = (*passed, *denied, *values)
    if not all(manifest_env.ENV_NAME_RE.match(n) for n in names):
        return None
    if not all(v.isprintable() for v in values.values()):
        return None  # a value goes into a shim's command line
    return manifest_env.EnvSettings(passed, denied, tuple(values.items()))


def _parse(raw: object) -> Grant | None:
    """A grant read back from grants.db; None if it is not one layershell wrote."""
    if not isinstance(raw, dict):
        return None
    profile, method = raw.get("profile"), raw.get("install_method")
    enable, start = _names(raw.get("enable")), _names(raw.get("start"))
    over = _names(raw.get("expose_over"))
    expose = None if raw.get("expose") is None else _names(raw.get("expose"))
    env = _parse_env(raw.get("env"))
    given = raw.get("profile_given", False)  # not in a grants.json from before it
    writable = _names(raw.get("writable", []))
    if (
        env is None
        or writable is None
        or not all(
            w.startswith("~/") and w.isprintable() and ".." not in w.split("/") for w in writable
        )
        or not isinstance(given, bool)
        or profile not in PROFILE_ORDER
        or method not in METHODS
        or enable is None
        or start is None
        or over is None
        or (raw.get("expose") is not None and expose is None)
    ):
        return None
    return Grant(
        str(profile), str(method), enable, start, expose, over, str(raw.get("source")), env,
        given, writable,
    )  # fmt: skip


def load(paths: Paths, names: Iterable[str] | None = None) -> dict[str, Grant]:
    """Root's grants (of `names` only, if given: an install reads its own rows)."""
    out = {}
    # Grants repeat (what one manifest or one `core install` granted many packages):
    # each distinct text is decoded and checked once.
    seen: dict[str, Grant | None] = {}
    for name, body in grants_db.bodies(paths, names).items():
        if body in seen:
            grant = seen[body]
        else:
            grant = seen[body] = _parse(grants_db.decoded(paths.grants_db, name, body))
        if grant is None:
            raise LayershellError(
                f"{grants_db.where(paths)}: the grant of {name!r} is damaged",
                f"install {name} again as root (core install), or remove the entry",
            )
        out[name] = grant
    return out


def check(paths: Paths) -> None:
    """Read every grant's row without using one: a damaged database is an error for
    every listing, with its way out (tests/test_state_loss.py), not only for some; a
    damaged text is one for whatever uses that grant."""
    grants_db.bodies(paths)


def record(paths: Paths, grants: Mapping[str, Grant | None]) -> None:
    """Root's new word about these packages (one transaction); None drops a grant, so
    that the host's manifest, read live, speaks for the package again."""
    grants_db.write(paths, {k: None if v is None else v.as_json() for k, v in grants.items()})


def forget_removed(paths: Paths, rows: Iterable[Installed], only: set[str] | None) -> None:
    """Drop the grants of packages no longer in any record (of `only`, if given): a
    name root once granted and the account removed, then installs again on its own,
    gets nothing from that old word. `rows` must hold every record of `only`'s names
    (all records without `only`)."""
    present = {r.name for r in rows}
    granted = grants_db.names(paths) if only is None else set(grants_db.read(paths, only))
    try:
        record(paths, {n: None for n in granted if n not in present})
    except OSError as exc:
        # A full disk: the old word stays until the next sync with room (no package
        # can be installed meanwhile either), and the repair this is part of goes on.
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise


def may_grant(paths: Paths) -> bool:
    """Whoever exposes writes grants: root in system mode, the caller in rootless mode.
    A layer account running a command itself grants nothing (and could not write)."""
    from layershell.packages.target import DELEGATED_ENV
    from layershell.paths import ROOTLESS, SYSTEM

    if os.environ.get(DELEGATED_ENV) == "1":
        return False
    return paths.mode == ROOTLESS or (paths.mode == SYSTEM and os.getuid() == 0)


class Policy(Grant):
    """What root does for one package: a grant with the profile the record may have
    tightened, derived from root's data only."""


def host_manifest(paths: Paths) -> Manifest | None:
    """The host's manifest, or None without one; a broken one grants nothing (core check
    says why)."""
    if not os.path.exists(paths.manifest_file):
        return None
    try:
        from layershell.packages import manifest

        return manifest.load_manifest(paths.manifest_file)
    except LayershellError:
        return None


class Table:
    """Root's grants and the host manifest, read once per operation."""

    def __init__(self, grants: Mapping[str, Grant], host: Manifest | None) -> None:
        self.grants = dict(grants)
        self.host = host
        self._shown: dict[tuple[int, str], tuple[Grant, str]] = {}  # (id, profile) -> text

    @classmethod
    def load(cls, paths: Paths, names: Iterable[str] | None = None) -> Table:
        """The grants of `names` (all without), and the host's manifest."""
        return cls(load(paths, names), host_manifest(paths))

    def grant(self, name: str) -> Grant:
        if name in self.grants:
            return self.grants[name]
        spec = self.host.get(name) if self.host is not None else None
        if spec is not None and self.host is not None:
            return from_spec(spec, f"the host's manifest, {self.host.file}")
        return NOTHING

    def policy(self, row: Installed) -> Policy:
        grant = self.grant(row.name)
        return Policy(**{**vars(grant), "profile": self._profile(grant, row)})

    def policy_json(self, row: Installed) -> dict[str, object]:
        """policy(row).as_json(), without building the Policy (core info)."""
        grant = self.grant(row.name)
        return {**grant.as_json(), "profile": self._profile(grant, row)}

    def policy_text(self, row: Installed) -> str:
        """policy_json(row) as JSON text (core list, per row: the packages that share
        a grant and a profile share the text, encoded once)."""
        grant = self.grant(row.name)
        profile = self._profile(grant, row)
        key = (id(grant), profile)
        kept = self._shown.get(key)
        if kept is None or kept[0] is not grant:
            # Kept with the grant itself: its id cannot be reused while it is cached.
            text = json.dumps({**grant.as_json(), "profile": profile})
            kept = self._shown[key] = (grant, text)
        return kept[1]

    @staticmethod
    def _profile(grant: Grant, row: Installed) -> str:
        # The record may only tighten, and only where root did not name the profile: a
        # profile it asks for counts if stricter.
        asked = row.spec.get("profile") if isinstance(row.spec, dict) else None
        if grant.profile_given or not isinstance(asked, str):
            return grant.profile
        return stricter(grant.profile, asked)


def for_install(
    paths: Paths, items: Iterable[str], loaded: Manifest | None, profile: str | None
) -> dict[str, Grant | None]:
    """What root grants by running `core install ITEMS` (`loaded`: the manifest it read,
    `profile`: its --profile), as pipeline.plan_jobs records them: a manifest entry gets
    the entry, a tarball the manifest names the entry with the --profile, another
    tarball just the --profile, a reference nothing (it never reads the manifest). What
    the host's own manifest says is not copied (None): it is read live, so editing it
    and running `core expose --sync` is enough."""
    from layershell.packages import repo

    host = loaded is not None and os.path.abspath(loaded.file) == os.path.abspath(
        paths.manifest_file
    )
    where = f"core install with {loaded.file}" if loaded else "core install"

    def entry(spec: PackageSpec, said: str, prof: str | None = None) -> Grant | None:
        return None if host and prof is None else from_spec(spec, said, prof)

    out: dict[str, Grant | None] = {}
    items = list(items)
    if not items and loaded is not None:
        return {p.name: entry(p, where) for p in loaded.packages}
    for item in items:
        if "://" in item or item.startswith("file:"):
            try:
                name = repo.parse_reference(item).name
            except LayershellError:
                continue
            # A reference says nothing of exposure: what the host's manifest says of
            # the package stays in force (None: no grant of root's over it).
            named = host_manifest(paths)
            out[name] = (
                None
                if named is not None and named.get(name) is not None
                else replace(NOTHING, source=f"core install {item} (a reference)")
            )
        elif os.path.isfile(item):
            parsed = repo.split_artifact_name(os.path.basename(item))
            if parsed is None:
                continue
            spec = loaded.get(parsed[0]) if loaded is not None else None
            said = f"{where} --profile {profile}" if profile else where
            if spec is not None:
                out[parsed[0]] = entry(spec, said, profile)
            else:
                out[parsed[0]] = Grant(
                    profile=profile or "default", source=said, profile_given=profile is not None
                )
        elif loaded is not None:
            spec = loaded.get(item)
            if spec is not None:
                out[item] = entry(spec, where)
    return out
