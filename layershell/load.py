"""Load YAML while remembering where every key and value came from.

Validation reports `FILE:LINE:COL: key: message`; for that each value's position is
kept next to the plain data. Duplicate keys, which PyYAML silently resolves to the last
one, are reported as problems here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from layershell.errors import ConfigError, Problem

KeyPath = tuple[str | int, ...]


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


class _Walker:
    """Turns a composed node tree into plain data, recording marks and problems."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.values: dict[KeyPath, Mark] = {}
        self.keys: dict[KeyPath, Mark] = {}
        self.problems: list[Problem] = []
        self.active: set[int] = set()  # nodes being walked: a recursive alias loops
        self.scalars = yaml.SafeLoader("")  # one per document: it caches what it built

    def problem(self, node: yaml.Node, path: KeyPath, message: str, hint: str = "") -> None:
        m = _mark(node)
        self.problems.append(Problem(self.file, m.line, m.column, dotted(path), message, hint))

    def walk(self, node: yaml.Node, path: KeyPath) -> Any:
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
    """Parse YAML text; raises ConfigError (with the position) on a syntax error."""
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
    data = None if node is None else walker.walk(node, ())
    if walker.problems:
        raise ConfigError(walker.problems)
    return Document(file, data, walker.values, walker.keys)


def load_file(path: str) -> Document:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError([Problem(path, 0, 0, "", "file not found")]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [Problem(path, 1, 1, "", f"not UTF-8 text ({exc.reason})", "save it as UTF-8")]
        ) from None
    except OSError as exc:
        raise ConfigError([Problem(path, 0, 0, "", f"cannot read: {exc.strerror}")]) from None
    return load_text(text, path)
