"""Shims: a package's executables on PATH, running in the user layer (otto).

A shim is a three-line shell script whose `exec` line is the executor's command line for
the package's program (sandbox.executor_argv), rendered once at expose time. Its first
line, `#!EXECUTOR --shim`, has the kernel start the executor on it, which reads the exec
line itself (enter.c): a call costs the executor alone, never a shell or Python. It runs
as whoever calls it (never root: the executor refuses), in layer 2, with the package's
profile deciding what of the caller it sees (PROFILES; docs/exposure.md has the table).

Shims are pipx-like citizens of PATH: each carries a marker line naming its package; a
file without our marker is never overwritten (a collision, reported); sync changes
exactly the package's own. Which shims, under which profile, is root's word
(layershell/packages/grants.py), never the layer account's record: a name a host program already
has on PATH is refused unless the host's manifest says `expose_over` for it, and the
identity tools (names.SENSITIVE) are refused always.
"""

from __future__ import annotations

import os
import shlex
import shutil
import stat
from dataclasses import dataclass, field

from layershell import names
from layershell.atomic import read_json_map, write_atomic, write_json
from layershell.errors import LayershellError
from layershell.exposure.shim_marks import owner_of
from layershell.layers import sandbox
from layershell.layers.model import Layer, LayerStack
from layershell.packages import grants_db
from layershell.packages.grants import Policy, Table
from layershell.packages.manifest_env import NO_ENV, EnvSettings
from layershell.packages.state import Installed
from layershell.paths import ROOTLESS, Paths

OS_RELEASE = ("usr/lib/os-release", "etc/os-release")
BIN_NAME_RE = names.EXECUTABLE

# What a strict shim passes of the caller's environment (the other profiles pass all
# of it but sandbox.DENY_ENV; docs/exposure.md, "Environment"), besides the package's
# env: pass: list.
KEEP_ENV = ("TERM", "COLORTERM", "NO_COLOR", "LANG", "LANGUAGE", "TZ", "HOME", "USER",
            "LOGNAME")  # fmt: skip
KEEP_PREFIXES = ("LC_",)
# The system PATH (sudo's secure_path, systemd's default, what root's own commands run
# with: portable._run, target.as_account_argv): a shim name found here is a host
# program, whatever PATH a particular caller has. Independent of the caller's PATH.
HOST_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")


def host_program(name: str, bin_dir: str) -> str | None:
    """The host program `name` would shadow: an entry of that name in a directory of
    the system PATH other than the shim directory itself (a link counts, even dangling:
    an alternative may point it somewhere later)."""
    own = os.path.realpath(bin_dir)
    for directory in HOST_PATH:
        if os.path.realpath(directory) == own:
            continue
        path = os.path.join(directory, name)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode):
            return path
    return None


def trusted_row(paths: Paths, row: Installed) -> str:
    """Why root must not act on a record the layer account wrote ("" if it may): its
    name, version and path must be what layershell itself would have written."""
    from layershell.packages import repo

    if not repo.NAME_RE.match(row.name) or not repo.VERSION_RE.match(row.version):
        return f"{row.name!r} {row.version!r}: not a package name and version"
    if row.path != os.path.join(paths.pkgs_dir, f"{row.name}_{row.version}"):
        return f"{row.name} {row.version}: recorded at {row.path!r}, not in {paths.pkgs_dir}"
    return ""


@dataclass(frozen=True)
class Rules:
    """What a profile lets a shim's program see of its caller."""

    network: bool
    home: str  # "rw" | "ro" | "" (not at all)
    cwd: str  # "rw" | "ro"
    own_dev: bool = False  # a /dev of its own: none of the caller's other terminals
    all_env: bool = True  # the caller's environment but sandbox.DENY_ENV, else KEEP_ENV
    # The caller's /tmp, else one of the program's own, gone at exit. Only trusted: a
    # layer program runs as its caller's uid, so every socket the caller keeps in /tmp
    # (tmux, ssh-agent, an editor's server, X11) would take its commands outside the
    # layer (the attack review's tmux run-shell writing ~/.bashrc).
    shared_tmp: bool = False


PROFILES = {
    "trusted": Rules(network=True, home="rw", cwd="rw", shared_tmp=True),
    "default": Rules(network=True, home="ro", cwd="rw"),
    "nonetwork": Rules(network=False, home="ro", cwd="rw"),
    "strict": Rules(network=False, home="", cwd="ro", own_dev=True, all_env=False),
}


@dataclass(frozen=True)
class Shim:
    name: str  # the command on PATH
    package: str
    version: str
    program: str  # path inside the layer
    profile: str
    env: EnvSettings = NO_ENV  # the package's env: (root's word)
    writable: tuple[str, ...] = ()  # the package's writable: ~/PATHs (root's word)


@dataclass
class SyncReport:
    written: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    collisions: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    shims: dict[str, Shim] = field(default_factory=dict)  # what the sync wants on PATH
    inner_pkgs: str = "/opt/pkgs"


def user_layer(stack: LayerStack) -> Layer:
    """Shims run in the least privileged layer of the stack (otto)."""
    return stack.layers[-1]


def pkgs_inner(stack: LayerStack, paths: Paths) -> str:
    for layer in stack.layers:
        for inner, template in layer.writable:
            expanded = sandbox.expand(
                template, paths.store(layer.name), paths.pkgs_dir, paths.state_dir
            )
            if expanded == paths.pkgs_dir:
                return inner
    return "/opt/pkgs"


def spec(paths: Paths, stack: LayerStack, shim: Shim) -> sandbox.Spec:
    """The sandbox a shim's program runs in (its arguments are appended at call time)."""
    rules = PROFILES.get(shim.profile, PROFILES["strict"])
    layer = user_layer(stack)
    chain = tuple((x.name, x.writable) for x in (*stack.ancestors(layer), layer))
    mounts = sandbox.layer_mounts(
        chain, "", paths.stores_dir, paths.pkgs_dir, paths.state_dir, own_writable=False
    )
    if rules.own_dev:
        mounts = sandbox.own_dev(mounts)
    if rules.shared_tmp:
        mounts = sandbox.shared_tmp(mounts)
    if rules.home:
        mounts.append((sandbox.BIND_HOME, "", rules.home, 0))
        if rules.home == "ro":
            # The program's own settings, data, state and cache, at their native paths
            # (~/.config/htop), for its package and for its own name.
            mounts += [(sandbox.BIND_XDG, "", n, 0) for n in (shim.package, shim.name)]
            mounts += [(sandbox.BIND_WRITABLE, "", w[2:], 0) for w in shim.writable]
        if paths.mode == ROOTLESS:
            # The caller's home holds layershell's own trees in rootless mode: hide the
            # stores, keep config and shims read-only, so a program cannot reach layer 1
            # or plant code that the caller would later run on the host.
            mounts += [
                (sandbox.TMPFS, paths.state_dir, "", 0o755),
                (sandbox.RO_BIND, paths.config_dir, paths.config_dir, 0),
                (sandbox.RO_BIND, paths.bin_dir, paths.bin_dir, 0),
            ]
            mounts = [m for m in mounts if m[0] != sandbox.RO_BIND or os.path.isdir(m[2])]
            # ... and the caller's login files for repositories (fetch/credentials.py) masked: a
            # package's program has no business with them (those there when the shims
            # are written: docs/security.md, known limits).
            mounts += sandbox.credential_masks(paths.root)
    env = shim.env
    # Never what every layer program is denied, whatever a grant says (core check refuses
    # it in a manifest; grants.json is root's, but this is where it would take effect).
    given = [(k, v) for k, v in env.set if not sandbox.denied_env(k)]
    passed = tuple(k for k in env.passed if not sandbox.denied_env(k))
    set_env = [("LAYERSHELL_LAYER", layer.name), *given]
    if not rules.all_env:
        set_env.insert(0, ("PATH", sandbox.LAYER_PATH))
    if not rules.home:
        set_env.append(("HOME", "/tmp"))  # strict: nothing of the caller's
    # Layer 1's trees are never bound as a cwd: they would be writable in layer 2.
    deny = [
        sandbox.expand(t, paths.store(x.name), paths.pkgs_dir, paths.state_dir)
        for x in stack.layers
        for _, t in x.writable
    ]
    deny.append(paths.state_dir)
    return sandbox.Spec(
        layer=layer.name,
        view=paths.view(layer.name),
        mounts=tuple(mounts),
        pseudo_root=False,
        network=rules.network,
        home="/tmp" if not rules.home else "",
        bind_cwd=rules.cwd,
        cwd_deny=tuple(dict.fromkeys(deny)),
        program=shim.program,
        argv0=shim.name,
        args=(),
        env=None,
        keep_all=rules.all_env,
        keep_env=(
            () if rules.all_env else (*(k for k in KEEP_ENV if rules.home or k != "HOME"), *passed)
        ),
        keep_prefixes=() if rules.all_env else KEEP_PREFIXES,
        deny_env=(*sandbox.DENY_ENV, *env.denied) if rules.all_env else env.denied,
        deny_prefixes=sandbox.DENY_PREFIXES,
        set_env=tuple(dict(set_env).items()),
        layer_path=sandbox.LAYER_PATH if rules.all_env else "",
        refuse_root=True,
    )


PLACEHOLDER = "@LAYERSHELL_"
_PROGRAM, _NAME = f"{PLACEHOLDER}PROGRAM@", f"{PLACEHOLDER}NAME@"
_PACKAGE = f"{PLACEHOLDER}PACKAGE@"


class Renderer:
    """Renders shims; the executor's command line depends only on the profile, so it is
    built once per profile and the program filled in (a sync of 1,000 packages stays
    cheap: bench/bench_install.py)."""

    def __init__(self, paths: Paths, stack: LayerStack) -> None:
        self.paths = paths
        self.stack = stack
        self._lines: dict[tuple[str, EnvSettings, tuple[str, ...]], str] = {}
        # The kernel starts the executor on the shim itself, which reads the exec line
        # (enter.c, shim_argv): no sh in between. "#!" takes one path and one word, and
        # Linux reads at most 255 bytes of it; a path it cannot carry gets sh, which
        # runs the same line.
        executor = paths.executor
        fits = len(executor) < 200 and not any(c.isspace() for c in executor)
        self._first_line = f"#!{executor} --shim" if fits else "#!/bin/sh"

    def _line(self, profile: str, env: EnvSettings, writable: tuple[str, ...]) -> str:
        key = (profile, env, writable)
        if key not in self._lines:
            template = Shim(_NAME, _PACKAGE, "", _PROGRAM, profile, env, writable)
            argv = sandbox.executor_argv(
                spec(self.paths, self.stack, template), self.paths.executor, name=_NAME
            )
            self._lines[key] = shlex.join(os.fsdecode(a) for a in argv)
        return self._lines[key]

    def render(self, shim: Shim) -> str:
        # The comment line is shell too: a field with a newline in it would put a
        # command of the record's into the script root writes. The name rules refuse
        # that already; this is the last line of defence, at the one place it matters.
        for text in (shim.name, shim.package, shim.version, shim.profile, shim.program):
            if not text.isprintable():
                raise LayershellError(
                    f"refusing to write a shim for {text!r}: not printable", "this is a bug"
                )
        # ... and no text of the environment may hold a placeholder of the line's.
        texts = (*shim.env.passed, *shim.env.denied, *(x for kv in shim.env.set for x in kv),
                 *shim.writable)  # fmt: skip
        for text in texts:
            if not text.isprintable() or PLACEHOLDER in text:
                raise LayershellError(
                    f"refusing to write a shim with {text!r} in its environment: not printable",
                    "this is a bug",
                )
        line = (
            self._line(shim.profile, shim.env, shim.writable)
            .replace(_PROGRAM, shlex.quote(shim.program))
            .replace(_NAME, shlex.quote(shim.name))
            .replace(_PACKAGE, shlex.quote(shim.package))
        )
        return (
            f"{self._first_line}\n"
            f"{names.MARKER}: shim for {shim.name} of package {shim.package} ({shim.version}, "
            f"profile {shim.profile}); core expose/unexpose manage it, do not edit.\n"
            f'exec {line} "$@"\n'
        )


def render(paths: Paths, stack: LayerStack, shim: Shim) -> str:
    return Renderer(paths, stack).render(shim)


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _open_dir(start: str | int, parts: list[str]) -> int | None:
    """A directory fd reached from `start` (a path, or a directory fd, not consumed)
    component by component without following a link: a package tree is the layer
    account's, and root must not list through its links. None if one is missing, a
    link or not a directory."""
    try:
        fd = os.open(start, _DIR_FLAGS) if isinstance(start, str) else os.dup(start)
    except OSError:
        return None
    try:
        for part in parts:
            nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nxt
    except OSError:
        os.close(fd)
        return None
    return fd


def _entry(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return None


Tree = tuple[list[str], set[str], bool]


def package_tree(pkgs_dir: str, row: Installed) -> Tree:
    """(executables of bin/, every entry of bin/, is a portable image) of `row`'s tree,
    read without following a link in it. A link in bin/ counts as a program: it is
    resolved inside the layer when the shim runs, never by root."""
    top = _open_dir(pkgs_dir, [f"{row.name}_{row.version}"])
    if top is None:
        return [], set(), False
    try:
        is_image = False
        for release in OS_RELEASE:
            where, _, leaf = release.rpartition("/")
            fd = _open_dir(top, where.split("/"))
            if fd is not None:
                is_image = is_image or _entry(fd, leaf) is not None
                os.close(fd)
        bin_fd = _open_dir(top, ["bin"])
        if bin_fd is None:
            return [], set(), is_image
        try:
            entries = set(os.listdir(bin_fd))
            programs = []
            for entry in sorted(entries):
                st = _entry(bin_fd, entry)
                if st is not None and (
                    stat.S_ISLNK(st.st_mode) or (stat.S_ISREG(st.st_mode) and st.st_mode & 0o111)
                ):
                    programs.append(entry)
            return programs, entries, is_image
        finally:
            os.close(bin_fd)
    finally:
        os.close(top)


def wanted(
    row: Installed,
    inner_pkgs: str,
    override: list[str] | None,
    policy: Policy,
    pkgs_dir: str,
    tree: Tree | None = None,
) -> list[Shim]:
    """The shims an active package should have: root's override (core expose/unexpose),
    else root's grant's `expose`, else every executable in its bin/ (none for a
    portable image, which carries a whole /usr: sh, sleep, python3...). The profile is
    the granted one (or a stricter one the record asks for)."""
    names: list[str]
    if override is not None:
        names = list(override)
    elif policy.expose is not None:
        names = list(policy.expose)
    else:
        programs, _, is_image = tree or package_tree(pkgs_dir, row)
        names = [] if is_image else programs
    return [
        Shim(
            n,
            row.name,
            row.version,
            f"{inner_pkgs}/{row.name}/bin/{n}",
            policy.profile,
            policy.env,
            policy.writable,
        )
        for n in names
        if BIN_NAME_RE.match(n)
    ]


def _shadowed(name: str, bin_dir: str) -> str | None:
    """Another program of that name on this caller's PATH (beyond the host's)."""
    path = os.pathsep.join(
        p for p in os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin").split(os.pathsep)
        if p and os.path.abspath(p) != os.path.abspath(bin_dir)
    )  # fmt: skip
    return shutil.which(name, path=path)


def refusal(shim: Shim, policy: Policy, bin_dir: str) -> str:
    """Why `shim` may not go on PATH ("" if it may)."""
    if names.sensitive(shim.name):
        return (
            f"{shim.name}: {shim.package} may not put a command of that name on PATH: it asks "
            "for passwords or changes identity, and a shim runs package code at the caller's "
            "terminal (no manifest setting allows it)"
        )
    host = host_program(shim.name, bin_dir)
    if host and shim.name not in policy.expose_over:
        return (
            f"{shim.name}: {shim.package} may not shadow the host's {host} on PATH; the "
            f"host's manifest can allow it with expose_over: [{shim.name}] for {shim.package}"
        )
    return ""


def _desired(
    paths: Paths,
    rows: list[Installed],
    overrides: dict[str, list[str] | None],
    only: set[str] | None,
    table: Table,
    inner: str,
    report: SyncReport,
) -> dict[str, Shim]:
    """name -> the shim sync puts there: the active packages' (those in `only`, if
    given) that root allows, the first package's on a clash; the rest go to `report`."""
    desired: dict[str, Shim] = {}
    for row in rows:
        if not row.active or (only is not None and row.name not in only):
            continue
        why = trusted_row(paths, row)
        if why:
            report.warnings.append(f"not exposing {why}")
            continue
        policy = table.policy(row)
        tree = package_tree(paths.pkgs_dir, row)
        for shim in wanted(row, inner, overrides.get(row.name), policy, paths.pkgs_dir, tree):
            refused = refusal(shim, policy, paths.bin_dir)
            if refused:
                report.collisions.append(refused)
                continue
            if shim.name in desired:
                report.collisions.append(
                    f"{shim.name}: both {desired[shim.name].package} and {shim.package} "
                    f"expose it; kept {desired[shim.name].package}'s"
                )
                continue
            if shim.name not in tree[1]:
                report.warnings.append(f"{row.name} has no bin/{shim.name} to expose")
                continue
            desired[shim.name] = shim
    return desired


def _write_shims(
    paths: Paths, desired: dict[str, Shim], renderer: Renderer, report: SyncReport
) -> None:
    """Write each desired shim into bin_dir unless its file is unchanged or not ours
    (a file without our marker, or another package's: a collision, left alone)."""
    for name, shim in sorted(desired.items()):
        target = os.path.join(paths.bin_dir, name)
        text = renderer.render(shim)
        if os.path.lexists(target):
            owner = owner_of(target)
            if owner is None:
                report.collisions.append(
                    f"{target} exists and was not written by layershell: left alone; "
                    f"{shim.package}'s {name} is not exposed"
                )
                continue
            if owner[1] != shim.package:
                report.collisions.append(
                    f"{target} belongs to package {owner[1]}; {shim.package}'s {name} is not "
                    "exposed"
                )
                continue
            with open(target, encoding="utf-8", errors="replace") as f:
                if f.read() == text:
                    report.unchanged.append(target)
                    continue
        write_atomic(target, text, mode=0o755)
        report.written.append(target)
        other = _shadowed(name, paths.bin_dir)
        if other:  # a host program the manifest allowed, or one of this caller's own
            report.warnings.append(f"{target} shadows {other} for callers with it first on PATH")


def sync(
    paths: Paths,
    stack: LayerStack,
    rows: list[Installed],
    overrides: dict[str, list[str] | None],
    only: set[str] | None = None,
    table: Table | None = None,
) -> SyncReport:
    """Make bin_dir hold exactly the shims the active packages want; with `only`, touch
    just those packages' shims (what an install or remove changed). What each package
    gets is root's word (`table`: grants and the host's manifest)."""
    report = SyncReport()
    inner = pkgs_inner(stack, paths)
    renderer = Renderer(paths, stack)
    table = table if table is not None else Table.load(paths)
    desired = _desired(paths, rows, overrides, only, table, inner, report)
    os.makedirs(paths.bin_dir, exist_ok=True)
    _write_shims(paths, desired, renderer, report)
    # The index (grants_db) remembers which shims each package had, so that a partial
    # sync need not read every file on PATH; a full sync rebuilds it.
    if only is None:  # a full sync: every file in bin_dir is looked at
        candidates = sorted(os.listdir(paths.bin_dir))
    else:  # only the shims these packages had
        candidates = sorted({n for names in grants_db.shims(paths, only).values() for n in names})
    for entry in candidates:
        target = os.path.join(paths.bin_dir, entry)
        owner = owner_of(target)
        if owner is None or (only is not None and owner[1] not in only):
            continue
        if entry not in desired and os.path.isfile(target):
            os.unlink(target)
            report.removed.append(target)
    index: dict[str, list[str]] = {}
    ours = set(report.written) | set(report.unchanged)
    for name, shim in desired.items():
        if os.path.join(paths.bin_dir, name) in ours:  # not a collision left alone
            index.setdefault(shim.package, []).append(name)
    grants_db.set_shims(paths, index, only)
    report.shims = {n: s for n, s in desired.items() if os.path.join(paths.bin_dir, n) in ours}
    report.inner_pkgs = inner
    return report


def load_overrides(paths: Paths) -> dict[str, list[str] | None]:
    """Per-package shim lists set by core expose/unexpose (None: back to the default)."""
    data = read_json_map(
        paths.exposure_file,
        hint="remove it: the shim lists `core expose`/`core unexpose` set are forgotten and "
        "each package gets its manifest's; set them again with those commands",
    )
    return {
        k: [str(n) for n in v] if isinstance(v, list) else None
        for k, v in data.items()
        if v is None or isinstance(v, list)
    }


def save_overrides(paths: Paths, overrides: dict[str, list[str] | None]) -> None:
    write_json(paths.exposure_file, overrides)
