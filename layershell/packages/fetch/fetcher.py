"""The Fetcher: a package into the cache, with timeouts, retries and resume, and the small
files (indexes, SHA256SUMS, signatures), revalidated with conditional requests."""

from __future__ import annotations

import base64
import ftplib
import http.client
import json
import os
import random
import ssl
import stat
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from layershell import __version__
from layershell.atomic import write_atomic
from layershell.errors import LayershellError
from layershell.packages.fetch.cache import _check_digest, _load_meta, _meta_body, _new_meta
from layershell.packages.fetch.credentials import Login, _origin, credential_files, read_credentials
from layershell.packages.fetch.errors import (
    NETWORK_HINT,
    SHORT_HINT,
    FetchError,
    NotFound,
    ShortDownload,
    _reason,
    _Transient,
)
from layershell.packages.fetch.ftp import (
    _ftp_code,
    _ftp_failure,
    _ftp_path,
    _ftp_query,
    _ftp_session,
)
from layershell.packages.fetch.http import (
    _content_length,
    _content_range,
    _http_status_error,
    _HTTPHandler,
    _HTTPSHandler,
    _PassErrors,
    _Redirects,
    _strong_validator,
)
from layershell.packages.fetch.limits import (
    GRACE,
    GRACE_ENV,
    MAX_SIZE,
    MAX_SIZE_ENV,
    MIN_RATE,
    MIN_RATE_ENV,
    SMALL_LIMIT,
    _Budget,
    _check_small,
    _env_number,
)
from layershell.packages.fetch.partial import CHUNK, _locked, _Partial, _remove, _url_key, _writing
from layershell.packages.fetch.progress import Progress
from layershell.packages.fetch.urls import _scheme, _without_user, local_path
from layershell.packages.verify.integrity import HashMismatch, display_name

USER_AGENT = f"layershell/{__version__}"

T = TypeVar("T")


class Fetcher:
    """Fetches URLs into the cache under `cache_dir`, with timeouts, retries and resume.

    `retries` is the number of attempts after the first; attempt n waits about
    `backoff * 2**n` seconds before it (with jitter, so a fleet does not retry in step).
    `min_rate` (bytes/s, 0: none), `grace` (s) and `max_size` (bytes) are the limits of
    one download (None: $LAYERSHELL_FETCH_MIN_RATE, $LAYERSHELL_FETCH_GRACE,
    $LAYERSHELL_FETCH_MAX_SIZE, else 1 KiB/s, 60 s, 4 GiB). `credentials` lists the
    netrc-format files to take logins from, the first that exists counting (None: the
    account's ~/.config/layershell/credentials, then ~/.netrc).
    """

    def __init__(
        self,
        cache_dir: str,
        *,
        connect_timeout: float = 10,
        read_timeout: float = 30,
        retries: int = 3,
        backoff: float = 0.5,
        progress: Progress | None = None,
        sleep: Callable[[float], None] = time.sleep,
        min_rate: float | None = None,
        grace: float | None = None,
        max_size: int | None = None,
        credentials: Sequence[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cache_dir = cache_dir
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.retries = max(0, retries)
        self.backoff = backoff
        self.progress = progress or Progress()
        self.sleep = sleep
        self.min_rate = min_rate if min_rate is not None else _env_number(MIN_RATE_ENV, MIN_RATE)
        self.grace = grace if grace is not None else _env_number(GRACE_ENV, GRACE)
        self.max_size = (
            max_size if max_size is not None else int(_env_number(MAX_SIZE_ENV, MAX_SIZE))
        )
        self.clock = clock
        self._credential_files = tuple(credentials) if credentials is not None else None
        self._logins: list[Login] | None = None
        self._opener = urllib.request.build_opener(
            _HTTPHandler(read_timeout), _HTTPSHandler(read_timeout), _PassErrors(), _Redirects()
        )

    # -- paths

    def _dir(self, name: str) -> str:
        path = os.path.join(self.cache_dir, name)
        with _writing(path, path, self.cache_dir):
            os.makedirs(path, mode=0o755, exist_ok=True)
        return path

    def cache_path(self, sha256: str) -> str:
        """Where a file with this sha256 lives in the cache (whether or not it is there)."""
        digest = _check_digest(sha256)  # never a path: "../x" must not leave the cache
        assert digest is not None
        return os.path.join(self.cache_dir, "sha256", digest)

    def cached(self, sha256: str) -> str | None:
        """The cached file with this sha256, or None."""
        path = self.cache_path(sha256)
        return path if os.path.isfile(path) else None

    # -- logins

    def login_for(self, url: str) -> Login | None:
        """The credentials file's login for `url`'s host (and port, when the entry names
        one; a user name in the URL must match). Read once, at the first need."""
        if self._logins is None:
            files = self._credential_files
            logins: list[Login] = []
            for path in files if files is not None else credential_files():
                found = read_credentials(path)
                if found is not None:
                    logins = found
                    break
            self._logins = logins
        _, host, port = _origin(url)
        user = urllib.parse.urlsplit(url).username
        matches = [
            x
            for x in self._logins
            if x.host == host and x.port in (None, port) and user in (None, x.login)
        ]
        matches.sort(key=lambda x: x.port is None)  # host:port before a bare host
        return matches[0] if matches else None

    # -- packages

    def fetch(
        self, url: str, *, sha256: str | None, size: int | None = None, name: str = ""
    ) -> str:
        """The path of the cached file that `url` holds, fetching it unless cached.

        With `sha256` the bytes are checked before they enter the cache (HashMismatch);
        without it (a local tarball named by the user) they are stored by their own hash.
        `size`, when known, caps the download and must match; unknown, the cap is
        `max_size`. A failure that cannot be resumed removes the partial file.
        """
        expected = _check_digest(sha256)
        if expected and (hit := self.cached(expected)):
            return hit
        scheme = _scheme(url)
        name = name or display_name(url)
        part = _Partial(self._dir("partial"), url)
        with _locked(part.lock_path):
            if expected and (hit := self.cached(expected)):
                return hit  # another process fetched it while we waited
            budget = _Budget(
                url, size, max_size=self.max_size, min_rate=self.min_rate,
                grace=self.grace, clock=self.clock,
            )  # fmt: skip
            started = time.monotonic()
            try:
                if scheme == "file":
                    self._copy_local(url, part, name, budget)
                else:
                    part.load()
                    attempt = self._http_attempt if scheme != "ftp" else self._ftp_attempt
                    self._retrying(url, name, lambda: attempt(url, part, name, budget), budget)
                path = self._commit(part, url, name, expected, size)
            except BaseException as e:
                # Kept only for a resume: the network failed (or we were interrupted)
                # and a strong validator proves the bytes. Caps, deadlines, 4xx, hash
                # and disk errors keep nothing.
                keep = (
                    e.resumable if isinstance(e, FetchError) else not isinstance(e, LayershellError)
                )
                if keep and part.resumable:
                    part.close()
                else:
                    part.remove()
                self.progress.abort(name, url)
                raise
        self.progress.done(name, url, os.path.getsize(path), time.monotonic() - started)
        return path

    def _commit(
        self, part: _Partial, url: str, name: str, expected: str | None, size: int | None
    ) -> str:
        """Verify, then move the finished download into the cache."""
        actual = part.hasher.hexdigest()
        if size is not None and part.size < size:
            # The server's whole answer (its own length, complete) is shorter than the
            # index says: a Content-Length that is too small, a file cut short or
            # replaced. Said first, so it never reads as a bare sha256 mismatch.
            if expected and actual != expected:
                raise ShortDownload(name, url, expected, actual, part.size, size)
            raise FetchError(
                f"{url}: the server sent {part.size} of the {size} bytes expected",
                SHORT_HINT,
                url=url,
            )
        if size is not None and part.size > size:
            raise FetchError(
                f"{url} is larger than the expected {size} bytes",
                "the file was replaced, or the size pin is wrong",
                url=url,
            )
        if expected and actual != expected:
            raise HashMismatch(name, url, expected, actual)
        part.finish()
        part.close()
        final = os.path.join(self._dir("sha256"), actual)
        with _writing(final, url, self.cache_dir):
            os.chmod(part.path, 0o644)
            os.replace(part.path, final)
            part.remove()  # the sidecar
            dfd = os.open(os.path.dirname(final), os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        return final

    def _retrying(
        self, url: str, name: str, attempt: Callable[[], T], budget: _Budget | None = None
    ) -> T:
        reason = ""
        for n in range(self.retries + 1):
            if budget is not None:
                budget.check()  # the deadline counts the back-off too
            try:
                return attempt()
            except _Transient as e:
                reason = str(e)
                if n == self.retries:
                    break
                # Jitter: thousands of hosts that failed together must not retry together.
                delay = self.backoff * 2**n * random.uniform(0.5, 1.0)  # noqa: S311
                self.progress.retry(name, url, reason, delay)
                self.sleep(delay)
        attempts = self.retries + 1
        raise FetchError(
            f"could not fetch {url}: {reason} ({attempts} attempt{'s' if attempts > 1 else ''})",
            NETWORK_HINT,
            url=url,
            resumable=True,
        )

    def _receive(self, part: _Partial, data: bytes, budget: _Budget) -> None:
        if part.size + len(data) > budget.cap:
            raise budget.over()
        part.write(data)
        budget.received += len(data)
        self.progress.advance(len(data))
        budget.check()

    def _copy_local(self, url: str, part: _Partial, name: str, budget: _Budget) -> None:
        path = local_path(url)
        try:
            # As _read_local: a FIFO in the repository must not hold the layer's lock.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
        except FileNotFoundError:
            raise NotFound(url) from None
        except OSError as e:
            raise FetchError(
                f"cannot read {path}: {e.strerror}",
                "check the path and its permissions (is the medium mounted?)",
                url=url,
            ) from e
        src = os.fdopen(fd, "rb")
        with src:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise FetchError(f"{path} is not a regular file", "check the repository", url=url)
            part.reset()
            self.progress.start(name, url, os.fstat(src.fileno()).st_size)
            try:
                while data := src.read(CHUNK * 16):
                    self._receive(part, data, budget)
            except OSError as e:
                raise FetchError(
                    f"cannot read {path}: {e.strerror}",
                    "the medium may be failing: copy the file elsewhere and retry",
                    url=url,
                ) from e

    # -- HTTP

    def _open(
        self, url: str, headers: dict[str, str], login: Login | None = None
    ) -> http.client.HTTPResponse:
        """One request; network failures become _Transient, never a bare OSError."""
        request = urllib.request.Request(  # noqa: S310 (the scheme was checked)
            _without_user(url),
            headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **headers},
        )
        if login is not None:
            # Unredirected: _Redirects carries it only to the same scheme, host and port.
            token = base64.b64encode(f"{login.login}:{login.password}".encode()).decode()
            request.add_unredirected_header("Authorization", f"Basic {token}")
        try:
            response: http.client.HTTPResponse = self._opener.open(
                request, timeout=self.connect_timeout
            )
        except urllib.error.HTTPError as e:  # a redirect that went wrong
            e.close()
            raise _http_status_error(url, e.code, e.reason, login) from None
        except urllib.error.URLError as e:
            if isinstance(e.reason, ssl.SSLCertVerificationError):
                raise FetchError(
                    f"cannot verify the certificate of {url}: {e.reason.verify_message}",
                    "check the URL and the host's CA certificates",
                    url=url,
                ) from None
            raise _Transient(_reason(e, self.read_timeout)) from None
        except (OSError, http.client.HTTPException) as e:
            raise _Transient(_reason(e, self.read_timeout)) from None
        except ValueError as e:
            raise FetchError(f"invalid URL {url}: {e}", "check the URL", url=url) from None
        return response

    def _read(self, response: http.client.HTTPResponse) -> bytes:
        # read1, not read: read(n) waits for all n bytes, and what had arrived before a
        # timeout would be lost instead of kept for the resume.
        try:
            return response.read1(CHUNK)
        except (OSError, http.client.HTTPException) as e:
            raise _Transient(_reason(e, self.read_timeout)) from None

    def _http_attempt(self, url: str, part: _Partial, name: str, budget: _Budget) -> None:
        offset = part.size
        headers = {}
        if offset and part.validator:
            headers = {"Range": f"bytes={offset}-", "If-Range": part.validator}
        elif offset:
            part.reset()  # nothing proves the server's file is still the same: start over
            offset = 0
        login = self.login_for(url)
        with self._open(url, headers, login) as response:
            status = response.status
            if status == 416 and offset:
                _, total = _content_range(response.headers.get("Content-Range"))
                if total == offset:
                    return  # everything had arrived before the last run stopped
                part.reset()
                raise _Transient("the server cannot resume this download; starting over")
            if status not in (200, 206):
                raise _http_status_error(url, status, response.reason, login)
            if status == 206:
                first, total = _content_range(response.headers.get("Content-Range"))
                if first != offset:
                    part.reset()
                    raise _Transient("the server resumed at the wrong offset; starting over")
            else:
                if offset:
                    part.reset()  # the file changed, or the server ignores Range
                total = _content_length(response.headers)
            budget.announced(total)  # over the cap: refused before a byte of the body
            expected_length = _content_length(response.headers)
            part.begin(_strong_validator(response.headers))
            self.progress.start(name, url, total, part.size)
            received = 0
            try:
                while data := self._read(response):
                    self._receive(part, data, budget)
                    received += len(data)
            finally:
                part.save()
            # http.client returns a short body silently when the peer closes early.
            if expected_length is not None and received < expected_length:
                raise _Transient(
                    f"the connection closed after {received} of {expected_length} bytes"
                )

    # -- FTP

    def _ftp_attempt(self, url: str, part: _Partial, name: str, budget: _Budget) -> None:
        path = _ftp_path(url)
        try:
            with _ftp_session(
                url, self.connect_timeout, self.read_timeout, self.login_for(url)
            ) as ftp:
                length = _ftp_query(ftp, f"SIZE {path}")
                total = int(length) if length and length.isdigit() else None
                budget.announced(total)  # over the cap: refused before RETR
                mdtm = _ftp_query(ftp, f"MDTM {path}")
                validator = f"{mdtm} {total}" if mdtm is not None and total is not None else None
                if part.size and (validator is None or validator != part.validator):
                    part.reset()  # the file changed, or nothing proves it did not
                if total is not None and part.size > total:
                    part.reset()
                if part.size and part.size == total:
                    return  # everything had arrived before the last run stopped
                offset = part.size
                part.begin(validator)
                self.progress.start(name, url, total, offset)
                try:
                    ftp.retrbinary(
                        f"RETR {path}",
                        lambda data: self._receive(part, data, budget),
                        blocksize=CHUNK,
                        rest=offset or None,
                    )
                finally:
                    part.save()
        except ftplib.error_perm as e:
            if _ftp_code(e) != "550" and part.size:
                # Most likely REST refused: start over from the first byte.
                part.reset()
                raise _Transient(f"the FTP server refused to resume ({e}); starting over") from e
            raise _ftp_failure(url, e, self.read_timeout) from e
        except (ftplib.Error, OSError, EOFError) as e:
            raise _ftp_failure(url, e, self.read_timeout) from e
        if total is not None and part.size < total:
            raise _Transient(f"the transfer ended after {part.size} of {total} bytes")

    # -- small files

    def get_index(self, url: str) -> bytes | None:
        """A small index file, revalidated with one conditional request; None if absent.

        The last body and its validators are kept in `CACHE/meta/`; a 304 (HTTP) or an
        unchanged MDTM and SIZE (FTP) answers from there.
        """
        scheme = _scheme(url)
        if scheme == "file":
            return self._read_local(url)
        meta_path = os.path.join(self._dir("meta"), _url_key(url) + ".json")
        meta = _load_meta(meta_path, url)
        name = display_name(url)
        try:
            if scheme == "ftp":
                body, new_meta = self._retrying(url, name, lambda: self._ftp_small(url, meta))
            else:
                body, new_meta = self._retrying(url, name, lambda: self._http_small(url, meta))
        except NotFound:
            _remove(meta_path)
            return None
        if new_meta is not None and new_meta is not meta:
            with _writing(meta_path, url, self.cache_dir):
                write_atomic(meta_path, json.dumps(new_meta) + "\n")
        elif new_meta is None:
            _remove(meta_path)
        return body

    def get_text(self, url: str) -> bytes | None:
        """A small file, fetched whole every time; None if absent."""
        scheme = _scheme(url)
        if scheme == "file":
            return self._read_local(url)
        name = display_name(url)
        try:
            if scheme == "ftp":
                body, _ = self._retrying(url, name, lambda: self._ftp_small(url, None))
            else:
                body, _ = self._retrying(url, name, lambda: self._http_small(url, None))
        except NotFound:
            return None
        return body

    def _read_local(self, url: str) -> bytes | None:
        path = local_path(url)
        try:
            # O_NONBLOCK: a FIFO put in the repository (by whoever can write to it) must
            # not block the operation, which holds the layer's lock, forever.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
            with os.fdopen(fd, "rb") as f:
                if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                    raise FetchError(
                        f"{path} is not a regular file", "check the repository", url=url
                    )
                body = f.read(SMALL_LIMIT + 1)
            _check_small(url, len(body))  # refused with the limit named, never cut
            return body
        except FileNotFoundError:
            return None
        except OSError as e:
            raise FetchError(
                f"cannot read {path}: {e.strerror}",
                "check the path and its permissions",
                url=url,
            ) from e

    def _small_budget(self, url: str) -> _Budget:
        """The deadline of one small file (an index, SHA256SUMS, its signature): the
        rate and grace of a download, so a server sending a byte within each read timeout
        cannot keep an operation (and the layer's lock) waiting for days."""
        return _Budget(
            url, None, max_size=SMALL_LIMIT, min_rate=self.min_rate, grace=self.grace,
            clock=self.clock,
        )  # fmt: skip

    def _http_small(
        self, url: str, meta: dict[str, Any] | None
    ) -> tuple[bytes, dict[str, Any] | None]:
        headers = {}
        if meta is not None:
            if meta.get("etag"):
                headers["If-None-Match"] = meta["etag"]
            if meta.get("last_modified"):
                headers["If-Modified-Since"] = meta["last_modified"]
        login = self.login_for(url)
        with self._open(url, headers, login) as response:
            if response.status == 304 and meta is not None:
                return _meta_body(meta), meta
            if response.status != 200:
                raise _http_status_error(url, response.status, response.reason, login)
            expected_length = _content_length(response.headers)
            budget = self._small_budget(url)
            budget.announced(expected_length)
            body = bytearray()
            while data := self._read(response):
                body += data
                _check_small(url, len(body))
                budget.received = len(body)
                budget.check()  # a mirror that trickles must not hold the lock forever
            if expected_length is not None and len(body) < expected_length:
                raise _Transient(
                    f"the connection closed after {len(body)} of {expected_length} bytes"
                )
            etag = response.headers.get("ETag")
            modified = response.headers.get("Last-Modified")
        if not etag and not modified:
            return bytes(body), None  # nothing to revalidate with: do not keep it
        return bytes(body), _new_meta(url, bytes(body), etag=etag, last_modified=modified)

    def _ftp_small(
        self, url: str, meta: dict[str, Any] | None
    ) -> tuple[bytes, dict[str, Any] | None]:
        path = _ftp_path(url)
        body = bytearray()
        budget = self._small_budget(url)

        def receive(data: bytes) -> None:
            body.extend(data)
            _check_small(url, len(body))
            budget.received = len(body)
            budget.check()

        try:
            with _ftp_session(
                url, self.connect_timeout, self.read_timeout, self.login_for(url)
            ) as ftp:
                if meta is not None:
                    mdtm = _ftp_query(ftp, f"MDTM {path}")
                    length = _ftp_query(ftp, f"SIZE {path}")
                    validator = f"{mdtm} {length}" if mdtm and length else None
                    if validator and validator == meta.get("validator"):
                        return _meta_body(meta), meta
                ftp.retrbinary(f"RETR {path}", receive, blocksize=CHUNK)
                # After the transfer, so they describe what was read (or something newer,
                # which only costs one extra download next time).
                mdtm = _ftp_query(ftp, f"MDTM {path}")
                length = _ftp_query(ftp, f"SIZE {path}")
        except (ftplib.Error, OSError, EOFError) as e:
            raise _ftp_failure(url, e, self.read_timeout) from e
        if length is not None and length.isdigit() and len(body) < int(length):
            raise _Transient(f"the transfer ended after {len(body)} of {length} bytes")
        validator = f"{mdtm} {length}" if mdtm and length else None
        if validator is None:
            return bytes(body), None
        return bytes(body), _new_meta(url, bytes(body), validator=validator)
