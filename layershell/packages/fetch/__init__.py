"""Fetch: bytes from file://, http(s):// and ftp:// into a content-addressed cache.

Packages land in `CACHE/sha256/<hex>` once complete and verified, so a package already
fetched costs no network at all. A download in progress lives in
`CACHE/partial/<sha256 of url>.part` next to a small JSON sidecar (URL, validator, bytes so
far): an interrupted download resumes where it stopped, on the next attempt or on the next
run (HTTP `Range` guarded by `If-Range`, FTP `REST`). Small index files are fetched with
conditional requests against `CACHE/meta/<sha256 of url>.json`, so a fleet polling one
static server costs it a single 304 per host and poll.

Every download has limits besides the read timeout: a deadline (an average of at least
1 KiB/s, never less than 60 s) and a size cap (the index's size, else 4 GiB), checked
before the body when the server announces a length and while it streams. A redirect may
not change the protocol. Logins come from a netrc-format credentials file of the
fetching account, never from a URL; no password reaches a message, a progress line or
the cache. A failure that cannot be resumed keeps nothing; `prune_cache` removes what
dead runs left. docs/repository.md, "Fetching", has the rules.

Only kept libraries talk the protocols: urllib/http.client for HTTP(S), ftplib for FTP.

One module per concern: `fetcher` (the Fetcher), `errors`, `limits`, `credentials`,
`urls`, `http`, `ftp`, `partial` (a download in progress), `cache` (the cache's
bookkeeping, `prune_cache`) and `progress`. The names below are what the rest of
layershell uses; the others live in their module.
"""

from __future__ import annotations

from layershell.packages.fetch.cache import prune_cache
from layershell.packages.fetch.errors import FetchError
from layershell.packages.fetch.fetcher import Fetcher
from layershell.packages.fetch.progress import Progress, progress_for

__all__ = ["FetchError", "Fetcher", "Progress", "progress_for", "prune_cache"]
