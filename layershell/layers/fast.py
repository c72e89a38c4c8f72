"""The fast path's compiled file: what `layer-shell` needs to enter a layer, decided ahead.

The launcher (launcher.c) enters a layer without starting Python for the common calls
(a shell, `-c CMD`, `--layer NAME -- PROG`, a login): it reads this file, checks it still
describes this host and this caller, and execs the executor with the command line the
Python path (main.py, launch.py) would have built. Whatever it cannot decide from the file
(another account, a stale file, --help, an error to report) it hands to the Python path,
which then behaves exactly as before. docs/design.md, "The fast path", has the why.

The file is written by whoever can write the cache directory (root in system mode, the
owner in rootless mode): by core init, and whenever the stack cache is compiled again
(stack.load). The launcher trusts it only as the marshal cache is trusted, and checks
that explicitly: a regular file, not a link, owned by root (or, rootless, by the caller),
writable by nobody else, in directories only they can change.

Format: NUL-terminated fields, in the order `render` writes them. launcher.c reads them in
the same order; FORMAT names the layout and changes with it.
"""

from __future__ import annotations

import os
import pwd

from layershell.errors import PermissionRefused
from layershell.layers import access, launch, sandbox
from layershell.layers.model import Layer, LayerStack
from layershell.paths import ROOTLESS, Paths

FORMAT = "layershell-fast 1"
IF_FILE = "\x01if-file"  # the next mount (3 fields) only if this path is a regular file
FILE_NAME = "layer-shell.fast"


def file_of(paths: Paths) -> str:
    return os.path.join(paths.cache_dir, FILE_NAME)


def _fingerprint(path: str, taken: tuple[str, int, int] | None) -> list[str]:
    """layers.yaml as stack.load fingerprints it: `taken` before the stack was read
    (stack.load), else now (core init)."""
    if taken is None:
        st = os.stat(path)
        taken = (os.path.abspath(path), st.st_mtime_ns, st.st_size)
    return [taken[0], str(taken[1]), str(taken[2])]


def _top_dirs() -> list[str]:
    """How sandbox.base_mounts found /bin, /lib and the rest: each path and "link:TARGET",
    "dir" or "none", so the launcher can see that an OS update changed them."""
    found = [str(len(sandbox.TOP_DIRS))]
    for name in sandbox.TOP_DIRS:
        path = "/" + name
        if os.path.islink(path):
            found += [path, "link:" + os.readlink(path)]
        else:
            found += [path, "dir" if os.path.isdir(path) else "none"]
    return found


def _entry(stack: LayerStack, layer: Layer, paths: Paths, pw: pwd.struct_passwd,
           default: bool) -> list[str]:  # fmt: skip
    home = launch.home_of(layer, paths, pw.pw_dir)
    chain = tuple((x.name, x.writable) for x in (*stack.ancestors(layer), layer))
    mounts = sandbox.layer_mounts(
        chain, home, paths.stores_dir, paths.pkgs_dir, paths.state_dir, every_mask=True
    )
    masks = set(sandbox.credential_masks(home, only_present=False)) if home else set()
    spec = sandbox.Spec(
        layer=layer.name, view=paths.view(layer.name), mounts=(), pseudo_root=layer.level == 1,
        network=layer.network, program="", args=(),
    )  # fmt: skip
    head = [
        *sandbox.executor_head(spec, paths.executor, "layer-shell"),
        *[x for m in mounts for x in ([IF_FILE, m[1]] if m in masks else []) +
          sandbox.mount_options((m,))],
        *sandbox.layer_options(spec),
    ]  # fmt: skip
    dirs = launch.host_dirs(stack, layer, paths, home) if paths.mode == ROOTLESS else []
    return [
        str(pw.pw_uid), pw.pw_name, pw.pw_dir, layer.name, "1" if default else "0", home,
        layer.shell, str(len(dirs)), *dirs, str(len(head)), *(os.fsdecode(x) for x in head),
    ]  # fmt: skip


def _entries(stack: LayerStack, paths: Paths) -> list[list[str]]:
    """One entry per (account, layer) the account may enter itself, above core."""
    if paths.mode == ROOTLESS:
        pw = pwd.getpwuid(os.getuid())
        mine = stack.with_account(pw.pw_name)
        default = access.default_layer(mine, paths.mode, pw.pw_uid, pw.pw_name)
        return [_entry(mine, x, paths, pw, x == default) for x in mine.layers[1:]]
    found: list[list[str]] = []
    for account in dict.fromkeys(x.account for x in stack.layers[1:]):
        try:
            pw = pwd.getpwnam(account)
        except KeyError:
            continue  # not created yet: core init compiles again once it is
        if pw.pw_uid == 0:
            continue  # root hands over through PAM: always the Python path
        default = access.default_layer(stack, paths.mode, pw.pw_uid, account)
        for layer in stack.layers[1:]:
            try:
                access.check_entry(stack, paths.mode, pw.pw_uid, account, layer)
            except PermissionRefused:
                continue
            found.append(_entry(stack, layer, paths, pw, layer == default))
    return found


def render(stack: LayerStack, paths: Paths, env: dict[str, str] | None = None,
           fingerprint: tuple[str, int, int] | None = None) -> bytes:  # fmt: skip
    """The compiled file for `stack` as `paths` lays it out (rootless: for this caller).
    `fingerprint`: layers.yaml's, as it was when `stack` was read (stack.load)."""
    env = dict(os.environ) if env is None else env
    if paths.mode == ROOTLESS:
        where = [paths.root, env.get("XDG_CONFIG_HOME", ""), env.get("XDG_DATA_HOME", "")]
    else:
        where = [paths.root, "", ""]
    entries = _entries(stack, paths)
    fields = [
        FORMAT, paths.mode, *where, paths.config_dir, paths.state_dir, paths.layers_file,
        *_fingerprint(stack.source, fingerprint), *_top_dirs(), paths.executor,
        str(len(launch.LOGIN_KEEP)), *launch.LOGIN_KEEP, str(len(launch.DROP)), *launch.DROP,
        sandbox.LAYER_PATH,
        str(len(entries)), *(x for e in entries for x in e),
    ]  # fmt: skip
    return b"".join(os.fsencode(x) + b"\0" for x in fields)


def read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read(1 << 20)
    except OSError:
        return None


def write(stack: LayerStack, paths: Paths,
          fingerprint: tuple[str, int, int] | None = None) -> bool:  # fmt: skip
    """Compile the file next to the stack cache if it is missing or says something else
    than it would now; whether it wrote. Raises OSError."""
    path = file_of(paths)
    data = render(stack, paths, fingerprint=fingerprint)
    if read(path) == data:
        return False
    from layershell.atomic import write_atomic

    write_atomic(path, data, mode=0o644)
    return True


def refresh(stack: LayerStack, paths: Paths, fingerprint: tuple[str, int, int]) -> None:
    """write(), as the one who reads the stack may (a new account, a changed home, an OS
    update's /lib): best effort. otto in system mode may not write it, and the launcher
    then takes the Python path until root runs core (any command that reads the stack)."""
    try:
        write(stack, paths, fingerprint)
    except (OSError, KeyError):
        pass
