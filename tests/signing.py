"""The test suite's repository keys: real OpenPGP keys made by the real gpg, once per
run, in a private GNUPGHOME. `key()` is the key every test repository is signed with
(tests/packages.py) and every test identity trusts (tests/support.py), so that installs
go through signature verification as on a real host; `other()` is a key nobody trusts,
`expiring()` one that expires within seconds of being made (for the expired-key case)."""

from __future__ import annotations

import atexit
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

TEST_KEY_FILE = "layershell-tests.asc"


@dataclass(frozen=True)
class Key:
    fingerprint: str
    public: bytes  # armored
    home: str  # the GNUPGHOME that holds its secret key

    def trust(
        self, keys_dir: Path, owner: tuple[int, int] | None = None, name: str = TEST_KEY_FILE
    ) -> Path:
        """Put the public key in a host's keys directory."""
        import os

        keys_dir.mkdir(parents=True, exist_ok=True)
        path = keys_dir / name
        path.write_bytes(self.public)
        path.chmod(0o644)
        if owner is not None:
            for p in (keys_dir.parent, keys_dir, path):
                os.chown(p, *owner)
        return path

    def gpg(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["gpg", "--homedir", self.home, "--batch", "--yes", *args],
            capture_output=True,
            check=True,
            timeout=120,
        )


_home: str | None = None
_keys: dict[str, Key] = {}


def _gnupg_home() -> str:
    global _home
    if _home is None:
        _home = tempfile.mkdtemp(prefix="lsgpg-", dir="/tmp")
        atexit.register(_cleanup)
    return _home


def _cleanup() -> None:
    if _home is not None:
        subprocess.run(
            ["gpgconf", "--homedir", _home, "--kill", "all"], capture_output=True, check=False
        )
        shutil.rmtree(_home, ignore_errors=True)


def make(label: str, expire: str = "1y") -> Key:
    """A new ed25519 signing key `label` (cached per label for the run)."""
    if label in _keys:
        return _keys[label]
    if shutil.which("gpg") is None:
        import pytest

        pytest.skip("gpg is not installed (./dev.sh test installs gnupg)")
    home = _gnupg_home()
    uid = f"layershell {label} <{label}@layershell.invalid>"
    subprocess.run(
        [
            "gpg",
            "--homedir",
            home,
            "--batch",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
            "--quick-gen-key",
            uid,
            "ed25519",
            "sign",
            expire,
        ],
        capture_output=True,
        check=True,
        timeout=120,
    )
    listed = subprocess.run(
        ["gpg", "--homedir", home, "--with-colons", "--list-keys", uid],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    fingerprint = next(
        line.split(":")[9] for line in listed.splitlines() if line.startswith("fpr:")
    )
    public = subprocess.run(
        ["gpg", "--homedir", home, "--armor", "--export", fingerprint],
        capture_output=True,
        check=True,
    ).stdout
    _keys[label] = Key(fingerprint, public, home)
    return _keys[label]


def key() -> Key:
    return make("tests")


def other() -> Key:
    return make("other")


def expiring() -> Key:
    return make("expiring", "seconds=1")
