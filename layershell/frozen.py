"""Frozen record classes for what `core list` imports, without dataclasses: importing
dataclasses (inspect, ast, dis and tokenize behind it) cost a listing about 5 ms of its
50 (docs/design.md, "The hot path"). A subclass of `Frozen` declares its fields as
annotations, with defaults as class values (`field(default_factory=...)` for one made per
instance), and gets what a frozen dataclass has: __init__ (by position or keyword), ==
and hash over its fields, repr, immutability, and `replace`. mypy reads it as a frozen
dataclass (dataclass_transform)."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, ClassVar, TypeVar

    from typing_extensions import dataclass_transform

    T = TypeVar("T", bound="Frozen")
else:

    def dataclass_transform(**_: object) -> object:
        return lambda cls: cls


class _Factory:
    __slots__ = ("make",)

    def __init__(self, make: Callable[[], object]) -> None:
        self.make = make


def field(*, default_factory: Callable[[], Any]) -> Any:
    """A default made anew for each instance (a dict, a list)."""
    return _Factory(default_factory)


class FrozenInstanceError(AttributeError):
    pass


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
class Frozen:
    __slots__ = ()
    _fields: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        names: list[str] = []
        defaults: dict[str, object] = {}
        for klass in reversed(cls.__mro__):
            # Not inspect.get_annotations: inspect is what this module avoids importing.
            own = klass.__dict__.get("__annotations__", {})  # noqa: RUF063
            for name, kind in own.items():
                if name.startswith("_") or "ClassVar" in str(kind):
                    continue
                if name not in names:
                    names.append(name)
                if name in klass.__dict__:
                    defaults[name] = klass.__dict__[name]
        cls._fields = tuple(names)
        # A real signature, compiled once per class: an instance costs what a
        # hand-written __init__ costs (a listing makes thousands).
        scope: dict[str, object] = {"_set": object.__setattr__, "_Factory": _Factory}
        params, body = [], []
        for name in names:
            if name in defaults:
                scope[f"_d_{name}"] = defaults[name]
                params.append(f"{name}=_d_{name}")
                if isinstance(defaults[name], _Factory):
                    body.append(f" if type({name}) is _Factory: {name} = {name}.make()")
            else:
                params.append(name)
            body.append(f" _set(self, {name!r}, {name})")
        source = f"def __init__(self, {', '.join(params)}):\n" + "\n".join(body or [" pass"])
        exec(source, scope)  # noqa: S102 - the text is built from the class's own names
        type.__setattr__(cls, "__init__", scope["__init__"])

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, n) for n in self._fields)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        shown = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._fields)
        return f"{self.__class__.__name__}({shown})"

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")


def replace(obj: T, **changes: object) -> T:
    """A copy of `obj` with `changes`, as dataclasses.replace makes one."""
    values = {n: getattr(obj, n) for n in obj._fields}
    values.update(changes)
    return obj.__class__(**values)
