"""The layer stack: core (level 0, the host) -> arne (1, pseudo-root) -> otto (2, user).

This is the validated, in-memory form of layers.yaml. Reading YAML (with line marks for
error messages) lives in config.py; this module holds the model and a compiled cache so
that `layer-shell`, which runs on every call, never imports yaml, dataclasses or enum
(docs/design.md, "The hot path"). The classes are plain and immutable for that reason.
"""

from __future__ import annotations

import marshal
import os

CACHE_FORMAT = 2  # 2: Layer.limits

# A layer's privilege follows from its level; nothing else decides it.
HOST, PSEUDO_ROOT, USER = "host", "pseudo-root", "user"


class Layer:
    """One layer of the stack. `writable` maps a path inside the layer to a host path
    template ({store}, {pkgs}, {state}); `home` is a template too, "" meaning the
    account's home from the password database. `limits`: an installing layer's install
    limits from layers.yaml, (key, number) pairs with sizes in bytes, validated by
    config.py and read by install.InstallLimits; () for the defaults."""

    __slots__ = (
        "account", "home", "level", "limits", "name", "network", "parent", "shell", "writable",
    )  # fmt: skip

    name: str
    level: int
    account: str
    parent: str
    home: str
    writable: tuple[tuple[str, str], ...]
    network: bool
    shell: str
    limits: tuple[tuple[str, int | float], ...]

    def __init__(
        self,
        name: str,
        level: int,
        account: str,
        parent: str = "",
        home: str = "",
        writable: tuple[tuple[str, str], ...] = (),
        network: bool = True,
        shell: str = "/bin/bash",
        limits: tuple[tuple[str, int | float], ...] = (),
    ) -> None:
        for key, value in (
            ("name", name),
            ("level", level),
            ("account", account),
            ("parent", parent),
            ("home", home),
            ("writable", tuple((str(a), str(b)) for a, b in writable)),
            ("network", bool(network)),
            ("shell", shell),
            ("limits", tuple((str(k), v) for k, v in limits)),
        ):
            object.__setattr__(self, key, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Layer is immutable")

    @property
    def kind(self) -> str:
        return HOST if self.level == 0 else PSEUDO_ROOT if self.level == 1 else USER

    def as_tuple(self) -> tuple[object, ...]:
        return (
            self.name,
            self.level,
            self.account,
            self.parent,
            self.home,
            self.writable,
            self.network,
            self.shell,
            self.limits,
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Layer) and self.as_tuple() == other.as_tuple()

    def __hash__(self) -> int:
        return hash(self.as_tuple())

    def __repr__(self) -> str:
        return f"Layer({self.name!r}, level={self.level}, account={self.account!r})"


class LayerStack:
    """The ordered layers, level 0 first. `source` is the file they came from."""

    __slots__ = ("layers", "source")

    layers: tuple[Layer, ...]
    source: str

    def __init__(self, layers: tuple[Layer, ...], source: str) -> None:
        object.__setattr__(self, "layers", tuple(layers))
        object.__setattr__(self, "source", source)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("LayerStack is immutable")

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, LayerStack)
            and self.layers == other.layers
            and self.source == other.source
        )

    def __hash__(self) -> int:
        return hash((self.layers, self.source))

    def get(self, name: str) -> Layer | None:
        for layer in self.layers:
            if layer.name == name:
                return layer
        return None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(layer.name for layer in self.layers)

    def ancestors(self, layer: Layer) -> tuple[Layer, ...]:
        """The layers below `layer` that a sandbox shows read-only (levels 1..level-1)."""
        return tuple(x for x in self.layers if 0 < x.level < layer.level)

    def with_account(self, account: str) -> LayerStack:
        """Rootless mode: every layer maps to the calling account."""
        return LayerStack(
            tuple(
                Layer(
                    x.name,
                    x.level,
                    account,
                    x.parent,
                    x.home,
                    x.writable,
                    x.network,
                    x.shell,
                    x.limits,
                )
                for x in self.layers
            ),
            self.source,
        )


def data_dir() -> str:
    """profiles/ and units/: inside the wheel (layershell/_data) or the checkout."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    packaged = os.path.join(here, "_data")
    if os.path.isdir(packaged):
        return packaged
    return os.path.dirname(here)


def shipped_layers_file() -> str:
    return os.path.join(data_dir(), "profiles", "layers.yaml")


def stack_file(config_file: str) -> str:
    """The operator's layers.yaml if there is one, else the shipped default."""
    return config_file if os.path.exists(config_file) else shipped_layers_file()


def _fingerprint(path: str) -> tuple[str, int, int]:
    st = os.stat(path)
    return (os.path.abspath(path), st.st_mtime_ns, st.st_size)


def read_cache(cache_file: str, source: str) -> LayerStack | None:
    """The compiled stack if the cache exists and matches `source` exactly."""
    try:
        with open(cache_file, "rb") as f:
            data = marshal.load(f)
        if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
            return None
        if tuple(data.get("fingerprint", ())) != _fingerprint(source):
            return None
        return LayerStack(tuple(Layer(*row) for row in data["layers"]), source)
    except (OSError, EOFError, ValueError, TypeError, KeyError):
        return None


def write_cache(
    cache_file: str, stack: LayerStack, fingerprint: tuple[str, int, int] | None = None
) -> bool:
    """Best effort: the cache only saves time, so a caller that cannot write it
    (otto in system mode) simply parses YAML next time. `fingerprint` is the source's,
    taken before it was parsed, so an edit during the parse leaves the cache stale."""
    data = {
        "format": CACHE_FORMAT,
        "fingerprint": fingerprint or _fingerprint(stack.source),
        "layers": [layer.as_tuple() for layer in stack.layers],
    }
    tmp = f"{cache_file}.{os.getpid()}.tmp"
    try:
        if os.path.dirname(cache_file):
            os.makedirs(os.path.dirname(cache_file), exist_ok=True)
        with open(tmp, "wb") as f:
            marshal.dump(data, f)
        os.chmod(tmp, 0o644)
        os.replace(tmp, cache_file)
        return True
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        return False


def load(config_file: str, cache_file: str) -> LayerStack:
    """The layer stack: from the compiled cache when it is fresh, else from YAML
    (validated; raises ConfigError listing every problem)."""
    source = stack_file(config_file)
    cached = read_cache(cache_file, source)
    if cached is not None:
        return cached
    from layershell.layers import config

    try:
        fingerprint = _fingerprint(source)
    except OSError:
        fingerprint = None
    stack = config.load_stack(source)
    if fingerprint is not None:
        write_cache(cache_file, stack, fingerprint)
    return stack
