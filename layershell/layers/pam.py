"""PAM sessions for `core shell`: the only module that imports pam.

Root opens a real session for the layer's account (service `layer-shell`, shipped in
profiles/pam/), so lastlog, limits, pam_systemd, auditing and the site's own modules see
it as they see `su`. Authentication is pam_rootok (only root gets here); account
management runs too, so an account it refuses is refused: an expired one, including one
locked the way usermod(8) advises (`usermod --lock --expiredate 1`). A password lock
alone (`usermod -L`) only stops password logins, for core shell as for su.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pam as _pam

from layershell.errors import LayershellError, PermissionRefused

DEFAULT_SERVICE = "layer-shell"
SERVICE_ENV = "LAYERSHELL_PAM_SERVICE"  # tests point this at their own service file

# Account-management results that mean "this account may not log in now".
_REFUSALS = {
    _pam.PAM_ACCT_EXPIRED: "the account has expired or is locked",
    _pam.PAM_PERM_DENIED: "PAM denied access to the account",
    _pam.PAM_NEW_AUTHTOK_REQD: "the account's password has expired",
    _pam.PAM_AUTH_ERR: "PAM refused the account",
    _pam.PAM_USER_UNKNOWN: "PAM does not know the account",
}


def shadow_state(user: str, shadow: str = "/etc/shadow") -> str:
    """Why the account database says `user` may not log in, in words ("" if it does not
    say). Only root reads shadow; this only improves the message, PAM decides."""
    try:
        with open(shadow, encoding="utf-8") as f:
            fields = next((ln.split(":") for ln in f if ln.split(":", 1)[0] == user), None)
    except OSError:
        return ""
    if fields is None or len(fields) < 8:
        return ""
    reasons = []
    if fields[7].strip() and int(fields[7]) * 86400 <= time.time():
        reasons.append(f"the account expired on day {fields[7].strip()} after 1970-01-01")
    if fields[1].startswith("!") and len(fields[1]) > 1:
        reasons.append("its password is locked")
    return " and ".join(reasons)


def service_name() -> str:
    return os.environ.get(SERVICE_ENV) or DEFAULT_SERVICE


@contextmanager
def session(user: str, service: str | None = None) -> Iterator[dict[str, str]]:
    """Open a PAM session for `user`; yields the environment PAM modules set."""
    service = service or service_name()
    if not os.path.exists(os.path.join("/etc/pam.d", service)):
        # PAM would fall back to the "other" service and refuse with a misleading message.
        raise LayershellError(
            f"PAM service {service!r} is not installed (/etc/pam.d/{service})",
            "run: sudo core init",
        )
    handle = _pam.PamAuthenticator()
    # authenticate() runs pam_authenticate (rootok), pam_acct_mgmt and pam_setcred.
    ok = handle.authenticate(user, "", service=service, call_end=False)
    if not ok:
        reason = _REFUSALS.get(handle.code, str(handle.reason))
        handle.end()
        if handle.code in (_pam.PAM_SERVICE_ERR, _pam.PAM_SYSTEM_ERR, _pam.PAM_ABORT):
            raise LayershellError(
                f"PAM service {service!r} failed: {handle.reason}",
                f"check /etc/pam.d/{service} (core init installs it)",
            )
        raise PermissionRefused(
            f"account {user} is refused by PAM account management: "
            f"{shadow_state(user) or reason} (PAM: {handle.reason})",
            f"if that is not intended, lift the expiry: usermod --expiredate '' {user}",
        )
    result = handle.open_session()
    if result != _pam.PAM_SUCCESS:
        handle.end()
        raise LayershellError(
            f"cannot open a PAM session for {user}: {handle.reason}",
            f"check the session lines of /etc/pam.d/{service}",
        )
    env = handle.getenvlist()
    try:
        yield dict(env) if isinstance(env, dict) else {}
    finally:
        handle.close_session()
        handle.end()
