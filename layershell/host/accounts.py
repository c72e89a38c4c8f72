"""Layer accounts: look them up and create them in the host's account database.

Accounts are always the host's, also under --root (which relocates layershell's own
paths): on an image, Ignition creates the accounts (`core ignition`).
"""

from __future__ import annotations

import pwd
import subprocess
from dataclasses import dataclass

from layershell.errors import LayershellError


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    home: str
    shell: str


def lookup(name: str) -> Account | None:
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        return None
    return Account(pw.pw_name, pw.pw_uid, pw.pw_gid, pw.pw_dir, pw.pw_shell)


def create(name: str, *, home: str, shell: str) -> Account:
    """useradd with its own group and a home (created, owned by the account)."""
    cmd = ["useradd", "--create-home", "--home-dir", home, "--shell", shell, "--user-group", name]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise LayershellError(
            "useradd was not found", "install the passwd package (apt-get install passwd)"
        ) from None
    if result.returncode != 0:
        raise LayershellError(
            f"cannot create account {name}: {result.stderr.strip() or result.returncode}",
            f"command was: {' '.join(cmd)}",
        )
    account = lookup(name)
    if account is None:
        raise LayershellError(f"account {name} was created but cannot be found")
    return account


def remove(name: str) -> None:
    subprocess.run(["userdel", "--remove", name], capture_output=True, check=False)
