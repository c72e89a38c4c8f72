"""Issue 13, item 4: a changed manifest applies at the next `core install --config`,
without a new install: the shims are rendered again under the new profile and env."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support import Identity, python_cmd
from tests.test_shims import install


def rows(ident: Identity) -> list[tuple[object, ...]]:
    """What identifies each install record (not what core list says of its exposure)."""
    r = ident.run(python_cmd("list", "--json", "--all"))
    assert r.returncode == 0, r.stderr.decode()
    keys = ("name", "version", "sha256", "path", "installed_at", "active")
    return [tuple(row[k] for k in keys) for row in json.loads(r.stdout)]


def sees_tmp(ident: Identity, probe: Path) -> bool:
    return ident.run(["peek", str(probe)], cwd="/").stdout.decode() == "here\n"


def test_a_profile_changed_in_the_manifest_changes_the_shims_sandbox(
    fresh_rootless: Identity, shared_dir: Path, tmp_path: Path
) -> None:
    ident = fresh_rootless
    install(ident, shared_dir, "strict")
    probe = Path("/tmp") / f"{tmp_path.name}-probe"
    probe.write_text("here\n")
    try:
        assert not sees_tmp(ident, probe)  # strict: a private /tmp
        before = rows(ident)
        config = ident.home / "fid-strict.yaml"
        # trusted: the one profile that shares the caller's /tmp
        config.write_text(config.read_text().replace("profile: strict", "profile: trusted"))
        r = ident.run(python_cmd("install", "--config", str(config)))
        assert r.returncode == 0, r.stderr.decode()
        assert "already installed fid 1.0" in r.stdout.decode()
        assert "profile trusted" in (ident.home / ".local/bin/peek").read_text()
        assert sees_tmp(ident, probe)  # trusted: the caller's /tmp
        assert rows(ident) == before  # no new install, no new record
        r = ident.run(python_cmd("list", "--json"))
        granted = json.loads(r.stdout)[0]["granted"]  # what core list says is in force
        assert granted["profile"] == "trusted" and granted["profile_given"] is True
        # ... and back: the stricter profile applies the same way.
        config.write_text(config.read_text().replace("profile: trusted", "profile: strict"))
        assert ident.run(python_cmd("install", "--config", str(config))).returncode == 0
        assert not sees_tmp(ident, probe)
    finally:
        probe.unlink(missing_ok=True)


def test_env_changed_in_the_manifest_applies_too(
    fresh_rootless: Identity, shared_dir: Path
) -> None:
    ident = fresh_rootless
    install(ident, shared_dir, "default")
    config = ident.home / "fid-default.yaml"
    config.write_text(config.read_text() + "      env: {set: {FID_MODE: fast}}\n")
    assert ident.run(python_cmd("install", "--config", str(config))).returncode == 0
    assert "--setenv FID_MODE fast" in (ident.home / ".local/bin/peek").read_text()
