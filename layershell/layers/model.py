"""The layer model: core (level 0, the host) -> arne (1, pseudo-root) -> otto (2, user).

This is the validated, in-memory form of layers.yaml: config.py validates the YAML into
it, stack.py compiles it into a cache. `layer-shell`, which runs on every call, imports
this module, so it never imports yaml, dataclasses or enum (docs/design.md, "The hot
path"). The classes are plain and immutable for that reason.
"""

from __future__ import annotations

# A layer's privilege follows from its level; nothing else decides it.
HOST, PSEUDO_ROOT, USER = "host", "pseudo-root", "user"


class Layer:
    """One layer of the stack. `writable` maps a path inside the layer to a host path
    template ({store}, {pkgs}, {state}); `home` is a template too, "" meaning the
    account's home from the password database. `limits`: an installing layer's install
    limits from layers.yaml, (key, number) pairs with sizes in bytes, validated by
    config.py and read by limits.InstallLimits; () for the defaults."""

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
