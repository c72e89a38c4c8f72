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


_SCALARS = yaml.SafeLoader("")


def _walk(
    node: yaml.Node,
    path: KeyPath,
    doc_values: dict[KeyPath, Mark],
    doc_keys: dict[KeyPath, Mark],
    problems: list[Problem],
    file: str,
) -> Any:
    doc_values[path] = _mark(node)
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                m = _mark(key_node)
                problems.append(
                    Problem(file, m.line, m.column, dotted(path), "keys must be plain words")
                )
                continue
            key = str(key_node.value)
            child = (*path, key)
            if key in out:
                m = _mark(key_node)
                problems.append(
                    Problem(
                        file,
                        m.line,
                        m.column,
                        dotted(child),
                        "duplicate key",
                        f"it is already set on line {doc_keys[child].line}; keep one",
                    )
                )
                continue
            doc_keys[child] = _mark(key_node)
            out[key] = _walk(value_node, child, doc_values, doc_keys, problems, file)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [
            _walk(item, (*path, i), doc_values, doc_keys, problems, file)
            for i, item in enumerate(node.value)
        ]
    # Scalars: let PyYAML's safe constructor pick the type (int, bool, str, ...).
    return _SCALARS.construct_object(node, deep=True)


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
    values: dict[KeyPath, Mark] = {}
    keys: dict[KeyPath, Mark] = {}
    problems: list[Problem] = []
    data = None if node is None else _walk(node, (), values, keys, problems, file)
    if problems:
        raise ConfigError(problems)
    return Document(file, data, values, keys)


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
