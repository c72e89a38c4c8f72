"""layershell.frozen: the frozen record classes of what `core list` imports behave as
frozen dataclasses do (the classes were dataclasses before; their users still rely on
each of these)."""

from __future__ import annotations

import dataclasses

import pytest

from layershell.frozen import Frozen, FrozenInstanceError, field, replace


class Point(Frozen):
    x: int
    y: int = 0
    tags: dict[str, str] = field(default_factory=dict)


class Named(Point):
    name: str = "p"


@dataclasses.dataclass(frozen=True)
class Twin:
    x: int
    y: int = 0
    tags: dict[str, str] = dataclasses.field(default_factory=dict)


def test_it_is_built_as_a_frozen_dataclass_is() -> None:
    p, t = Point(1, y=2), Twin(1, y=2)
    assert (p.x, p.y, p.tags) == (t.x, t.y, t.tags)
    assert repr(p) == repr(t).replace("Twin", "Point")
    assert Point(1).tags is not Point(1).tags  # a factory default is made per instance
    assert Point(x=3).y == 0
    with pytest.raises(TypeError):
        Point()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Point(1, 2, {}, 4)  # type: ignore[call-arg]


def test_equality_hash_and_immutability() -> None:
    assert Point(1, 2) == Point(1, 2) and Point(1, 2) != Point(1, 3)
    assert hash(Point(1, 2, ())) == hash(Point(1, 2, ()))  # type: ignore[arg-type]
    assert Point(1) != Named(1)  # another class is never equal, as with dataclasses
    p = Point(1)
    with pytest.raises(FrozenInstanceError):
        p.x = 2  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del p.x
    assert vars(p) == {"x": 1, "y": 0, "tags": {}}


def test_replace_and_inheritance() -> None:
    n = Named(1, 2, name="q")
    assert Named._fields == ("x", "y", "tags", "name")
    moved = replace(n, y=5)
    assert moved == Named(1, 5, {}, "q") and n.y == 2
    with pytest.raises(TypeError):
        replace(n, z=1)
