"""Where layershell keeps things, in system mode and in rootless mode.

System mode uses the paths of DESIGN.md under one root ("/" on a real host, a scratch
directory in tests and when preparing an image). Rootless mode keeps everything in the
caller's XDG directories so a user without root gets the same layout.

This module is on the `layer-shell` hot path: it imports only os and uses a plain
slotted class instead of a dataclass (importing dataclasses costs ~5 ms; see
docs/design.md, "The hot path").
"""

from __future__ import annotations

import os

SYSTEM = "system"
ROOTLESS = "rootless"

ROOT_ENV = "LAYERSHELL_ROOT"
MODE_ENV = "LAYERSHELL_MODE"


class Paths:
    """Every path layershell reads or writes. Immutable."""

    __slots__ = (
        "bin_dir",
        "config_dir",
        "inbox_dir",
        "man_dir",
        "mode",
        "pam_dir",
        "pkgs_dir",
        "portables_dir",
        "root",
        "state_dir",
    )

    mode: str
    root: str
    config_dir: str
    state_dir: str
    pkgs_dir: str
    inbox_dir: str
    bin_dir: str
    man_dir: str
    portables_dir: str
    pam_dir: str

    def __init__(self, mode: str, root: str, **dirs: str) -> None:
        object.__setattr__(self, "mode", mode)
        object.__setattr__(self, "root", root)
        for name, value in dirs.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Paths is immutable")

    def __repr__(self) -> str:
        return f"Paths(mode={self.mode!r}, root={self.root!r}, state_dir={self.state_dir!r})"

    @classmethod
    def system(cls, root: str = "/") -> Paths:
        root = os.path.abspath(root)

        def at(path: str) -> str:
            return os.path.join(root, path.lstrip("/"))

        return cls(
            SYSTEM,
            root,
            config_dir=at("/etc/layershell"),
            state_dir=at("/var/lib/layershell"),
            pkgs_dir=at("/opt/pkgs"),
            inbox_dir=at("/opt/inbox"),
            bin_dir=at("/usr/local/bin"),
            man_dir=at("/usr/local/share/man"),  # man-db's MANDATORY_MANPATH
            portables_dir=at("/var/lib/portables"),
            pam_dir=at("/etc/pam.d"),
        )

    @classmethod
    def rootless(cls, home: str, env: dict[str, str] | None = None) -> Paths:
        env = dict(os.environ) if env is None else env
        config_home = env.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
        data_home = env.get("XDG_DATA_HOME") or os.path.join(home, ".local", "share")
        state = os.path.join(data_home, "layershell")
        return cls(
            ROOTLESS,
            home,
            config_dir=os.path.join(config_home, "layershell"),
            state_dir=state,
            pkgs_dir=os.path.join(state, "pkgs"),
            inbox_dir=os.path.join(state, "inbox"),
            bin_dir=os.path.join(home, ".local", "bin"),
            # man-db finds it from ~/.local/bin on PATH (<dir>/../share/man)
            man_dir=os.path.join(data_home, "man"),
            portables_dir=os.path.join(state, "portables"),
            pam_dir="",  # rootless mode never opens PAM sessions
        )

    # Derived paths: one place names every file, so nothing else joins strings.
    @property
    def layers_file(self) -> str:
        return os.path.join(self.config_dir, "layers.yaml")

    @property
    def manifest_file(self) -> str:
        return os.path.join(self.config_dir, "composable.yaml")

    @property
    def keys_dir(self) -> str:
        """The OpenPGP public keys trusted to sign repositories (docs/repository.md)."""
        return os.path.join(self.config_dir, "keys")

    @property
    def stores_dir(self) -> str:
        return os.path.join(self.state_dir, "layers")

    def store(self, layer: str) -> str:
        return os.path.join(self.stores_dir, layer)

    @property
    def views_dir(self) -> str:
        return os.path.join(self.state_dir, "views")

    def view(self, layer: str) -> str:
        return os.path.join(self.views_dir, layer)

    @property
    def executor(self) -> str:
        """The executor that enters layers (enter.c), installed by core init."""
        return os.path.join(self.state_dir, "libexec", "layershell-enter")

    @property
    def cache_dir(self) -> str:
        return os.path.join(self.state_dir, "cache")

    @property
    def stack_cache(self) -> str:
        return os.path.join(self.cache_dir, "layers.marshal")

    @property
    def database(self) -> str:
        return os.path.join(self.state_dir, "state.db")

    @property
    def lock_file(self) -> str:
        return os.path.join(self.state_dir, "lock")

    # State files, each named once (the modules that own them say what they hold).
    @property
    def grants_db(self) -> str:
        """What root granted each package, and the shims written for it (grants_db.py)."""
        return os.path.join(self.state_dir, "grants.db")

    @property
    def grants_file(self) -> str:
        """grants.db's grants as an older layershell kept them (moved in, then removed)."""
        return os.path.join(self.state_dir, "grants.json")

    @property
    def shims_file(self) -> str:
        """grants.db's shim index as an older layershell kept it (likewise)."""
        return os.path.join(self.state_dir, "shims.json")

    @property
    def exposure_file(self) -> str:
        """core expose/unexpose's choices of programs."""
        return os.path.join(self.state_dir, "exposure.json")

    @property
    def services_file(self) -> str:
        """core expose/unexpose's choices of units."""
        return os.path.join(self.state_dir, "services.json")

    @property
    def portables_file(self) -> str:
        """What is attached, at which version."""
        return os.path.join(self.state_dir, "portables.json")

    @property
    def portable_names_file(self) -> str:
        """The image name each package was attached as."""
        return os.path.join(self.state_dir, "portables-names.json")

    @property
    def portables_failed_file(self) -> str:
        """Versions whose service did not start."""
        return os.path.join(self.state_dir, "portables-failed.json")

    @property
    def manpages_file(self) -> str:
        """The manual pages linked, and for which package."""
        return os.path.join(self.state_dir, "manpages.json")

    @property
    def completers_dir(self) -> str:
        """The completers of packages' programs (exposure/completions.py)."""
        return os.path.join(self.state_dir, "complete")

    @property
    def journal_file(self) -> str:
        """The operation journal: a root operation in progress."""
        return os.path.join(self.state_dir, "operation.json")

    @property
    def journal_failed_file(self) -> str:
        """A journal a repair gave up on."""
        return os.path.join(self.state_dir, "operation.failed.json")

    @property
    def journal_lock(self) -> str:
        """One root operation at a time."""
        return os.path.join(self.state_dir, "operation.lock")

    @property
    def os_version_file(self) -> str:
        """The OS version packages were last resolved for."""
        return os.path.join(self.state_dir, "os-version")

    @property
    def firstboot_stamp(self) -> str:
        """core firstboot ran to its end here."""
        return os.path.join(self.state_dir, "firstboot.stamp")


def detect(
    root: str | None = None,
    rootless: bool | None = None,
    env: dict[str, str] | None = None,
    uid: int | None = None,
    home: str | None = None,
) -> Paths:
    """Choose the mode and paths for this caller.

    Order: an explicit --rootless or LAYERSHELL_MODE=rootless; an explicit --system or
    LAYERSHELL_MODE=system; an explicit root (--root or LAYERSHELL_ROOT) means system mode
    under it; root itself is system mode;
    an ordinary user is in system mode when /etc/layershell/layers.yaml exists and
    rootless mode otherwise (like toolbox: it just works for a user on their own).
    """
    env = dict(os.environ) if env is None else env
    uid = os.getuid() if uid is None else uid
    mode = env.get(MODE_ENV, "")
    forced_system = rootless is False or (rootless is None and mode == SYSTEM)
    if rootless is None:
        rootless = mode == ROOTLESS
    if not rootless:
        root = root or env.get(ROOT_ENV) or None
        if root is not None or uid == 0 or forced_system:
            return Paths.system(root or "/")
        if os.path.exists(Paths.system("/").layers_file):
            return Paths.system("/")
    if home is None:
        import pwd

        home = env.get("HOME") or pwd.getpwuid(uid).pw_dir
    return Paths.rootless(home, env)
