"""A unit file's text read the way systemd 252's conf-parser reads it (units.py refuses
whatever systemd would read differently before it gets here): comments skipped even
inside a continuation, a trailing backslash joining lines with a space, a first-line
BOM, sections and keys case-sensitive, whitespace " \\t\\n\\r" stripped."""

from __future__ import annotations

import re
from collections.abc import Iterator

WHITESPACE = " \t\n\r"


def logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """(number of its first line, text) of each logical line, as systemd's conf-parser
    reads them: comment lines are dropped first (even inside a continuation), a trailing
    unescaped backslash becomes a space and joins the next line."""
    continuation: str | None = None
    start = 0
    bom_seen = False
    for number, line in enumerate(re.split(r"\r\n|\r|\n", text), 1):
        head = line.lstrip(WHITESPACE)
        if head and head[0] in "#;":
            continue
        text_part = line
        if not bom_seen and line.startswith("\ufeff"):
            text_part, bom_seen = line[1:], True
        if continuation is None:
            start, joined = number, text_part
        else:
            joined = continuation + text_part
        escaped = False
        for ch in joined:
            escaped = False if escaped else ch == "\\"
        if escaped:
            continuation = joined[:-1] + " "
            continue
        continuation = None
        yield start, joined
    if continuation is not None:
        yield start, continuation


def parse(text: str) -> Iterator[tuple[int, str, str, str]]:
    """(line, section, key, value) per assignment, plus (line, "", "", why) for each line
    systemd would reject or ignore and layershell refuses. A section line yields
    (line, section, "", "") so the caller sees unknown sections."""
    section = ""
    for number, raw in logical_lines(text):
        line = raw.strip(WHITESPACE)
        if not line:
            continue
        if line.startswith("["):
            if not line.endswith("]") or len(line) < 2:
                yield number, "", "", f"not a section header: {line[:40]!r}"
                section = ""
                continue
            section = line[1:-1]
            yield number, section, "", ""
            continue
        key, sep, value = line.partition("=")
        key = key.strip(WHITESPACE)
        if not sep or not key:
            yield number, section, "", f"not KEY=VALUE: {line[:40]!r}"
        elif not section:
            yield number, "", key, "an assignment before any [section]"
        else:
            yield number, section, key, value.strip(WHITESPACE)
