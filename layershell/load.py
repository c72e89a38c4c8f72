"""Load YAML while remembering where every key and value came from.

Validation reports `FILE:LINE:COL: key: message`; for that each value's position is
kept next to the plain data. Duplicate keys, which PyYAML silently resolves to the last
one, are reported as problems here.

Every input is bounded before it is built (root validates the host's manifest on every
install): its size, its nesting depth and its aliases are checked on the parser's event
stream, which PyYAML produces without recursion, and the walk that expands aliases stops
at a number of values. A 652-byte alias bomb, a 50 MB file or 10,000 nested brackets is
refused at once, at its position, instead of growing to gigabytes or a RecursionError.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from layershell.errors import ConfigError, Problem

if TYPE_CHECKING:
    import yaml
else:

    class _Yaml:
        """PyYAML, imported when a document is first read: importing this module (every
        module that names a Document does) costs nothing, and `core list` reads none."""

        def __getattr__(self, name: str) -> Any:
            import yaml

            return getattr(yaml, name)

    yaml = _Yaml()

KeyPath = tuple[str | int, ...]

MAX_BYTES = 1 << 20  # a manifest or layers.yaml is a few KiB
MAX_DEPTH = 64  # nested mappings and sequences
MAX_ALIASES = 100  # *references, each expanded where it stands
MAX_VALUES = 100_000  # values after expanding every alias


@dataclass(frozen=True)
class Mark:
    line: int  # 1-based
    column: int  # 1-based


@dataclass(frozen=True)
class Document:
    """Plain data (dict/list/str/int/float/bool/None) plus the positions of its parts."""

    file: str
    data: Any
    value_marks: dict[KeyPath, Mark] = field(default_factory=dict)
    key_marks: dict[KeyPath, Mark] = field(default_factory=dict)

    def mark(self, path: KeyPath, *, key: bool = False) -> Mark:
        """Where `path` is; for a missing key, where its nearest present parent is."""
        marks = self.key_marks if key else self.value_marks
        probe = path
        while probe:
            if probe in marks:
                return marks[probe]
            if probe in self.value_marks:
                return self.value_marks[probe]
            probe = probe[:-1]
        return self.value_marks.get((), Mark(1, 1))

    def problem(self, path: KeyPath, message: str, hint: str = "", *, key: bool = False) -> Problem:
        m = self.mark(path, key=key)
        return Problem(self.file, m.line, m.column, dotted(path), message, hint)


def dotted(path: KeyPath) -> str:
    return ".".join(str(p) for p in path)


def _mark(node: yaml.Node) -> Mark:
    return Mark(node.start_mark.line + 1, node.start_mark.column + 1)


class _TooMany(Exception):
    def __init__(self, node: yaml.Node) -> None:
        self.node = node


def _at(event: yaml.Event) -> tuple[int, int]:
    m = event.start_mark
    return (m.line + 1, m.column + 1) if m is not None else (1, 1)


def _bounds(text: str, file: str) -> Problem | None:
    """The first bound the text's events break (depth, aliases), or None."""
    depth = aliases = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    line, column = _at(event)
                    return Problem(file, line, column, "",
                                   f"nested more than {MAX_DEPTH} levels deep",
                                   "flatten it")  # fmt: skip
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
            elif isinstance(event, yaml.AliasEvent):
                aliases += 1
                if aliases > MAX_ALIASES:
                    line, column = _at(event)
                    return Problem(file, line, column, "",
                                   f"more than {MAX_ALIASES} aliases (*name)",
                                   "write the values out instead of referring to them")  # fmt: skip
    except yaml.YAMLError:
        return None  # compose reports the syntax error itself, at its position
    return None


class _Walker:
    """Turns a composed node tree into plain data, recording marks and problems."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.values: dict[KeyPath, Mark] = {}
        self.keys: dict[KeyPath, Mark] = {}
        self.problems: list[Problem] = []
        self.active: set[int] = set()  # nodes being walked: a recursive alias loops
        self.scalars = yaml.SafeLoader("")  # one per document: it caches what it built
        self.count = 0

    def problem(self, node: yaml.Node, path: KeyPath, message: str, hint: str = "") -> None:
        m = _mark(node)
        self.problems.append(Problem(self.file, m.line, m.column, dotted(path), message, hint))

    def walk(self, node: yaml.Node, path: KeyPath) -> Any:
        self.count += 1
        if self.count > MAX_VALUES:
            raise _TooMany(node)
        self.values[path] = _mark(node)
        if id(node) in self.active:
            self.problem(node, path, "an alias refers to itself", "expand it by hand")
            return None
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path)
            if isinstance(node, yaml.SequenceNode):
                return [self.walk(item, (*path, i)) for i, item in enumerate(node.value)]
            return self._scalar(node, path)
        finally:
            self.active.discard(id(node))

    def _mapping(self, node: yaml.MappingNode, path: KeyPath) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                self.problem(key_node, path, "keys must be plain words")
                continue
            key = str(key_node.value)
            child = (*path, key)
            if key in out:
                first = self.keys[child].line
                self.problem(
                    key_node, child, "duplicate key", f"it is already set on line {first}; keep one"
                )
                continue
            self.keys[child] = _mark(key_node)
            out[key] = self.walk(value_node, child)
        return out

    def _scalar(self, node: yaml.Node, path: KeyPath) -> Any:
        # PyYAML's safe constructor picks the type (int, bool, str, ...); a bad tag or
        # an impossible value (!!int abc, 2020-13-45) is a problem at its position.
        try:
            return self.scalars.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, TypeError) as exc:
            what = getattr(exc, "problem", None) or str(exc)
            self.problem(node, path, f"cannot read this value: {what}", "quote it to make it text")
            return None


def load_text(text: str, file: str) -> Document:
    """Parse YAML text; raises ConfigError (with the position) on a syntax error or a
    broken bound."""
    if len(text) > MAX_BYTES:
        raise ConfigError([_too_big(file, len(text))])
    bound = _bounds(text, file)
    if bound is not None:
        raise ConfigError([bound])
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        m = exc.problem_mark or exc.context_mark
        line, col = (m.line + 1, m.column + 1) if m else (1, 1)
        raise ConfigError(
            [
                Problem(
                    file,
                    line,
                    col,
                    "",
                    f"not valid YAML: {exc.problem or exc.context}",
                    "check indentation and quoting",
                )
            ]
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(file, 1, 1, "", f"not valid YAML: {exc}")]) from None
    walker = _Walker(file)
    try:
        data = None if node is None else walker.walk(node, ())
    except _TooMany as exc:
        where = _mark(exc.node)
        raise ConfigError([Problem(file, where.line, where.column, "",
                                   f"expands to more than {MAX_VALUES} values (through aliases)",
                                   "write it without aliases")]) from None  # fmt: skip
    if walker.problems:
        raise ConfigError(walker.problems)
    return Document(file, data, walker.values, walker.keys)


def _too_big(file: str, size: int) -> Problem:
    return Problem(
        file,
        0,
        0,
        "",
        f"{size} bytes: more than the {MAX_BYTES} a configuration file may be",
        "a manifest lists packages, not their contents: is this the right file?",
    )


def load_file(path: str) -> Document:
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError([Problem(path, 0, 0, "", "file not found", "check the path")]) from None
    except OSError as exc:
        raise ConfigError([Problem(path, 0, 0, "", f"cannot read: {exc.strerror}")]) from None
    if len(raw) > MAX_BYTES:
        raise ConfigError([_too_big(path, os.path.getsize(path))])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigError(
            [Problem(path, line, column, "", f"not UTF-8 text ({exc.reason})", "save it as UTF-8")]
        ) from None
    return load_text(text, path)
