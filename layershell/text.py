"""Text from elsewhere (a package, a server, another account's record) made safe to
print: no module but this one decides what reaches a terminal. Standard library only,
so fetch's progress lines and the hot path may use it without loading rich."""

from __future__ import annotations

# C0 controls but tab and newline, DEL and C1 controls, shown as \xNN. What core prints
# carries a package's own text (member names, install.sh's log, a unit's journal), and an
# escape sequence in it would reach the terminal: OSC 52 writes the clipboard its user
# pastes from next, and some terminals answer queries by typing into the input.
_UNSAFE = {c: f"\\x{c:02x}" for c in (*range(0x09), *range(0x0B, 0x20), 0x7F, *range(0x80, 0xA0))}


def printable(text: str) -> str:
    return text.translate(_UNSAFE)
