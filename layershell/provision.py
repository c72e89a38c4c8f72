"""`core init`: make the layer stack real on this host (or under --root).

Creates each layer's store, views and writable trees with the right owners and modes,
installs the PAM service and the `layer-shell` launcher, compiles the stack cache and,
with create_users, the layer accounts (layer-shell as their login shell). Running it
again changes nothing that is already right; it never overwrites a file it did not write.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

from layershell import accounts, sandbox, stack
from layershell.atomic import write_atomic
from layershell.errors import LayershellError, PermissionRefused
from layershell.paths import ROOTLESS, Paths
from layershell.stack import Layer, LayerStack

MARKER = "# Managed by layershell"


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
        "from layershell.shell_main import main; main(sys.argv[1:])"
    )


def launcher_text() -> str:
    """The #! script launcher, used when no C compiler is available."""
    return (
        f"#!{sys.executable} -IS\n"
        f"{MARKER}: the layer-shell launcher (core init writes it).\n"
        f"import sys; sys.path[:0] = {_search_path()!r}\n"
        "from layershell.shell_main import main; main()\n"
    )


def compile_c(source_name: str, defines: dict[str, str]) -> bytes | None:
    """Compile one of layershell's C files (launcher.c, enter.c) with string defines;
    None without a C compiler. Built in a temporary directory; the caller installs the
    bytes atomically."""
    import shutil
    import subprocess
    import tempfile

    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    source = os.path.join(os.path.dirname(os.path.abspath(__file__)), source_name)

    def c_string(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "a.out")
        flags = [f"-D{k}={c_string(v)}" for k, v in {**defines, "MARKER": MARKER}.items()]
        result = subprocess.run(
            [cc, "-O2", "-Wall", "-o", out, source, *flags],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise LayershellError(
                f"cannot compile {source_name}: {result.stderr.strip()}",
                "install a working C compiler (apt-get install gcc libc6-dev)",
            )
        with open(out, "rb") as f:
            return f.read()


def compile_launcher() -> bytes | None:
    """The launcher as an ELF binary that keeps argv[0] (login shells), or None."""
    return compile_c("launcher.c", {"PYTHON": sys.executable, "CODE": launcher_code()})


def compile_helper(existing: bytes | None = None) -> bytes:
    """layershell-enter, the executor every layer entry and shim goes through. Without
    a compiler, a helper already in place (and carrying our marker) is kept."""
    built = compile_c("enter.c", {})
    if built is None and existing is not None:
        return existing  # installed with the image (no compiler on Fedora CoreOS)
    if built is None:
        raise LayershellError(
            "no C compiler: core init builds layershell-enter (layershell/enter.c) with one",
            "install gcc and libc6-dev (Debian) or gcc and glibc-devel (Fedora), then rerun",
        )
    return built


def _ensure_dir(path: str, mode: int, owner: tuple[int, int] | None, report: Report) -> None:
    created = not os.path.isdir(path)
    os.makedirs(path, mode=mode, exist_ok=True)
    st = os.stat(path)
    changed = (st.st_mode & 0o7777) != mode
    os.chmod(path, mode)
    if owner is not None and (st.st_uid, st.st_gid) != owner:
        os.chown(path, *owner)
        changed = True
    if created:
        report.done.append(f"created {path}")
        return
    elif changed:
        report.done.append(f"fixed owner/mode of {path}")
    else:
        report.unchanged.append(path)


def _ours(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data if MARKER.encode() in data else None


def _write_managed(path: str, data: str | bytes, mode: int, report: Report) -> None:
    """Write `data` unless a file we did not write is already there (pipx's rule)."""
    if isinstance(data, str):
        data = data.encode()
    try:
        with open(path, "rb") as f:
            current: bytes | None = f.read()
    except FileNotFoundError:
        current = None
    if current == data:
        report.unchanged.append(path)
        return
    if current is not None and MARKER.encode() not in current:
        report.warnings.append(f"left {path} alone: it was not written by layershell")
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_atomic(path, data, mode=mode)
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
    try:
        with open(shells, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        text = ""
    if shell in text.split():
        report.unchanged.append(shells)
        return
    os.makedirs(os.path.dirname(shells), exist_ok=True)
    write_atomic(shells, text + ("" if text.endswith("\n") or not text else "\n") + shell + "\n")
    report.done.append(f"added {shell} to {shells}")


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
        os.makedirs(os.path.dirname(home), exist_ok=True)
    created = accounts.create(layer.account, home=home, shell=launcher)
    report.done.append(f"created account {created.name} (uid {created.uid}, shell {launcher})")
    return created


def _init_layer(
    layer: Layer, paths: Paths, owner: tuple[int, int] | None, report: Report, *, home: str
) -> None:
    _ensure_dir(paths.store(layer.name), 0o755, owner, report)
    _ensure_dir(paths.view(layer.name), 0o755, None, report)
    for _, template in layer.writable:
        target = sandbox.expand(template, paths.store(layer.name), paths.pkgs_dir, paths.state_dir)
        _ensure_dir(target, 0o755, owner, report)
    if home:
        path = sandbox.expand(home, paths.store(layer.name), paths.pkgs_dir, paths.state_dir)
        _ensure_dir(path, 0o700, owner, report)


UNITS = (
    "layershell-firstboot.service", "layershell-inbox.path", "layershell-inbox.service",
    "layershell-update.timer", "layershell-update.service", "layershell-os-update.service",
    "layershell-repair.path", "layershell-repair.service",
)  # fmt: skip
ENABLED = (
    "layershell-firstboot.service", "layershell-inbox.path", "layershell-update.timer",
    "layershell-os-update.service", "layershell-repair.path",
)  # fmt: skip
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
    `systemctl preset` (offline with --root), never hand-made symlinks."""
    unit_dir = os.path.join(paths.root, "etc/systemd/system")
    for unit in UNITS:
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
        f"{MARKER}: enable layershell's units.\n" + "".join(f"enable {u}\n" for u in ENABLED),
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
        [systemctl, f"--root={paths.root}", "preset", *ENABLED],
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


def _layer_dirs(layer: Layer, paths: Paths, home: str) -> list[str]:
    store = paths.store(layer.name)
    dirs = [sandbox.expand(t, store, paths.pkgs_dir, paths.state_dir) for _, t in layer.writable]
    if home:
        dirs.append(sandbox.expand(home, store, paths.pkgs_dir, paths.state_dir))
    return dirs


def _check_owned(layers: LayerStack, paths: Paths) -> None:
    """init hands every writable tree and home to the layer's account (chown): refuse
    any that is not inside layershell's own directories, so a typo in layers.yaml can
    never give /etc to a layer."""
    allowed = (os.path.realpath(paths.state_dir), os.path.realpath(paths.pkgs_dir))
    for layer in layers.layers[1:]:
        for path in _layer_dirs(layer, paths, layer.home):
            real = os.path.realpath(path)
            if not any(real == a or real.startswith(a + "/") for a in allowed):
                raise LayershellError(
                    f"layer {layer.name}: {path} is outside layershell's directories "
                    f"({paths.state_dir}, {paths.pkgs_dir})",
                    "use the {store}, {pkgs} or {state} placeholders in layers.yaml",
                    exit_code=2,
                )


def init(paths: Paths, *, create_users: bool = False) -> Report:
    report = Report()
    rootless = paths.mode == ROOTLESS
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
    layers = stack.load(paths.layers_file, paths.stack_cache)
    launcher = os.path.join(paths.bin_dir, "layer-shell")
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
    launcher_bytes = compile_launcher() or launcher_text().encode()
    helper_bytes = compile_helper(_ours(paths.helper))
    root_owned = None if rootless else (0, 0)
    # /opt/pkgs is not among them: it belongs to the layer whose writable trees name it.
    for directory in (paths.config_dir, paths.state_dir, paths.stores_dir, paths.views_dir,
                      paths.cache_dir, paths.inbox_dir, paths.bin_dir):  # fmt: skip
        _ensure_dir(directory, 0o755, root_owned, report)
    _write_managed(launcher, launcher_bytes, 0o755, report)
    _ensure_dir(os.path.dirname(paths.helper), 0o755, root_owned, report)
    _write_managed(paths.helper, helper_bytes, 0o755, report)
    if rootless:
        for layer in layers.layers[1:]:
            # Rootless homes live in the store too (session.home_of), never in ~ itself.
            _init_layer(layer, paths, None, report, home=layer.home or "{store}/home")
    else:
        # Layer accounts find system mode by this file (paths.detect); write it once and
        # never again: from then on it is the operator's.
        if not os.path.exists(paths.layers_file):
            with open(layers.source, "rb") as f:
                write_atomic(paths.layers_file, f.read(), mode=0o644)
            report.done.append(f"wrote {paths.layers_file} (from {layers.source})")
            layers = stack.load(paths.layers_file, paths.stack_cache)
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
    if stack.read_cache(paths.stack_cache, layers.source) is None:
        if not stack.write_cache(paths.stack_cache, layers):
            raise LayershellError(f"cannot write {paths.stack_cache}")
        report.done.append(f"compiled {paths.stack_cache}")
    else:
        report.unchanged.append(paths.stack_cache)
    return report
