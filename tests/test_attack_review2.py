"""Attacks on the credential masks (review2), as the attacks."""

from __future__ import annotations

import os
from pathlib import Path

from tests.packages import tarball
from tests.support import Identity
from tests.test_install import core

SECRET = "machine repo.example login arne password hunter2\n"
READ = '#!/bin/sh\ncat "$1" 2>/dev/null || echo unreadable\n'


def test_a_home_behind_a_link_does_not_uncover_the_credentials(
    rootless: Identity, shared_dir: Path
) -> None:
    """A shim binds the caller's home at its real path and again at $HOME when $HOME is
    a link to it (Fedora CoreOS: /home -> var/home). The masks over ~/.netrc covered
    one of the two binds only: the program read the logins through the other."""
    ident = rootless
    netrc = ident.home / ".netrc"
    netrc.write_text(SECRET)
    os.chown(netrc, ident.uid, ident.gid)
    netrc.chmod(0o600)
    link = shared_dir / f"homelink-{os.getpid()}"
    link.symlink_to(ident.home)
    package = tarball(shared_dir / "credprobe_1.0.tar.gz", {"bin/credprobe": READ})
    shim = str(ident.home / ".local/bin/credprobe")
    try:
        r = core(ident, "install", str(package))
        assert r.returncode == 0, r.stderr.decode()
        for home in (ident.home, link):
            for target in (ident.home / ".netrc", link / ".netrc"):
                r = ident.run([shim, str(target)], env={"HOME": str(home)})
                assert "hunter2" not in r.stdout.decode(), (home, target)
    finally:
        core(ident, "remove", "credprobe")
        netrc.unlink(missing_ok=True)
        link.unlink(missing_ok=True)
