from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import support
from tests.servers import Servers

REPO = Path(__file__).resolve().parent.parent


def _digest(package: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(package.rglob("*")):
        skip = "__pycache__" in path.parts or "_data" in path.parts
        if path.suffix in (".py", ".c") and not skip:
            h.update(str(path.relative_to(package)).encode() + path.read_bytes())
    return h.hexdigest()


def pytest_sessionstart(session: pytest.Session) -> None:
    """Other accounts run the installed copy of layershell (the checkout may be
    unreadable to them), so the tests are meaningless if it differs from the checkout.
    LAYERSHELL_SKIP_INSTALL_CHECK=1 lets a developer run in-process unit tests while the
    installed copy is stale; CI never sets it."""
    if os.environ.get("LAYERSHELL_SKIP_INSTALL_CHECK") == "1":
        return
    where = subprocess.run(
        [
            sys.executable,
            "-c",
            "import layershell, os; print(os.path.dirname(layershell.__file__))",
        ],
        cwd="/",
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    if not where:
        pytest.exit("layershell is not installed in this interpreter: run ./dev.sh test", 2)
    installed = Path(where)
    if installed != REPO / "layershell":
        src = REPO / "layershell"
        ours = _digest(src)
        theirs = _digest(installed)
        # profiles/ ship inside the wheel as _data; compare the code only.
        if ours != theirs:
            pytest.exit(
                f"the installed layershell ({installed}) differs from this checkout: "
                "run ./dev.sh test (it reinstalls)",
                2,
            )


@pytest.fixture(scope="session")
def rootless() -> Iterator[support.Identity]:
    """An ordinary identity with `core --rootless init` done in a private HOME."""
    if not support.userns_available():
        pytest.skip("unprivileged user namespaces are disabled on this kernel")
    with support.rootless_identity() as ident:
        yield ident


@pytest.fixture(scope="session")
def system() -> Iterator[support.SystemStack]:
    """A system-mode stack: real accounts, real PAM service, relocated root."""
    if not support.IS_ROOT:
        pytest.skip("needs root: creates accounts and a PAM service (CI runs as root)")
    with support.system_stack() as stack:
        yield stack


@pytest.fixture(scope="module")
def stack() -> Iterator[support.SystemStack]:
    """Like `system`, but a module's own: for attack tests that damage the stack when
    they succeed, or edit its records and its host manifest."""
    if not support.IS_ROOT:
        pytest.skip("needs root: creates accounts and a PAM service (CI runs as root)")
    with support.system_stack() as s:
        yield s


@pytest.fixture
def fresh_rootless() -> Iterator[support.Identity]:
    """Like `rootless`, but new for each test: its own HOME, store and database."""
    if not support.userns_available():
        pytest.skip("unprivileged user namespaces are disabled on this kernel")
    with support.rootless_identity() as ident:
        yield ident


@pytest.fixture
def small_disk() -> Iterator[support.Identity]:
    """A rootless identity on a full-able 20 MB home (root only: it mounts a tmpfs)."""
    with support.small_disk_identity() as ident:
        yield ident


@pytest.fixture
def servers() -> Iterator[Servers]:
    """Loopback HTTP and FTP repositories, stopped after the test."""
    with Servers() as s:
        yield s


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A 0755 directory under /var/tmp that every test identity can read."""
    import shutil

    path = support.make_shared_dir("layershell-data-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP listener on the host's 127.0.0.1 that answers b"pong" (network tests)."""
    import socket
    import threading

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)

    def serve() -> None:
        try:
            while True:
                conn, _ = srv.accept()
                conn.sendall(b"pong")
                conn.close()
        except OSError:
            pass

    threading.Thread(target=serve, daemon=True).start()
    yield srv.getsockname()[1]
    srv.close()


@pytest.fixture(scope="session")
def sysext_built(tmp_path_factory: pytest.TempPathFactory) -> support.BuiltImage:
    """The system extension image of this checkout, built once per run with the
    documented command's code (layershell.host.sysext.build), and extracted."""
    return support.build_sysext(tmp_path_factory.mktemp("sysext"))
