"""Errors that reach the user: a message, a hint saying what to do, an exit status.

Library code raises these; only the command-line layer turns them into output and an
exit status, so nothing deep in the library calls sys.exit().

This module is on the `layer-shell` hot path, so it imports nothing.
"""

from __future__ import annotations

# Not typing's: importing typing costs the layer-shell hot path ~7 ms (re, enum with
# it); mypy reads any TYPE_CHECKING name as true.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from collections.abc import Iterable


class LayershellError(Exception):
    """A failure the user can act on."""

    exit_code = 1

    def __init__(self, message: str, hint: str = "", exit_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


class Problem:
    """One problem found in a file: where, which key, what is wrong, what to do.

    line is 1-based (0 when the problem concerns the whole file), column 1-based; key is
    a dotted path such as "layers.1.account" ("" for the document).
    """

    __slots__ = ("column", "file", "hint", "key", "line", "message")

    def __init__(
        self, file: str, line: int, column: int, key: str, message: str, hint: str = ""
    ) -> None:
        self.file, self.line, self.column = file, line, column
        self.key, self.message, self.hint = key, message, hint

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Problem) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def __repr__(self) -> str:
        return f"Problem({str(self)!r})"

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}" if self.line else self.file
        what = f"{self.key}: {self.message}" if self.key else self.message
        return f"{where}: {what}" + (f" ({self.hint})" if self.hint else "")


class ConfigError(LayershellError):
    """A configuration file has one or more problems; all of them are reported at once."""

    exit_code = 2

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class PermissionRefused(LayershellError):
    """The caller may not do this (enter a layer above their privilege, act without root)."""

    exit_code = 1


class SandboxError(LayershellError):
    """Setting up a layer's namespaces or mounts failed."""

    exit_code = 1


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The one of `choices` a mistyped `word` most likely meant, if any is close: the
    one rule behind every "did you mean" (keys, packages, programs, columns)."""
    import difflib

    close = difflib.get_close_matches(word, list(choices), n=1)
    return close[0] if close else None


def suggest(word: str, choices: Iterable[str]) -> str | None:
    """ "did you mean X?" for a mistyped name, else None."""
    close = closest(word, choices)
    return f"did you mean {close}?" if close else None


class NotInstalled(LayershellError):
    """A package named that is not installed: bad input (2), with the closest name that is."""

    exit_code = 2

    def __init__(self, names: Iterable[str], layer: str, known: Iterable[str]) -> None:
        missing = list(names)
        where = f" in layer {layer}" if layer else ""
        super().__init__(
            f"not installed{where}: {', '.join(missing)}",
            suggest(missing[0], known) or "see core list",
        )
