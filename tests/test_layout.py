"""The tree is the design (docs/design.md, "Modules"): no module longer than about 600
lines, no import cycle (imports inside functions counted: they hide a cycle, they do not
break it), the hot path's package importing none of core's, and the module table naming
every module there is."""

from __future__ import annotations

import ast
import re
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent
PACKAGE = CHECKOUT / "layershell"
MAX_LINES = 600
CORE_ONLY = ("packages", "exposure", "host", "operations", "cli")


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(CHECKOUT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(path: Path, known: dict[str, Path], *, module_level_only: bool = False) -> set[str]:
    """The layershell modules `path` imports (TYPE_CHECKING blocks left out)."""
    tree = ast.parse(path.read_text())
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for n in ast.walk(node))
        if module_level_only and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            skipped.update(id(n) for n in ast.walk(node))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in known else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m in known}


def test_no_module_is_longer_than_the_limit() -> None:
    long = {
        str(p.relative_to(CHECKOUT)): n
        for p in modules().values()
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, long


def test_no_import_cycle() -> None:
    known = modules()
    graph = {
        name: {m for m in imports(path, known) if m != name and not name.startswith(m + ".")}
        for name, path in known.items()
    }
    cycles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        stack.append(name)
        for nxt in sorted(graph[name]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)
    assert not cycles, [" -> ".join(c) for c in cycles]


def test_the_hot_path_package_imports_nothing_of_core() -> None:
    known = modules()
    reached = {
        name: sorted(
            m
            for m in imports(path, known, module_level_only=True)
            if m.split(".")[1:2] and m.split(".")[1] in CORE_ONLY
        )
        for name, path in known.items()
        if name.startswith("layershell.layers")
    }
    assert not any(reached.values()), reached


def test_the_module_table_names_every_module() -> None:
    text = (CHECKOUT / "docs" / "design.md").read_text()
    table = text.split("## Modules", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`([a-z_]+)(?:/|\.c)?`", table))
    missing = sorted(
        name
        for name in modules()
        if (short := name.rsplit(".", 1)[-1]) not in named
        and short not in ("layershell", "cli", "__main__")
    )
    assert not missing, missing


def test_one_table_of_streams_and_version_kinds() -> None:
    """The manifest's enums and the rules the other stages read are the same words."""
    from layershell import names
    from layershell.packages import manifest, plan

    assert {s.value for s in manifest.TrackStream} == set(names.STREAMS)
    assert tuple(k.value for k in manifest.VersionKind) == plan.KINDS


def test_a_record_spec_is_read_back_typed() -> None:
    """What spec_record writes reads back as the manifest's enums; a value of the wrong
    type or out of its enum (the record is the layer account's JSON) reads as absent,
    not as whatever string is there."""
    from layershell.packages import manifest
    from layershell.packages.pipeline import Recorded

    good = Recorded.of({"version_kind": "latest", "track_stream": "next", "repository": "x"})
    assert good.version_kind is manifest.VersionKind.latest
    assert good.track_stream is manifest.TrackStream.next and good.repository == "x"
    odd = Recorded.of({"version_kind": ["latest"], "track_stream": "nightly", "verified": 1})
    assert odd.version_kind is None and odd.track_stream is manifest.TrackStream.stable
    assert odd.repository is None and odd.verified is None
