"""Where fetch reports what it does: nothing, plain lines, or a bar on a terminal."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from layershell.text import printable


class Progress:
    """Where fetch reports what it does. This base class is silent (tests, --quiet)."""

    def start(self, name: str, url: str, total: int | None, offset: int = 0) -> None:
        """An attempt begins; `offset` bytes are already there (a resumed download)."""

    def advance(self, nbytes: int) -> None:
        """`nbytes` more bytes arrived."""

    def retry(self, name: str, url: str, reason: str, delay: float) -> None:
        """An attempt failed with `reason`; the next one starts in `delay` seconds."""

    def done(self, name: str, url: str, nbytes: int, seconds: float) -> None:
        """The file is complete and verified."""

    def abort(self, name: str, url: str) -> None:
        """The fetch failed for good (the error itself is raised, not reported here)."""


class LogProgress(Progress):
    """Plain lines, one per event: for logs, journals and pipes."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream

    def _line(self, text: str) -> None:
        stream = self.stream or sys.stderr
        stream.write(printable(text) + "\n")  # a reason is the server's words
        stream.flush()

    def start(self, name: str, url: str, total: int | None, offset: int = 0) -> None:
        if offset:
            self._line(f"resuming {name} at {offset} bytes: {url}")
        else:
            self._line(f"fetching {name}: {url}")

    def retry(self, name: str, url: str, reason: str, delay: float) -> None:
        self._line(f"retrying {name} in {delay:.1f} s: {reason}")

    def done(self, name: str, url: str, nbytes: int, seconds: float) -> None:
        self._line(f"fetched {name}: {nbytes} bytes in {seconds:.1f} s")


class RichProgress(Progress):
    """A transient progress bar on a terminal; the summary line stays."""

    def __init__(self, stream: TextIO | None = None) -> None:
        from rich.console import Console

        self.console = Console(
            file=stream or sys.stderr, markup=False, highlight=False, soft_wrap=True
        )
        self._bar: Any = None
        self._task: Any = None

    def start(self, name: str, url: str, total: int | None, offset: int = 0) -> None:
        if self._bar is None:
            from rich import progress as rp

            self._bar = rp.Progress(
                rp.TextColumn("{task.description}", markup=False),
                rp.BarColumn(),
                rp.DownloadColumn(),
                rp.TransferSpeedColumn(),
                rp.TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(printable(name), total=total, completed=offset)
        else:
            self._bar.update(self._task, total=total, completed=offset)

    def advance(self, nbytes: int) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, nbytes)

    def retry(self, name: str, url: str, reason: str, delay: float) -> None:
        self.console.print(printable(f"retrying {name} in {delay:.1f} s: {reason}"))

    def done(self, name: str, url: str, nbytes: int, seconds: float) -> None:
        self._stop()
        self.console.print(printable(f"fetched {name}: {nbytes} bytes in {seconds:.1f} s"))

    def abort(self, name: str, url: str) -> None:
        self._stop()

    def _stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = self._task = None


def progress_for(stream: TextIO | None = None, *, quiet: bool = False) -> Progress:
    """The right reporter for `stream` (default stderr): a bar on a TTY, lines elsewhere."""
    if quiet:
        return Progress()
    stream = stream or sys.stderr
    return RichProgress(stream) if stream.isatty() else LogProgress(stream)
