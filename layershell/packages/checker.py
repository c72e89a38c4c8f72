"""Collects the problems of one YAML document as its validator walks it (manifest.py,
composable.yaml): each check reports what is wrong at its key, as FILE:LINE:COL, and
returns the checked value or None, so that every problem is found in one pass."""

from __future__ import annotations

import datetime
from enum import Enum
from typing import Any, TypeVar

from layershell.errors import Problem, closest
from layershell.layers.config import did_you_mean
from layershell.load import Document, KeyPath

E = TypeVar("E", bound=Enum)


def kind(value: object) -> str:
    if value is None:
        return "empty"
    if isinstance(value, str):
        return "text"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, (datetime.date, datetime.datetime)):
        return "a date"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def choice_hint(value: str, choices: tuple[str, ...]) -> str:
    close = closest(value, choices)
    return f"did you mean {close!r}?" if close else f"use one of {', '.join(choices)}"


class Checker:
    """Collects problems for one document; each method returns the checked value or None."""

    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.problems: list[Problem] = []

    def report(self, path: KeyPath, message: str, hint: str = "", *, key: bool = False) -> None:
        self.problems.append(self.doc.problem(path, message, hint, key=key))

    def keys(self, path: KeyPath, data: dict[str, Any], allowed: tuple[str, ...]) -> None:
        for key in data:
            if key not in allowed:
                self.report((*path, key), "unknown key", did_you_mean(key, allowed), key=True)

    def text(self, path: KeyPath, value: object, empty_hint: str) -> str | None:
        """A non-empty string; `empty_hint` says what to write when there is none."""
        if value is None or value == "":
            self.report(path, "needs a value", empty_hint)
        elif isinstance(value, (list, dict)):
            self.report(path, f"must be text, not {kind(value)}", empty_hint)
        elif not isinstance(value, str):
            # YAML turned it into a number, boolean or date; quoting keeps it as written.
            self.report(path, f"must be text, not {kind(value)}", "put it in quotes")
        else:
            return value
        return None

    def choice(self, path: KeyPath, value: object, enum: type[E], what: str) -> E | None:
        choices = tuple(str(m.value) for m in enum)
        if isinstance(value, str) and value in choices:
            return enum(value)
        shown = str(value) if isinstance(value, str) else ""
        self.report(path, f"unknown {what} {value!r}", choice_hint(shown, choices))
        return None

    def names(self, path: KeyPath, value: object, example: str) -> tuple[str, ...] | None:
        """A list of strings; each item's own rules are checked by the caller."""
        if isinstance(value, str):
            self.report(path, "must be a list", f"use a list: [{value}]")
            return None
        if value is None:
            self.report(path, "needs a value", f"for example [{example}], or [] for none")
            return None
        if not isinstance(value, list):
            self.report(path, f"must be a list, not {kind(value)}", f"for example [{example}]")
            return None
        ok = True
        for index, item in enumerate(value):
            if not isinstance(item, str) or not item:
                what = "empty" if item == "" else kind(item)
                self.report((*path, index), f"must be a name, not {what}")
                ok = False
        return tuple(value) if ok else None
