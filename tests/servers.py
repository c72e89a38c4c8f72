"""Loopback repositories for tests: an HTTP and an FTP server over a directory.

Both listen on 127.0.0.1 on a free port, serve from a thread, keep a log of what clients
asked, and can be told to misbehave on a path (cut a body short, stall, trickle one byte
at a time, announce a huge or a too small length, redirect, answer 404 or 503) so the
client's retry, resume, timeout, deadline and cap paths run against real sockets. Either
can ask for a login (HTTP Basic, FTP USER/PASS).

    with HttpRepo(tmp_path) as repo:
        fetcher.fetch(repo.url_for("x86_64/goss_v0.0.1.tar.gz"), sha256=...)
        assert repo.count("/x86_64/goss_v0.0.1.tar.gz") == 1

`Servers` starts any number of them and stops them all; a test module wraps it in a
fixture (see tests/test_fetch.py).
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import os
import socket
import sys
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

LOOPBACK = "127.0.0.1"
CHUNK = 64 * 1024


def _repo_path(path: str) -> str:
    """A path as the logs and fault tables key it: decoded, with one leading slash."""
    return "/" + urllib.parse.unquote(urllib.parse.urlsplit(path).path).lstrip("/")


def _inside(root: Path, path: str) -> Path | None:
    """The file under `root` that a request path names, or None (missing, a directory,
    or outside the root)."""
    candidate = (root / path.lstrip("/")).resolve()
    if not candidate.is_relative_to(root) or not candidate.is_file():
        return None
    return candidate


# --- HTTP ----------------------------------------------------------------------------


@dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str
    status: int
    headers: dict[str, str]


@dataclass
class _Fault:
    kind: str  # "cut", "stall", "status", "slow", "huge", "short" or "redirect"
    after_bytes: int = 0
    seconds: float = 0.0
    code: int = 0
    remaining: int | None = None  # None: every time
    length: int | None = None  # "huge": the Content-Length announced (None: none)
    location: str = ""  # "redirect"


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    repo: HttpRepo

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-body (a refused download, a test's fault) is
        # normal here; socketserver would print a traceback into the output under test.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class _HttpHandler(BaseHTTPRequestHandler):
    server: _HttpServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the repo keeps its own log

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def _serve(self, *, head: bool) -> None:
        repo = self.server.repo
        path = _repo_path(self.path)
        self.close_connection = True
        if repo.login is not None and not self._logged_in(repo.login):
            self._reply(path, 401, {"WWW-Authenticate": 'Basic realm="test"'}, b"login\n", head)
            return
        fault = repo._take_fault(path)
        if fault is not None and fault.kind == "status":
            self._reply(path, fault.code, {}, b"injected failure\n", head)
            return
        if fault is not None and fault.kind == "redirect":
            self._reply(path, fault.code, {"Location": fault.location}, b"moved\n", head)
            return
        if fault is not None and fault.kind == "huge":
            self._huge(path, fault, head)
            return
        file = _inside(repo.root, path)
        if file is None:
            self._reply(path, 404, {}, b"not found\n", head)
            return
        data = file.read_bytes()
        mtime = int(file.stat().st_mtime)
        etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
        modified = email.utils.formatdate(mtime, usegmt=True)
        validators = {"ETag": etag, "Last-Modified": modified}
        if self._not_modified(etag, mtime):
            self._reply(path, 304, validators, b"", head)
            return
        if fault is not None and fault.kind == "short":
            # A Content-Length smaller than the file, every time, whatever the Range.
            self._reply(path, 200, validators, data[: fault.after_bytes], head)
            return
        status, body, extra = self._range(data, etag, modified)
        headers = {**validators, **extra, "Accept-Ranges": "bytes"}
        if fault is not None and fault.kind == "slow" and status in (200, 206):
            self._slow(path, status, headers, body, fault, head)
            return
        if fault is None or status not in (200, 206):
            self._reply(path, status, headers, body, head)
            return
        self._reply(path, status, headers, b"", head, length=len(body))
        if head:
            return
        try:
            self.wfile.write(body[: fault.after_bytes])
            self.wfile.flush()
            if fault.kind == "stall":
                repo._stopping.wait(fault.seconds)
                self.wfile.write(body[fault.after_bytes :])
            # "cut": the handler returns and the connection closes mid-body.
        except OSError:
            pass  # the client gave up first: that is what a stall is for

    def _logged_in(self, login: tuple[str, str]) -> bool:
        token = base64.b64encode(f"{login[0]}:{login[1]}".encode()).decode()
        return self.headers.get("Authorization") == f"Basic {token}"

    def _slow(
        self,
        path: str,
        status: int,
        headers: dict[str, str],
        body: bytes,
        fault: _Fault,
        head: bool,
    ) -> None:
        """One byte every `fault.seconds`; with or without a Content-Length (length 0)."""
        repo = self.server.repo
        repo._record(HttpRequest(self.command, path, status, dict(self.headers.items())))
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        if fault.length != 0:
            self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if head:
            return
        try:
            for i in range(len(body)):
                if repo._stopping.wait(fault.seconds):
                    return
                self.wfile.write(body[i : i + 1])
                self.wfile.flush()
        except OSError:
            pass  # the client gave up: that is what the deadline is for

    def _huge(self, path: str, fault: _Fault, head: bool) -> None:
        """Announce `fault.length` bytes (or none), send `fault.after_bytes` of zeros,
        then close: a server that would go on for as long as it is let."""
        repo = self.server.repo
        repo._record(HttpRequest(self.command, path, 200, dict(self.headers.items())))
        self.send_response(200)
        self.send_header("ETag", '"huge"')
        if fault.length is not None:
            self.send_header("Content-Length", str(fault.length))
        self.send_header("Connection", "close")
        self.end_headers()
        if head:
            return
        chunk = bytes(CHUNK)
        sent = 0
        try:
            while sent < fault.after_bytes and not repo._stopping.is_set():
                n = min(len(chunk), fault.after_bytes - sent)
                self.wfile.write(chunk[:n])
                sent += n
        except OSError:
            pass  # the client stopped reading: what a cap is for

    def _not_modified(self, etag: str, mtime: int) -> bool:
        match = self.headers.get("If-None-Match")
        if match is not None:  # it takes precedence over If-Modified-Since (RFC 9110)
            tags = [t.strip() for t in match.split(",")]
            return "*" in tags or etag in tags
        since = self.headers.get("If-Modified-Since")
        if since is None:
            return False
        try:
            return mtime <= email.utils.parsedate_to_datetime(since).timestamp()
        except (TypeError, ValueError):
            return False

    def _range(self, data: bytes, etag: str, modified: str) -> tuple[int, bytes, dict[str, str]]:
        spec = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        if not spec or not spec.startswith("bytes=") or "," in spec:
            return 200, data, {}
        if if_range is not None and if_range not in (etag, modified):
            return 200, data, {}  # the client's copy is of another version
        first_text, _, last_text = spec[6:].partition("-")
        try:
            first = int(first_text)
            last = int(last_text) if last_text else len(data) - 1
        except ValueError:
            return 200, data, {}
        if first >= len(data):
            return 416, b"", {"Content-Range": f"bytes */{len(data)}"}
        last = min(last, len(data) - 1)
        return 206, data[first : last + 1], {"Content-Range": f"bytes {first}-{last}/{len(data)}"}

    def _reply(
        self,
        path: str,
        status: int,
        headers: dict[str, str],
        body: bytes,
        head: bool,
        length: int | None = None,
    ) -> None:
        self.server.repo._record(
            HttpRequest(self.command, path, status, dict(self.headers.items()))
        )
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        if status != 304:
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body) if length is None else length))
        self.send_header("Connection", "close")
        self.end_headers()
        if body and not head:
            self.wfile.write(body)


class HttpRepo:
    """Serves the files under `root` over HTTP on 127.0.0.1, with ETag, Last-Modified,
    conditional requests (304), ranges (206/416), a request log and injected faults."""

    def __init__(
        self, root: str | os.PathLike[str], *, login: tuple[str, str] | None = None
    ) -> None:
        self.root = Path(root).resolve()
        self.login = login  # (user, password): every request needs it (401 otherwise)
        self._lock = threading.Lock()
        self._log: list[HttpRequest] = []
        self._faults: dict[str, _Fault] = {}
        self._stopping = threading.Event()
        self._server = _HttpServer((LOOPBACK, 0), _HttpHandler)
        self._server.repo = self
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def url_for(self, path: str) -> str:
        return f"{self.url}/{urllib.parse.quote(path.lstrip('/'))}"

    # -- lifecycle

    def start(self) -> HttpRepo:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # release stalled handlers
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> HttpRepo:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- the log

    def _record(self, request: HttpRequest) -> None:
        with self._lock:
            self._log.append(request)

    @property
    def requests(self) -> list[HttpRequest]:
        with self._lock:
            return list(self._log)

    def count(
        self, path: str | None = None, *, method: str | None = None, status: int | None = None
    ) -> int:
        """How many requests matched (every argument given must match)."""
        key = _repo_path(path) if path is not None else None
        return sum(
            1
            for r in self.requests
            if (key is None or r.path == key)
            and (method is None or r.method == method)
            and (status is None or r.status == status)
        )

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    # -- faults

    def _take_fault(self, path: str) -> _Fault | None:
        with self._lock:
            fault = self._faults.get(path)
            if fault is None:
                return None
            if fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    del self._faults[path]
            return fault

    def _add_fault(self, path: str, fault: _Fault) -> None:
        with self._lock:
            self._faults[_repo_path(path)] = fault

    def fail_once_mid_body(self, path: str, after_bytes: int) -> None:
        """Next request: headers with the full Content-Length, `after_bytes` of the
        body, then the connection closes."""
        self._add_fault(path, _Fault("cut", after_bytes=after_bytes, remaining=1))

    def stall(self, path: str, after_bytes: int, seconds: float, times: int | None = None) -> None:
        """Send `after_bytes` of the body, then nothing for `seconds` (released early when
        the server stops), then the rest; every time, or the next `times` requests."""
        self._add_fault(
            path, _Fault("stall", after_bytes=after_bytes, seconds=seconds, remaining=times)
        )

    def not_found(self, path: str) -> None:
        """Answer 404 for `path` from now on, even if the file exists."""
        self.status(path, 404)

    def status(self, path: str, code: int, times: int | None = None) -> None:
        """Answer `code` with a short body for `path`: every time, or `times` times."""
        self._add_fault(path, _Fault("status", code=code, remaining=times))

    def slow(self, path: str, seconds: float, *, length: bool = True) -> None:
        """Every request: one byte of the body every `seconds`, with a Content-Length
        (length) or without one (the body ends when the connection closes)."""
        self._add_fault(path, _Fault("slow", seconds=seconds, length=None if length else 0))

    def huge(self, path: str, length: int | None, *, sends: int) -> None:
        """Every request: announce `length` bytes (None: no Content-Length), send
        `sends` bytes of zeros, close. The file need not exist."""
        self._add_fault(path, _Fault("huge", after_bytes=sends, length=length))

    def short(self, path: str, length: int) -> None:
        """Every request: a Content-Length of `length` (smaller than the file) and that
        many bytes, answered 200 whatever the Range."""
        self._add_fault(path, _Fault("short", after_bytes=length))

    def redirect(self, path: str, location: str, code: int = 302) -> None:
        """Every request for `path`: a redirect to `location`."""
        self._add_fault(path, _Fault("redirect", code=code, location=location))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()


# --- FTP -----------------------------------------------------------------------------


@dataclass
class _FtpState:
    root: Path
    lock: threading.Lock = field(default_factory=threading.Lock)
    commands: list[tuple[str, str]] = field(default_factory=list)
    drops: dict[str, int] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)  # what SIZE answers instead
    login: tuple[str, str] | None = None


def _ftp_classes(state: _FtpState) -> Any:
    """A handler class bound to this repo's state (pyftpdlib configures by class)."""
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import DTPHandler, FTPHandler

    class Dtp(DTPHandler):  # type: ignore[misc]
        """Drops the data connection after N bytes of a file, when told to (once)."""

        dropping = False

        def send(self, data: bytes) -> int:
            if self.dropping:
                return 0
            name = getattr(self.file_obj, "name", None)
            if isinstance(name, str):
                path = _repo_path(os.path.relpath(name, state.root))
                with state.lock:
                    limit = state.drops.get(path)
                    if limit is not None and self.tot_bytes_sent + len(data) > limit:
                        del state.drops[path]
                    else:
                        limit = None
                if limit is not None:
                    room = max(0, limit - self.tot_bytes_sent)
                    sent: int = super().send(data[:room]) if room else 0
                    self.dropping = True
                    # Close from the loop, not from inside asynchat's send path.
                    self.ioloop.call_later(0, self.handle_close)
                    return sent
            result: int = super().send(data)
            return result

    class Handler(FTPHandler):  # type: ignore[misc]
        dtp_handler = Dtp
        use_sendfile = False  # every byte goes through Dtp.send
        banner = "layershell test FTP"

        def pre_process_command(self, line: str, cmd: str, arg: str) -> Any:
            with state.lock:
                state.commands.append((cmd, arg))
            return super().pre_process_command(line, cmd, arg)

        def ftp_SIZE(self, path: str) -> Any:
            with state.lock:
                size = state.sizes.get(_repo_path(os.path.relpath(path, state.root)))
            if size is not None:
                self.respond(f"213 {size}")
                return None
            return super().ftp_SIZE(path)

    authorizer = DummyAuthorizer()
    if state.login is None:
        authorizer.add_anonymous(str(state.root), perm="elr")  # read-only
    else:
        authorizer.add_user(state.login[0], state.login[1], str(state.root), perm="elr")
    Handler.authorizer = authorizer
    return Handler


class FtpRepo:
    """Serves the files under `root` over anonymous, read-only FTP on 127.0.0.1
    (pyftpdlib: REST, SIZE, MDTM), with a command log and dropped transfers on demand."""

    def __init__(
        self, root: str | os.PathLike[str], *, login: tuple[str, str] | None = None
    ) -> None:
        from pyftpdlib.ioloop import IOLoop
        from pyftpdlib.servers import FTPServer

        self._state = _FtpState(Path(root).resolve(), login=login)
        self.root = self._state.root
        self._ioloop = IOLoop()  # its own loop: servers in one process stay independent
        self._server = FTPServer((LOOPBACK, 0), _ftp_classes(self._state), ioloop=self._ioloop)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.address[1])

    @property
    def url(self) -> str:
        return f"ftp://{LOOPBACK}:{self.port}"

    def url_for(self, path: str) -> str:
        return f"{self.url}/{urllib.parse.quote(path.lstrip('/'))}"

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._server.serve_forever(timeout=0.05, blocking=False, handle_exit=False)
        self._server.close_all()

    def start(self) -> FtpRepo:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        else:
            self._server.close_all()

    def __enter__(self) -> FtpRepo:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def commands(self) -> list[tuple[str, str]]:
        """(command, argument) for every command received, in order."""
        with self._state.lock:
            return list(self._state.commands)

    def count(self, command: str) -> int:
        return sum(1 for cmd, _ in self.commands if cmd == command.upper())

    def clear_log(self) -> None:
        with self._state.lock:
            self._state.commands.clear()

    def drop_data_once(self, path: str, after_bytes: int) -> None:
        """The next transfer of `path` closes its data connection after `after_bytes`."""
        with self._state.lock:
            self._state.drops[_repo_path(path)] = after_bytes

    def advertise_size(self, path: str, size: int) -> None:
        """SIZE of `path` answers `size` from now on, whatever the file holds."""
        with self._state.lock:
            self._state.sizes[_repo_path(path)] = size


# --- many servers, one cleanup -------------------------------------------------------


class Servers:
    """Starts repositories on demand and stops every one of them on exit."""

    def __init__(self) -> None:
        self._stops: list[Callable[[], None]] = []

    def http(
        self, root: str | os.PathLike[str], *, login: tuple[str, str] | None = None
    ) -> HttpRepo:
        repo = HttpRepo(root, login=login).start()
        self._stops.append(repo.stop)
        return repo

    def ftp(self, root: str | os.PathLike[str], *, login: tuple[str, str] | None = None) -> FtpRepo:
        repo = FtpRepo(root, login=login).start()
        self._stops.append(repo.stop)
        return repo

    def close(self) -> None:
        while self._stops:
            self._stops.pop()()

    def __enter__(self) -> Servers:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def free_port() -> int:
    """A port nothing listens on (for "connection refused" tests)."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def base_url(kind: str, root: str | os.PathLike[str], servers: Servers) -> str:
    """A repository at `root` as a file://, http:// or ftp:// URL (kind)."""
    if kind == "file":
        return f"file://{root}"
    if kind == "http":
        return servers.http(root).url
    return servers.ftp(root).url
