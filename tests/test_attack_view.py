"""Attacks on what a layer program sees (issue 10, attacks 6 and 10), as the attacks:
a cwd that uncovers the caller's home, and the private /tmp's mode."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

from tests.packages import tarball
from tests.support import Identity, SystemStack

WRITETO = '#!/bin/sh\n(echo planted >> "$1") 2>/dev/null && echo wrote || echo denied\n'


def test_a_cwd_above_the_home_does_not_make_the_home_writable(
    system: SystemStack, shared_dir: Path
) -> None:
    """A `default` shim binds the caller's home read-only and the cwd read-write. Run
    from /home (any directory above the home), the cwd's read-write bind used to cover
    the home's read-only one: the program rewrote ~/.bashrc."""
    otto = pwd.getpwnam(system.otto)
    homes = shared_dir / "home"
    victim = homes / "victim"
    victim.mkdir(parents=True)
    bashrc = victim / ".bashrc"
    bashrc.write_text("# the user's own\n")
    for path in (homes, victim, bashrc):
        os.chown(path, otto.pw_uid, otto.pw_gid)
    package = tarball(
        shared_dir / "cwdprobe_1.0.tar.gz",
        {"bin/cwdprobe": WRITETO, "bin/cwdprobe-mounts": "#!/bin/sh\ncat /proc/self/mountinfo\n"},
    )
    shim = system.root / "usr/local/bin/cwdprobe"
    try:
        r = system.core("install", str(package))
        assert r.returncode == 0, r.stderr.decode()

        def run(cwd: Path, *args: str) -> str:
            script = f'cd "{cwd}" && exec "$@"'
            argv = ["env", f"HOME={victim}", "sh", "-c", script, "sh", *args]
            r = system.as_user(system.otto, argv)
            assert r.returncode == 0, r.stderr.decode()
            return r.stdout.decode().strip()

        def probe(cwd: Path, target: Path) -> str:
            answer = run(cwd, str(shim), str(target))
            if answer != "denied" and target.name == ".bashrc":  # say what the view was
                print(run(cwd, f"{shim}-mounts"))
            return answer

        assert probe(homes, bashrc) == "denied"
        assert probe(homes, Path("victim/.bashrc")) == "denied"  # relative to a cwd above it
        assert probe(homes.parent, bashrc) == "denied"
        assert probe(victim, bashrc) == "denied"  # inside the home: read-only as before
        assert bashrc.read_text() == "# the user's own\n"
        # The cwd itself is still the caller's, read-write, as a native program's.
        assert probe(homes, homes / "note") == "wrote"
        assert (homes / "note").read_text() == "planted\n"
    finally:
        system.core("remove", "cwdprobe")
    assert not shim.exists()


def test_private_tmp_is_sticky_and_world_writable(rootless: Identity) -> None:
    """The executor read tmpfs modes as decimal: "1777" became 03361, a /tmp its owner
    could not even list."""
    r = rootless.run(
        [rootless.layer_shell, "--layer", "otto", "-c",
         "stat -c %a /tmp /var/tmp; touch /tmp/x && ls /tmp"],
    )  # fmt: skip
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode().split() == ["1777", "1777", "x"]


def test_a_home_behind_a_link_is_read_only_from_inside_it(
    system: SystemStack, shared_dir: Path
) -> None:
    """Fedora CoreOS: /home -> var/home. The home was bound at $HOME only; the program's
    cwd (getcwd: the real path) was then not shown and got bound read-write."""
    otto = pwd.getpwnam(system.otto)
    real = shared_dir / "var-home" / "victim"
    real.mkdir(parents=True)
    (shared_dir / "home").symlink_to("var-home")
    home = shared_dir / "home" / "victim"
    bashrc = real / ".bashrc"
    bashrc.write_text("# the user's own\n")
    for path in (real, bashrc):
        os.chown(path, otto.pw_uid, otto.pw_gid)
    package = tarball(shared_dir / "homeprobe_1.0.tar.gz", {"bin/homeprobe": WRITETO})
    shim = system.root / "usr/local/bin/homeprobe"
    try:
        r = system.core("install", str(package))
        assert r.returncode == 0, r.stderr.decode()
        for cwd, target in ((home, ".bashrc"), (real, ".bashrc"), (home, str(home / ".bashrc"))):
            script = f'cd "{cwd}" && exec {shim} "{target}"'
            r = system.as_user(system.otto, ["env", f"HOME={home}", "sh", "-c", script])
            assert r.returncode == 0, r.stderr.decode()
            assert r.stdout.decode().strip() == "denied", (cwd, target)
        assert bashrc.read_text() == "# the user's own\n"
    finally:
        system.core("remove", "homeprobe")


def test_writable_only_binds_no_link_the_layer_planted(rootless: Identity) -> None:
    """`--writable-only DIR` (what install.sh runs with) bound DIR as the host resolved
    it: a link /opt/pkgs/esc -> /tmp put the host's /tmp, read-write, into the view."""
    ident = rootless
    marker = Path("/tmp") / f"layershell-wo-{os.getpid()}"
    r = ident.run([ident.layer_shell, "--layer", "arne", "-c", "ln -sfn /tmp /opt/pkgs/esc"])
    assert r.returncode == 0, r.stderr.decode()
    try:
        r = ident.run(
            [ident.layer_shell, "--layer", "arne", "--writable-only", "/opt/pkgs/esc",
             "-c", f"touch {marker}"],
        )  # fmt: skip
        assert r.returncode != 0
        assert "not a directory (a link?)" in r.stderr.decode(), r.stderr.decode()
        assert not marker.exists()
    finally:
        ident.run([ident.layer_shell, "--layer", "arne", "-c", "rm -f /opt/pkgs/esc"])
        marker.unlink(missing_ok=True)
