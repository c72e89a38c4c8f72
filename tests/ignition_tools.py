"""The real Ignition binaries for tests: Debian's `ignition` package (2.14), unpacked.

`apt-get download ignition` into a cache directory ($LAYERSHELL_IGNITION_CACHE, by default
/var/cache/layershell-ignition), then `dpkg -x`. The second call finds them there. When
they cannot be had (no apt, no package lists, no network, a cache nobody may write),
the helpers skip the test and say why.

    tools = ignition_tools.require()          # skips when impossible
    ignition_tools.validate(tools, path)      # ignition-validate, asserting success
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

CACHE_ENV = "LAYERSHELL_IGNITION_CACHE"
DEFAULT_CACHE = "/var/cache/layershell-ignition"
PACKAGE = "ignition"
VALIDATE = "usr/bin/ignition-validate"
IGNITION = "usr/lib/dracut/modules.d/30ignition/ignition"
TIMEOUT = 300


@dataclass(frozen=True)
class Tools:
    validate: Path  # ignition-validate
    ignition: Path  # the Ignition binary the initramfs runs (stages fetch, files, ...)


class Unavailable(Exception):
    """Why the binaries cannot be had here."""


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def _found(root: Path) -> Tools | None:
    tools = Tools(root / VALIDATE, root / IGNITION)
    ok = all(os.access(p, os.X_OK) for p in (tools.validate, tools.ignition))
    return tools if ok else None


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    # Parallel test processes share the cache: one downloads, the others wait.
    with open(directory / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            argv, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT, check=False
        )
    except FileNotFoundError:
        raise Unavailable(f"{argv[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise Unavailable(f"{' '.join(argv)} took longer than {TIMEOUT} s") from None


def _download(directory: Path) -> Path:
    for old in directory.glob(f"{PACKAGE}_*.deb"):
        old.unlink()
    r = _run(["apt-get", "download", PACKAGE], directory)
    if r.returncode != 0 and os.getuid() == 0:
        # No package lists yet (a fresh container): fetch them once and retry.
        _run(["apt-get", "update"], directory)
        r = _run(["apt-get", "download", PACKAGE], directory)
    debs = sorted(directory.glob(f"{PACKAGE}_*.deb"))
    if r.returncode != 0 or not debs:
        tail = " ".join((r.stderr or r.stdout).strip().splitlines()[-2:])
        raise Unavailable(f"`apt-get download {PACKAGE}` failed: {tail}")
    return debs[-1]


def obtain() -> Tools:
    """The binaries, downloading and unpacking them into the cache if needed;
    raises Unavailable saying why not."""
    cache = cache_dir()
    pkg = cache / "pkg"
    found = _found(pkg)
    if found is not None:
        return found
    try:
        cache.mkdir(mode=0o755, parents=True, exist_ok=True)
    except OSError as exc:
        raise Unavailable(f"cannot create {cache}: {exc.strerror}; set {CACHE_ENV}") from None
    if not os.access(cache, os.W_OK):
        raise Unavailable(f"cannot write {cache}; set {CACHE_ENV} to a writable directory")
    with _locked(cache):
        found = _found(pkg)
        if found is not None:
            return found
        deb = _download(cache)
        staging = Path(tempfile.mkdtemp(prefix=".pkg-", dir=cache))
        r = _run(["dpkg", "-x", str(deb), str(staging)], cache)
        if r.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            raise Unavailable(f"dpkg -x {deb.name} failed: {r.stderr.strip()}")
        shutil.rmtree(pkg, ignore_errors=True)
        staging.chmod(0o755)
        staging.rename(pkg)
    found = _found(pkg)
    if found is None:
        raise Unavailable(f"{deb.name} holds no {VALIDATE} and {IGNITION}")
    return found


def require() -> Tools:
    """The binaries, or skip the calling test with the reason."""
    try:
        return obtain()
    except Unavailable as exc:
        pytest.skip(f"the real Ignition is not available: {exc}")


def validate(tools: Tools, config: Path) -> str:
    """Run ignition-validate on `config`; assert it accepts it; return its output
    (warnings, if any)."""
    r = subprocess.run(
        [str(tools.validate), str(config)], capture_output=True, text=True, timeout=60, check=False
    )
    output = r.stdout + r.stderr
    assert r.returncode == 0, f"ignition-validate refused {config}:\n{output}"
    return output
