"""What unpack raises, and how it quotes an entry's name in a message."""

from __future__ import annotations

from layershell.errors import LayershellError


class UnsafeArchive(LayershellError):
    """The archive is refused: unsafe, damaged, over a limit, or not an archive."""

    exit_code = 1

    def __init__(self, archive: str, where: str | None, reason: str) -> None:
        """where: which entry, quoted for display (None when the whole file is refused)."""
        self.archive, self.where, self.reason = archive, where, reason
        place = f"{archive}: {where}" if where else archive
        super().__init__(f"{place}: {reason}", "the package is refused; nothing was installed")


class UnpackError(LayershellError):
    """Unpacking failed for a reason outside the archive: the target, the disk."""

    exit_code = 1


class _Refused(Exception):
    """A refusal raised where the archive's name is unknown; unpack() names it."""

    def __init__(self, entry: str | None, reason: str) -> None:
        super().__init__(reason)
        self.entry, self.reason = entry, reason


def show(name: str) -> str:
    """Quote a name for a message: undecodable bytes as \\xNN, control characters escaped,
    so a hostile name can neither garble a terminal nor hide what it is. Names longer
    than 300 characters keep their start and end."""
    if len(name) > 300:
        return show(name[:200])[:-1] + f"...({len(name) - 260} more)..." + show(name[-60:])[1:]
    out = []
    for char in name:
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
            out.append(f"\\x{code - 0xDC00:02x}")
        elif char in "\\'":
            out.append("\\" + char)
        elif not char.isprintable():
            out.append(repr(char)[1:-1])
        else:
            out.append(char)
    return "'" + "".join(out) + "'"
