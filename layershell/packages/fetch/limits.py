"""The limits of one download: how big it may be and how slow (docs/repository.md,
"Fetching"), and how big a small file (an index) may be."""

from __future__ import annotations

import os
from collections.abc import Callable

from layershell.errors import LayershellError
from layershell.packages.fetch.errors import FetchError

SMALL_LIMIT = 16 << 20  # index and text files: anything bigger is not an index

# Limits of one download (docs/repository.md, "Fetching"); each has its variable.
MIN_RATE = 1024  # bytes per second, averaged over the whole download
GRACE = 60.0  # seconds: no deadline is shorter, no average is judged before
MAX_SIZE = 4 << 30  # bytes, when neither the index nor the caller knows the size
MIN_RATE_ENV = "LAYERSHELL_FETCH_MIN_RATE"
GRACE_ENV = "LAYERSHELL_FETCH_GRACE"
MAX_SIZE_ENV = "LAYERSHELL_FETCH_MAX_SIZE"


def _amount(n: float) -> str:
    """Bytes in the largest binary unit that divides them: 4 GiB, 1 KiB, 1000 bytes."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{int(n) >> shift} {unit}"
    return f"{n:g} bytes"


def _env_number(name: str, default: float, env: dict[str, str] | None = None) -> float:
    text = (os.environ if env is None else env).get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise LayershellError(
            f"{name}={text!r} is not a number of 0 or more",
            f"unset it, or write a plain number, as in {name}={default:g}",
            exit_code=2,
        )
    return value


class _Budget:
    """The limits of one download: how big it may be and how slow.

    `size` (the index's, or the manifest's) caps the download and is what it must be;
    without it the cap is `max_size` and the expected size is what the server announces.
    Deadline with an expected size: max(grace, size / min_rate) seconds from the start;
    without one, after `grace` seconds the average rate must stay at least `min_rate`.
    """

    def __init__(
        self,
        url: str,
        size: int | None,
        *,
        max_size: int,
        min_rate: float,
        grace: float,
        clock: Callable[[], float],
    ) -> None:
        self.url = url
        self.size = size
        self.cap = size if size is not None else max_size
        self.expected = size
        self.min_rate = min_rate
        self.grace = grace
        self.clock = clock
        self.started = clock()
        self.received = 0

    def announced(self, total: int | None) -> None:
        """The server says the whole file is `total` bytes: refuse it now if over."""
        if total is None:
            return
        if total > self.cap:
            if self.size is not None:
                raise FetchError(
                    f"{self.url} is larger than the expected {self.size} bytes"
                    f" (the server announces {total})",
                    "the file was replaced, or the size pin is wrong",
                    url=self.url,
                )
            raise FetchError(
                f"{self.url} is {total} bytes, more than the limit of {_amount(self.cap)}"
                " for one download",
                self._cap_hint(),
                url=self.url,
            )
        if self.expected is None:
            self.expected = total

    def over(self) -> FetchError:
        """The body went past the cap while streaming."""
        if self.size is not None:
            return FetchError(
                f"{self.url} is larger than the expected {self.size} bytes",
                "the file was replaced, or the size pin is wrong",
                url=self.url,
            )
        return FetchError(
            f"{self.url} is larger than the limit of {_amount(self.cap)} for one download",
            self._cap_hint(),
            url=self.url,
        )

    def _cap_hint(self) -> str:
        return (
            "publish an index that records the file's size (core repo index DIR), or"
            f" raise the limit: {MAX_SIZE_ENV}=BYTES"
        )

    def check(self) -> None:
        """Abandon the download when it is too slow (a final error: nothing is kept)."""
        if self.min_rate <= 0:
            return
        elapsed = self.clock() - self.started
        if self.expected is not None:
            if elapsed <= max(self.grace, self.expected / self.min_rate):
                return
            shown = f"{self.received} of {self.expected} bytes"
        else:
            if elapsed <= self.grace or self.received >= self.min_rate * elapsed:
                return
            shown = f"{self.received} bytes"
        raise FetchError(
            f"{self.url} gave {shown} in {elapsed:.0f} s, slower than the minimum"
            f" {_amount(self.min_rate)}/s; the download was abandoned",
            "the server or the network is too slow: retry later, or lower the minimum"
            f" ({MIN_RATE_ENV}=BYTES_PER_SECOND, 0 for none; {GRACE_ENV}=SECONDS is the"
            " shortest deadline)",
            url=self.url,
        )


def _check_small(url: str, nbytes: int) -> None:
    if nbytes > SMALL_LIMIT:
        raise FetchError(
            f"{url} is larger than {SMALL_LIMIT >> 20} MiB: not an index file",
            "check the URL",
            url=url,
        )
