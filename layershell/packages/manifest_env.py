"""A package's `env:` as the manifest gives it and grants.json keeps it: apart from
manifest.py, so that what only reads grants (core list) does not import the manifest's
validation."""

from __future__ import annotations

import re

from layershell.frozen import Frozen

ENV_NAME_RE = re.compile(r"\A[A-Za-z_][A-Za-z0-9_]{0,127}\Z")


class EnvSettings(Frozen):
    """A package's `env:`: what of the caller's environment its shims' programs get,
    beyond the profile's rule (docs/exposure.md, "Environment")."""

    passed: tuple[str, ...] = ()  # `pass:` also under strict (which passes a short list)
    denied: tuple[str, ...] = ()  # `deny:` never, under any profile
    set: tuple[tuple[str, str], ...] = ()  # `set:` always, whatever the caller has

    def as_json(self) -> dict[str, object]:
        return {"pass": list(self.passed), "deny": list(self.denied), "set": dict(self.set)}


NO_ENV = EnvSettings()
