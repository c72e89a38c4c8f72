"""Verify: a package's origin and integrity are checked before anything of it is
unpacked or cached.

Integrity (`integrity`): a sha256 mismatch names the file, where it came from and both
digests, so the user can tell a truncated download from a replaced file. Origin: a
repository's signature and its trusted keys (`signature`), and the generation and expiry
of what it signed (`trust`); the one place that decides whether a repository is trusted.
The names below are what the rest of layershell uses; the others live in their module.
"""

from __future__ import annotations

from layershell.packages.verify.integrity import HashMismatch, private_copy, sha256_file
from layershell.packages.verify.signature import Verification, key_files, read_key_file
from layershell.packages.verify.trust import Trust

__all__ = [
    "HashMismatch",
    "Trust",
    "Verification",
    "key_files",
    "private_copy",
    "read_key_file",
    "sha256_file",
]
