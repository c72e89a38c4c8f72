"""`core init`: make the layer stack real on this host (or under --root).

Creates each layer's store, views and writable trees with the right owners and modes,
installs the PAM service, the `layer-shell` launcher and the executor (both built with
layershell, never compiled here: binaries.py), compiles the stack cache and, with
create_users, the layer accounts (layer-shell as their login shell). Running it
again changes nothing that is already right; it never overwrites a file it did not write.

Root works here inside trees a layer account can write (its store, /opt/pkgs, its
home), so every directory is reached through safepath: walked from "/" without following
a link the account could have planted, and changed through its descriptor. A link or a
file where a directory belongs stops init with the path and what to do, before anything
is changed. In system mode /opt/pkgs is bind-mounted onto itself nosuid,nodev (again at
every boot by layershell-mounts.service), so a setuid file a package leaves there is
inert on the host.
"""

from __future__ import annotations

import os
import stat
import sys
from dataclasses import dataclass, field

from layershell import safepath
from layershell.errors import LayershellError, PermissionRefused
from layershell.host import accounts, binaries, mounts, origin
from layershell.layers import fast, sandbox, stack
from layershell.layers.model import Layer, LayerStack
from layershell.names import MARKER
from layershell.paths import ROOTLESS, Paths


@dataclass
class Report:
    """What init did, line by line, for the user to read."""

    done: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _search_path() -> list[str]:
    import yaml

    import layershell

    return list(
        dict.fromkeys(
            os.path.dirname(os.path.dirname(os.path.abspath(m.__file__ or "")))
            for m in (layershell, yaml)
        )
    )


def launcher_code() -> str:
    """Python run by the launcher: -I -S and an explicit sys.path, so no site processing
    and no console-script boilerplate on every login (docs/design.md, "The hot path")."""
    return (
        f"import sys; sys.path[:0] = {_search_path()!r}; "
        "from layershell.layers.main import main; main(sys.argv[1:])"
    )


HINT = "remove it and run core init again"
INSTALLED = ".installed"  # beside the executor: what core init installed there


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _executor_action(path: str, built: binaries.Built) -> str | None:
    """What init does with the executor at `path`, decided before anything changes:
    None when it is this build already, else the line to report when it is written. An
    older executor that core init installed itself (the note beside it names its
    sha256) is replaced, as is one an older core init compiled (our marker, no build
    id); any other file there, stale or foreign, is refused."""
    directory, name = os.path.split(path)
    try:
        with safepath.walk(directory, hint=HINT) as d:
            current = safepath.read_file(d, name)
            note = safepath.read_file(d, name + INSTALLED)
    except safepath.MissingPath:
        current = note = None
    if current is None:
        return f"installed {path} (build {built.build})"
    if current == built.data:
        return None
    old = binaries.build_of(current)
    if note is not None and _sha256(current) in note.decode("ascii", errors="replace").split():
        return f"replaced {path}, build {old}, which core init installed, with build {built.build}"
    if MARKER.encode() in current and old is None:
        # Compiled by a core init from before build ids (it wrote no note): the
        # directory is root's alone (safepath.walk), so root wrote it; upgrading a host
        # must not need a hand-made rm.
        return f"replaced {path}, compiled by an older core init, with build {built.build}"
    if MARKER.encode() not in current:
        what = "not written by layershell"
    else:
        what = f"layershell-enter build {old}, and this layershell was built with {built.build}"
    raise LayershellError(
        f"{path} is {what}; core init did not install it, and replaces only what it did",
        f"remove it (rm {path}) and run core init again: it installs the executor this "
        f"layershell was built with (build {built.build})",
    )


def _install_executor(path: str, built: binaries.Built, action: str | None, report: Report) -> None:
    directory, name = os.path.split(path)
    note = (
        f"{MARKER}: the executor core init installed beside this file.\n"
        f"{_sha256(built.data)} build {built.build}\n"
    ).encode()
    with _own_dir(directory) as d:
        if action is not None:
            safepath.write_file(d, name, built.data, mode=0o755)
        if safepath.read_file(d, name + INSTALLED) != note:
            safepath.write_file(d, name + INSTALLED, note)
    binaries.handshake(path, built.build)  # the copy layers will run answers too
    if action is None:
        report.unchanged.append(f"{path} (build {built.build})")
    else:
        report.done.append(action)


def _ensure_dir(path: str, mode: int, owner: tuple[int, int] | None, report: Report) -> None:
    """mkdir -p, owner and mode, through descriptors (a link is refused, never followed)."""
    created, changed = safepath.ensure_dir(path, mode, owner, hint=HINT)
    if created:
        report.done.append(f"created {path}")
    elif changed:
        report.done.append(f"fixed owner/mode of {path}")
    else:
        report.unchanged.append(path)


def _own_dir(path: str) -> safepath.Dir:
    """A directory root writes its own files into: created if missing, and refused
    unless root (rootless: the caller) alone can change it, the directories above too."""
    if os.geteuid() != 0:
        return safepath.walk(path, hint=HINT, create=0o755)
    return safepath.trusted_dir(path, hint=HINT, create=True)


def _write_managed(path: str, data: str | bytes, mode: int, report: Report) -> None:
    """Write `data` unless a file we did not write is already there (pipx's rule)."""
    if isinstance(data, str):
        data = data.encode()
    name = os.path.basename(path)
    with _own_dir(os.path.dirname(path)) as d:
        st = d.lstat(name)
        if st is not None and not stat.S_ISREG(st.st_mode):
            # A link (dev.sh links layer-shell to the venv's) is not ours: never
            # written through, nor replaced.
            report.warnings.append(f"left {path} alone: it was not written by layershell")
            return
        current = safepath.read_file(d, name)
        if current == data:
            report.unchanged.append(path)
            return
        if current is not None and MARKER.encode() not in current:
            report.warnings.append(f"left {path} alone: it was not written by layershell")
            return
        safepath.write_file(d, name, data, mode=mode)
    report.done.append(f"wrote {path}")


def pam_text(pam_dir: str) -> str:
    """Debian's or Fedora's flavour, by what the target's (else the host's) PAM has."""
    for probe in (pam_dir, "/etc/pam.d"):
        if os.path.exists(os.path.join(probe, "common-session")):
            flavour = "debian"
            break
        if os.path.exists(os.path.join(probe, "system-auth")):
            flavour = "redhat"
            break
    else:
        flavour = "debian"
    with open(os.path.join(stack.data_dir(), "profiles", "pam", f"layer-shell.{flavour}")) as f:
        return f"{MARKER}: PAM service for core shell.\n" + f.read()


def _add_shell(root: str, shell: str, report: Report) -> None:
    shells = os.path.join(root, "etc/shells")
    with _own_dir(os.path.dirname(shells)) as d:
        text = (safepath.read_file(d, "shells") or b"").decode("utf-8", errors="surrogateescape")
        if shell in text.split():
            report.unchanged.append(shells)
            return
        text += ("" if text.endswith("\n") or not text else "\n") + shell + "\n"
        safepath.write_file(d, "shells", text.encode("utf-8", errors="surrogateescape"))
    report.done.append(f"added {shell} to {shells}")


def _extension_host(paths: Paths) -> bool:
    """core runs from the system extension, for this host (not a relocated root, which
    may become a host without it)."""
    return origin.from_extension() and paths.root == "/"


def _packaged_units(paths: Paths) -> bool:
    """layershell's units came with an OS package (the RPM puts them in
    /usr/lib/systemd/system, running /usr/bin/core): copies in /etc would hide them.
    Every one of them, or init writes its own (a missing mounts unit would leave the
    packages directory without nosuid,nodev at boot)."""
    shipped = os.path.join(paths.root, "usr/lib/systemd/system")
    try:
        for unit in UNITS:
            with open(os.path.join(shipped, unit), "rb") as f:
                if MARKER.encode() not in f.read(512):
                    return False
    except OSError:
        return False
    return True


def login_shell(paths: Paths, rootless: bool) -> str:
    """The layer accounts' shell: the extension's own /usr/bin/layer-shell when core
    runs from the system extension (it exists as soon as the image is merged, and an
    image update keeps the path), else the launcher core init writes (the venv's
    interpreter, started without site processing)."""
    if not rootless and _extension_host(paths):
        return origin.EXTENSION_SHELL
    return os.path.join(paths.bin_dir, "layer-shell")


def _account_for(
    layer: Layer, paths: Paths, create_users: bool, launcher: str, report: Report
) -> accounts.Account:
    found = accounts.lookup(layer.account)
    if found is not None:
        if found.shell != launcher:
            report.warnings.append(
                f"account {found.name} exists with shell {found.shell}; layer-shell is {launcher}"
            )
        return found
    if not create_users:
        raise LayershellError(
            f"account {layer.account} (layer {layer.name}) does not exist",
            "create it, or run: core init --create-users",
        )
    home = (
        sandbox.expand(layer.home, paths.store(layer.name), paths.pkgs_dir, paths.state_dir)
        if layer.home
        else os.path.join("/home", layer.account)
    )
    if layer.home:
        # useradd makes the home by name: its parent must hold no link of anyone's
        # (a store left by an earlier account of that name), nor the home itself.
        with safepath.walk(os.path.dirname(home), hint=HINT, create=0o755) as d:
            st = d.lstat(os.path.basename(home))
            if st is not None and not stat.S_ISDIR(st.st_mode):
                kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a directory"
                raise safepath.UnsafePath(
                    f"{home}: {kind} where the new account's home was expected", HINT
                )
    created = accounts.create(layer.account, home=home, shell=launcher)
    report.done.append(f"created account {created.name} (uid {created.uid}, shell {launcher})")
    return created


def _init_layer(
    layer: Layer, paths: Paths, owner: tuple[int, int] | None, report: Report, *, home: str
) -> None:
    _ensure_dir(paths.store(layer.name), 0o755, owner, report)
    _ensure_dir(paths.view(layer.name), 0o755, None if owner is None else (0, 0), report)
    for _, template in layer.writable:
        target = sandbox.expand(template, paths.store(layer.name), paths.pkgs_dir, paths.state_dir)
        _ensure_dir(target, 0o755, owner, report)
    if home:
        path = sandbox.expand(home, paths.store(layer.name), paths.pkgs_dir, paths.state_dir)
        _ensure_dir(path, 0o700, owner, report)


UNITS = tuple(origin.UNITS)
ENABLED = origin.ENABLED
PROFILE_WORDS = ("default", "nonetwork", "strict", "trusted")


def inbox_dirs(layers: LayerStack, paths: Paths) -> list[tuple[str, str]]:
    """(directory, account) for every /opt/inbox/<profile>/<user> of installing layers."""
    return [
        (os.path.join(paths.inbox_dir, profile, layer.account), layer.account)
        for layer in layers.layers
        if layer.level == 1
        for profile in PROFILE_WORDS
    ]


def path_dropin(dirs: list[str]) -> str:
    return f"{MARKER}: the inbox directories (a path unit watches no subdirectories).\n" + (
        "[Path]\n" + "".join(f"PathChanged={d}\n" for d in dirs)
    )


def _install_units(layers: LayerStack, paths: Paths, report: Report) -> None:
    """Units in /etc/systemd/system, enabled the systemd way: a preset file and
    `systemctl preset` (offline with --root), never hand-made symlinks. From the system
    extension, the image's own units (/usr/lib/systemd/system, enabled by its
    layershell.target) are used instead: copies an earlier core init wrote here, which
    would hide them, are removed, and only layershell-extension.service is installed
    (it makes systemd 252 load the image's units at boot)."""
    unit_dir = os.path.join(paths.root, "etc/systemd/system")
    extension = _extension_host(paths)
    if extension or _packaged_units(paths):
        for unit in UNITS:
            with open(os.path.join(stack.data_dir(), "units", unit), "rb") as f:
                _remove_copy(os.path.join(unit_dir, unit), f.read(), report)
        # The image's target enables its units; a package's are enabled here, by preset.
        installed: tuple[str, ...] = (origin.EXTENSION_UNIT,) if extension else ()
        enabled: tuple[str, ...] = installed if extension else ENABLED
    else:
        installed, enabled = UNITS, ENABLED
    for unit in installed:
        with open(os.path.join(stack.data_dir(), "units", unit), encoding="utf-8") as f:
            text = f.read()  # carries the marker; core ignition writes the same bytes
        _write_managed(os.path.join(unit_dir, unit), text, 0o644, report)
    # Paths as the host being set up sees them (under --root, without the root).
    watched = ["/" + os.path.relpath(d, paths.root) for d, _ in inbox_dirs(layers, paths)]
    dropin = os.path.join(unit_dir, "layershell-inbox.path.d", "50-inbox-dirs.conf")
    _write_managed(dropin, path_dropin(watched), 0o644, report)
    preset = os.path.join(paths.root, "etc/systemd/system-preset/50-layershell.preset")
    _write_managed(
        preset,
        f"{MARKER}: enable layershell's units.\n" + "".join(f"enable {u}\n" for u in enabled),
        0o644,
        report,
    )
    import shutil
    import subprocess

    systemctl = shutil.which("systemctl")
    if systemctl is None:
        report.warnings.append("no systemctl: layershell's units are installed but not enabled")
        return
    result = subprocess.run(
        [systemctl, f"--root={paths.root}", "preset", *enabled],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        report.warnings.append(f"systemctl preset failed: {result.stderr.strip()}")
    elif paths.root == "/" and os.path.isdir("/run/systemd/system"):
        # A running systemd (first boot): load the new drop-in and watch the new dirs,
        # and watch for interrupted operations from now on, not only after a reboot.
        subprocess.run([systemctl, "daemon-reload"], capture_output=True, check=False)
        for verb, unit in (
            ("restart", "layershell-inbox.path"),
            ("start", "layershell-repair.path"),
        ):
            subprocess.run(
                [systemctl, "--no-block", verb, unit], capture_output=True, check=False
            )  # fmt: skip


def _remove_copy(path: str, shipped: bytes, report: Report) -> None:
    """Remove the unit copy a core init of a pip installation wrote: only when its bytes
    are exactly what it writes (an edited copy, `systemctl edit --full` for one, is the
    operator's, and stays, with a warning: it hides the image's unit)."""
    name = os.path.basename(path)
    try:
        with safepath.walk(os.path.dirname(path), hint=HINT) as d:
            st = d.lstat(name)
            if st is None or not d.trusted:
                return
            if not stat.S_ISREG(st.st_mode) or safepath.read_file(d, name) != shipped:
                report.warnings.append(
                    f"left {path} alone: it is not the copy core init writes, and it hides"
                    f" the system extension's {name} (systemctl revert {name} removes it)"
                )
                return
            os.unlink(name, dir_fd=d.fd)
    except safepath.MissingPath:
        return
    report.done.append(f"removed {path}: the system extension ships its own")


def _layer_dirs(layer: Layer, paths: Paths, home: str) -> list[str]:
    store = paths.store(layer.name)
    dirs = [sandbox.expand(t, store, paths.pkgs_dir, paths.state_dir) for _, t in layer.writable]
    if home:
        dirs.append(sandbox.expand(home, store, paths.pkgs_dir, paths.state_dir))
    return dirs


def _within(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def _roots_own(paths: Paths) -> tuple[str, ...]:
    """Directories of root's under {state} that no layer may be given."""
    return (paths.views_dir, paths.cache_dir, os.path.dirname(paths.executor))


def _check_owned(layers: LayerStack, paths: Paths) -> None:
    """init hands every writable tree and home to the layer's account (chown): refuse
    any that is not, by name, the layer's own store, /opt/pkgs or a directory of its
    own under {state}, so layers.yaml can never give /etc, libexec or another layer's
    store to a layer. Names only, never where a path leads (realpath would follow the
    layer's links). Then walk every one as init will: a symbolic link or a file in
    their place stops init here, before anything is changed, each named."""
    problems: list[str] = []
    for layer in layers.layers[1:]:
        store = paths.store(layer.name)
        for path in _layer_dirs(layer, paths, layer.home):
            ok = (
                _within(path, store)
                or _within(path, paths.pkgs_dir)
                or (
                    _within(path, paths.state_dir)
                    and path != paths.state_dir
                    and not _within(path, paths.stores_dir)
                    and not any(_within(path, d) for d in _roots_own(paths))
                )
            )
            if not ok:
                raise LayershellError(
                    f"layer {layer.name}: {path} is outside layershell's directories "
                    f"for it ({store}, {paths.pkgs_dir}, or a directory of its own in "
                    f"{paths.state_dir})",
                    "use the {store}, {pkgs} or {state} placeholders in layers.yaml",
                    exit_code=2,
                )
        for path in [store, *_layer_dirs(layer, paths, layer.home)]:
            try:
                safepath.probe(path, hint=HINT)
            except safepath.UnsafePath as exc:
                problems.append(exc.message)
    if problems:
        raise safepath.UnsafePath(
            "core init changed nothing: a layer's directories are not plain directories "
            "(init follows no link a layer account could have made):\n  " + "\n  ".join(problems),
            HINT,
        )


def nosuid_dirs(layers: LayerStack, paths: Paths) -> list[str]:
    """Every host directory a layer account writes: the packages, the layers' stores
    (usr-local, homes, caches) and any other writable tree or home layers.yaml gives
    them; the outermost of each nest only. A layer's pseudo-root can chmod 4755 there
    at any time, not only while install.sh runs."""
    found = [paths.pkgs_dir, paths.stores_dir]
    for layer in layers.layers[1:]:
        found += _layer_dirs(layer, paths, layer.home)
    found = sorted(set(found))
    return [d for d in found if not any(d != top and _within(d, top) for top in found)]


def mount_nosuid(paths: Paths, report: Report, *, required: bool) -> None:
    layers = stack.load(paths)
    for directory in nosuid_dirs(layers, paths):
        mount_pkgs(directory, report, required=required)


def mount_pkgs(pkgs: str, report: Report, *, required: bool) -> None:
    """Bind-mount `pkgs` (a directory layer accounts write) onto itself nosuid,nodev,
    unless a mount with both options is already there: a setuid (or device) file a
    package leaves behind is inert on the host. Through descriptors (/proc/self/fd),
    like everything else here. Without the privilege to mount (a container), a warning,
    or an error if `required`."""
    try:
        with (
            safepath.walk(os.path.dirname(pkgs), hint=HINT) as up,
            up.child(os.path.basename(pkgs), hint=HINT) as d,
        ):
            flags = os.fstatvfs(d.fd).f_flag
            mounted = mounts.mount_id(d.fd) != mounts.mount_id(up.fd)
            if mounted and flags & os.ST_NOSUID and flags & os.ST_NODEV:
                report.unchanged.append(f"{pkgs} (mounted nosuid,nodev)")
                return
            if not mounted:
                mounts.mount(f"/proc/self/fd/{d.fd}", f"/proc/self/fd/{d.fd}", mounts.MS_BIND)
            # The bind mount now covers d: open its root, the one to remount.
            with up.child(os.path.basename(pkgs), hint=HINT) as top:
                keep = sum(ms for st, ms in mounts.KEEP if flags & st)
                try:
                    remount = (
                        mounts.MS_REMOUNT | mounts.MS_BIND | mounts.MS_NOSUID | mounts.MS_NODEV
                    )
                    mounts.mount(None, f"/proc/self/fd/{top.fd}", remount | keep)
                except OSError:
                    if not mounted:
                        mounts.umount(f"/proc/self/fd/{top.fd}")
                    raise
    except safepath.MissingPath:
        if required:
            raise
        return  # no layer keeps packages here
    except OSError as exc:
        message = f"cannot mount {pkgs} nosuid,nodev: {exc.strerror or exc}"
        hint = (
            "a setuid file a package leaves there keeps its bit on the host; mounting "
            "needs root with CAP_SYS_ADMIN (docs/layers.md)"
        )
        if required:
            raise LayershellError(message, hint) from None
        report.warnings.append(f"{message} ({hint})")
        return
    report.done.append(f"mounted {pkgs} nosuid,nodev (a bind mount onto itself)")


def _compile_cache(paths: Paths, layers: LayerStack, report: Report) -> None:
    if stack.read_cache(paths.stack_cache, layers.source) is None:
        if not stack.write_cache(paths.stack_cache, layers):
            raise LayershellError(f"cannot write {paths.stack_cache}")
        report.done.append(f"compiled {paths.stack_cache}")
    else:
        report.unchanged.append(paths.stack_cache)
    # Whether or not the cache was fresh: the accounts it names may be new (fast.py).
    compiled = fast.file_of(paths)
    try:
        wrote = fast.write(layers, paths)
    except OSError as exc:
        raise LayershellError(f"cannot write {compiled}: {exc.strerror}") from None
    (report.done if wrote else report.unchanged).append(
        f"compiled {compiled}" if wrote else compiled
    )


def init(paths: Paths, *, create_users: bool = False, mounts_only: bool = False) -> Report:
    """Everything core init does; with mounts_only just the nosuid,nodev mount of the
    packages directory (layershell-mounts.service, at every boot)."""
    report = Report()
    rootless = paths.mode == ROOTLESS
    if mounts_only:
        if rootless or os.getuid() != 0:
            raise PermissionRefused(
                "core init --mounts is for root in system mode", "run: sudo core init --mounts"
            )
        mount_nosuid(paths, report, required=True)
        return report
    if rootless and os.getuid() == 0:
        raise PermissionRefused(
            "rootless mode is for ordinary users; as root it would run packages as host root",
            "use system mode: sudo core init",
        )
    if not rootless and os.getuid() != 0:
        raise PermissionRefused(
            "core init in system mode needs root", "run: sudo core init (or use rootless mode)"
        )
    if rootless and create_users:
        raise LayershellError(
            "--create-users is for system mode", "rootless mode runs every layer as you"
        )
    layers = stack.load(paths)
    launcher = login_shell(paths, rootless)
    # Check everything that can fail before changing anything.
    if not rootless:
        _check_owned(layers, paths)
        missing = [x for x in layers.layers[1:] if accounts.lookup(x.account) is None]
        if missing and not create_users:
            raise LayershellError(
                "missing layer accounts: "
                + ", ".join(f"{x.account} (layer {x.name})" for x in missing),
                "create them, or run: core init --create-users",
            )
    # The executables hatch_build.py built: core init compiles nothing (docs/design.md).
    launcher_bytes = binaries.launcher(sys.executable, launcher_code(), fast.file_of(paths))
    executor = binaries.executor()
    executor_action = _executor_action(paths.executor, executor)
    root_owned = None if rootless else (0, 0)
    # /opt/pkgs is not among them: it belongs to the layer whose writable trees name it.
    for directory in (paths.config_dir, paths.state_dir, paths.stores_dir, paths.views_dir,
                      paths.cache_dir, paths.inbox_dir, paths.bin_dir):  # fmt: skip
        _ensure_dir(directory, 0o755, root_owned, report)
    if launcher != origin.EXTENSION_SHELL:
        _write_managed(launcher, launcher_bytes, 0o755, report)
    _ensure_dir(os.path.dirname(paths.executor), 0o755, root_owned, report)
    _install_executor(paths.executor, executor, executor_action, report)
    if rootless:
        for layer in layers.layers[1:]:
            # Rootless homes live in the store too (session.home_of), never in ~ itself.
            _init_layer(layer, paths, None, report, home=layer.home or "{store}/home")
    else:
        # Layer accounts find system mode by this file (paths.detect); write it once and
        # never again: from then on it is the operator's.
        if not os.path.exists(paths.layers_file):
            with open(layers.source, "rb") as f, _own_dir(paths.config_dir) as d:
                safepath.write_file(d, os.path.basename(paths.layers_file), f.read())
            report.done.append(f"wrote {paths.layers_file} (from {layers.source})")
            layers = stack.load(paths)
        _write_managed(os.path.join(paths.pam_dir, "layer-shell"), pam_text(paths.pam_dir),
                       0o644, report)  # fmt: skip
        _add_shell(paths.root, launcher, report)
        for layer in layers.layers[1:]:
            account = _account_for(layer, paths, create_users, launcher, report)
            _init_layer(layer, paths, (account.uid, account.gid), report, home=layer.home)
        for directory, name in inbox_dirs(layers, paths):
            # root writes, the account reads through its group (as core ignition sets it)
            found = accounts.lookup(name)
            owner = (0, found.gid) if found else (0, 0)
            _ensure_dir(os.path.dirname(directory), 0o755, (0, 0), report)
            _ensure_dir(directory, 0o750, owner, report)
        _install_units(layers, paths, report)
        mount_nosuid(paths, report, required=False)
    _compile_cache(paths, layers, report)
    return report
