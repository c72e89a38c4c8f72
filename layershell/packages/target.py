"""Where packages go: the installing (pseudo-root) layer, its account and its paths.

Packages install into a level-1 layer (arne): its account owns the package tree, the
layer's state database, download cache and lock. Root never does that work itself: it
runs the operation as the account (`as_account_argv`), so a package's bytes are only ever
parsed, unpacked and run by the account that will own them.
"""

from __future__ import annotations

import os
import pwd

from layershell import faults
from layershell.errors import LayershellError, PermissionRefused
from layershell.frozen import Frozen
from layershell.layers import launch, sandbox
from layershell.layers.model import Layer, LayerStack
from layershell.paths import ROOTLESS, SYSTEM, Paths


class Target(Frozen):
    layer: Layer
    account: str
    uid: int
    gid: int
    store: str
    pkgs_dir: str  # on the host
    pkgs_inner: str  # the same directory as the layer sees it (/opt/pkgs)

    @property
    def database(self) -> str:
        return os.path.join(self.store, "state.db")

    @property
    def lock_file(self) -> str:
        return os.path.join(self.store, "lock")

    @property
    def generations_file(self) -> str:
        """The newest generation of each signed repository this layer accepted."""
        return os.path.join(self.store, "repositories.json")

    @property
    def holds_file(self) -> str:
        """Packages `core update` leaves where they are (core hold, a rollback)."""
        return os.path.join(self.store, "holds.json")

    @property
    def cache_dir(self) -> str:
        return os.path.join(self.store, "cache")

    @property
    def log_dir(self) -> str:
        return os.path.join(self.store, "logs")

    @property
    def staging_dir(self) -> str:
        return os.path.join(self.pkgs_dir, ".staging")

    @property
    def trash_dir(self) -> str:
        return os.path.join(self.pkgs_dir, ".trash")

    def package_dir(self, name: str, version: str) -> str:
        return os.path.join(self.pkgs_dir, f"{name}_{version}")

    def inner_dir(self, name: str, version: str) -> str:
        return os.path.join(self.pkgs_inner, f"{name}_{version}")


DELEGATED_ENV = "LAYERSHELL_DELEGATED"


def installing_layers(stack: LayerStack) -> tuple[Layer, ...]:
    return tuple(layer for layer in stack.layers if layer.level == 1)


def _pkgs_mapping(layer: Layer, paths: Paths) -> str:
    store = paths.store(layer.name)
    for inner, template in layer.writable:
        if sandbox.expand(template, store, paths.pkgs_dir, paths.state_dir) == paths.pkgs_dir:
            return inner
    raise LayershellError(
        f"layer {layer.name} has no writable tree for packages",
        'add  /opt/pkgs: "{pkgs}"  to its writable: list in layers.yaml',
    )


def target_for(paths: Paths, stack: LayerStack, user: str | None = None) -> Target:
    """The installing layer for `user` (an account name; None = the level-1 layer)."""
    if paths.mode == ROOTLESS and os.getuid() == 0:
        raise PermissionRefused(
            "rootless mode is for ordinary users; as root it would handle packages as root",
            "use system mode (sudo core ...), where root hands the work to the layer account",
        )
    if not os.path.exists(paths.executor):
        # Without the executor nothing runs in a layer (install.sh, shims, completions):
        # say so before anything is fetched or recorded.
        raise LayershellError(
            f"layershell is not set up here ({paths.mode} mode): core init has not run",
            "run core init first; it creates the layer stores, the executor and the shim directory",
        )
    candidates = installing_layers(stack)
    if user is not None and paths.mode == SYSTEM:
        matching = [x for x in candidates if x.account == user]
        if not matching:
            owners = ", ".join(f"{x.account} ({x.name})" for x in candidates)
            raise LayershellError(
                f"account {user!r} does not own a layer that installs packages",
                f"packages install into a pseudo-root layer: {owners}",
                exit_code=2,
            )
        layer = matching[0]
    else:
        layer = candidates[0]
    if paths.mode == ROOTLESS:
        pw = pwd.getpwuid(os.getuid())
    else:
        try:
            pw = pwd.getpwnam(layer.account)
        except KeyError:
            raise LayershellError(
                f"account {layer.account} (layer {layer.name}) does not exist",
                "create it: core init --create-users",
            ) from None
    return Target(
        layer=layer,
        account=pw.pw_name,
        uid=pw.pw_uid,
        gid=pw.pw_gid,
        store=paths.store(layer.name),
        pkgs_dir=paths.pkgs_dir,
        pkgs_inner=_pkgs_mapping(layer, paths),
    )


def must_run_as_account(target: Target) -> bool:
    """True when the caller is root and must hand the work to the layer's account;
    raises when the caller is neither root nor that account."""
    uid = os.getuid()
    if uid == target.uid:
        return False
    if uid == 0:
        return True
    me = pwd.getpwuid(uid).pw_name
    raise PermissionRefused(
        f"{me} cannot change layer {target.layer.name}: it belongs to {target.account}",
        f"run it as {target.account}, or as root (sudo core ...)",
    )


def as_account_argv(paths: Paths, args: list[str]) -> tuple[list[str], dict[str, str]]:
    """argv and environment to re-run `core ARGS` as the layer's account."""
    env = {
        k: v for k, v in os.environ.items() if k in ("TERM", "LANG", "NO_COLOR") or k[:3] == "LC_"
    }
    # Test hooks (crash points, lock order) and the download limits (fetch/limits.py) reach
    # the account's process as they reached root's.
    for name in (
        faults.CRASH_ENV,
        "LAYERSHELL_LOCK_ORDER",
        "LAYERSHELL_FETCH_MIN_RATE",
        "LAYERSHELL_FETCH_GRACE",
        "LAYERSHELL_FETCH_MAX_SIZE",
    ):
        if os.environ.get(name):
            env[name] = os.environ[name]
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
    env["LAYERSHELL_MODE"] = SYSTEM
    env[DELEGATED_ENV] = "1"  # root syncs shims and services itself afterwards
    if paths.root != "/":
        env["LAYERSHELL_ROOT"] = paths.root
    argv = launch.this_python("from layershell.cli import main; sys.argv[0] = 'core'; main()")
    return [*argv, *args], env
