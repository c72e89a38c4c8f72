"""Test harness: run commands as real, unprivileged identities.

Rootless tests run as the caller when it is an ordinary user. As root (CI), they run
as uid 65534 with a private HOME, so no account is needed and nothing runs as root.
System-mode tests create real accounts, a real PAM service and a relocated root, and
remove them afterwards.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

IS_ROOT = os.getuid() == 0
NOBODY = 65534

needs_root = pytest.mark.skipif(
    not IS_ROOT, reason="needs root: creates accounts and a PAM service (CI runs as root)"
)


def userns_available() -> bool:
    result = subprocess.run(["unshare", "-U", "true"], capture_output=True, check=False)
    return result.returncode == 0


needs_userns = pytest.mark.skipif(
    not userns_available(), reason="unprivileged user namespaces are disabled on this kernel"
)


def child_pids() -> set[str]:
    """This process's children, from every thread's list in /proc."""
    found: set[str] = set()
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/children") as listing:
            found.update(listing.read().split())
    return found


def python_cmd(*args: str) -> list[str]:
    """Run layershell's `core` with this interpreter, whatever its install location."""
    return [sys.executable, "-m", "layershell", *args]


@dataclass(frozen=True)
class Identity:
    """An unprivileged identity with its own HOME, and how to run commands as it."""

    uid: int
    gid: int
    home: Path
    prefix: tuple[str, ...] = ()
    extra_env: Mapping[str, str] = field(default_factory=dict)
    launcher: str = "layer-shell"  # in ~/.local/bin: a launcher_variant's name, or core init's

    @property
    def env(self) -> dict[str, str]:
        env = {
            "HOME": str(self.home),
            "PATH": f"{self.home}/.local/bin:/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "TERM": "dumb",
        }
        env.update(self.extra_env)
        return env

    @property
    def layer_shell(self) -> str:
        return str(self.home / ".local" / "bin" / self.launcher)

    def argv(self, args: Sequence[str]) -> list[str]:
        return [*self.prefix, *args]

    def run(
        self,
        args: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        input: bytes | None = None,
        timeout: float = 60,
        cwd: str | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        full_env = {**self.env, **(env or {})}
        return subprocess.run(
            self.argv(args),
            env=full_env,
            input=input,
            capture_output=True,
            timeout=timeout,
            cwd=cwd or str(self.home),
            check=False,
        )

    def popen(self, args: Sequence[str], **kwargs: object) -> subprocess.Popen[bytes]:
        return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
            self.argv(args), env=self.env, cwd=str(self.home), **kwargs
        )


def make_shared_dir(prefix: str) -> Path:
    """A directory every test identity can traverse (pytest's tmp dirs are 0700)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
    path.chmod(0o755)
    return path


@contextmanager
def rootless_identity() -> Iterator[Identity]:
    base = make_shared_dir("layershell-rootless-")
    home = base / "home"
    home.mkdir()
    try:
        if IS_ROOT:
            os.chown(home, NOBODY, NOBODY)
            prefix = (
                "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--",
            )  # fmt: skip
            ident = Identity(NOBODY, NOBODY, home, prefix)
        else:
            ident = Identity(os.getuid(), os.getgid(), home)
        init = ident.run(python_cmd("--rootless", "init"))
        assert init.returncode == 0, init.stderr.decode()
        trust_test_key(ident)
        yield ident
    finally:
        shutil.rmtree(base, ignore_errors=True)


def launcher_variant(installed: Path, name: str, *, python: str | None = None,
                     fast: str | None = None) -> Path:  # fmt: skip
    """A copy of an installed layer-shell launcher, next to it and owned alike, with
    fields of its slot changed (layershell/host/binaries.py): fast="" takes the Python
    path always; python="/nonexistent" leaves it the fast path alone (a call the fast
    path hands on fails with 127)."""
    from layershell.host import binaries

    out = installed.parent / name
    out.write_bytes(binaries.with_slot(installed.read_bytes(), python=python, fast=fast))
    st = installed.stat()
    if IS_ROOT:
        os.chown(out, st.st_uid, st.st_gid)
    out.chmod(0o755)
    return out


def trust_test_key(ident: Identity) -> None:
    """The identity trusts the key the suite's repositories are signed with."""
    from tests import signing

    signing.key().trust(ident.home / ".config/layershell/keys", (ident.uid, ident.gid))


LAYERS_TEMPLATE = """\
layers:
  - name: core
    account: root
  - name: arne
    account: {arne}
    parent: core
    home: "{{store}}/home"
    writable:
      /opt/pkgs: "{{pkgs}}"
      /usr/local: "{{store}}/usr-local"
    network: true
  - name: otto
    account: {otto}
    parent: arne
    network: false
"""

PAM_TEMPLATE = """\
auth       sufficient   pam_rootok.so
auth       required     pam_deny.so
@include common-account
session    optional     pam_exec.so {marker}
@include common-session
"""


@dataclass(frozen=True)
class SystemStack:
    """A system-mode stack under a relocated root, with real accounts and PAM."""

    root: Path
    arne: str
    otto: str
    pam_service: str
    pam_log: Path

    @property
    def launcher(self) -> str:
        return str(self.root / "usr/local/bin/layer-shell")

    @property
    def env(self) -> dict[str, str]:
        return {
            "LAYERSHELL_ROOT": str(self.root),
            "LAYERSHELL_PAM_SERVICE": self.pam_service,
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8",
        }

    def as_user(
        self, user: str, args: Sequence[str], *, timeout: float = 60
    ) -> subprocess.CompletedProcess[bytes]:
        """Run args on the host as `user` (not through its login shell)."""
        return subprocess.run(
            ["runuser", "-u", user, "--", *args],
            env=self.env,
            capture_output=True,
            timeout=timeout,
            cwd="/",
            check=False,
        )

    def in_layer(self, user: str, command: str) -> subprocess.CompletedProcess[bytes]:
        """`su - user -c command`: through the account's login shell, layer-shell."""
        return subprocess.run(
            ["su", "-", user, "-w", "LAYERSHELL_ROOT", "-c", command],
            env=self.env,
            capture_output=True,
            timeout=60,
            cwd="/",
            check=False,
        )

    def core(
        self, *args: str, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            python_cmd(*args),
            env={**self.env, **(env or {})},
            capture_output=True,
            timeout=60,
            cwd="/",
            check=False,
        )


@contextmanager
def system_stack(init_env: Mapping[str, str] | None = None) -> Iterator[SystemStack]:
    """The stack, `core init --create-users` done (with `init_env` added to its
    environment)."""
    tag = secrets.token_hex(3)
    root = make_shared_dir("layershell-system-")
    arne, otto = f"ls{tag}a", f"ls{tag}o"
    service = f"layershell-test-{tag}"
    pam_file = Path("/etc/pam.d") / service
    marker = root / "pam-marker.sh"
    log = root / "pam.log"
    marker.write_text(f'#!/bin/sh\necho "$PAM_TYPE $PAM_USER" >> {log}\n')
    marker.chmod(0o755)
    (root / "etc/layershell").mkdir(parents=True)
    (root / "etc/layershell/layers.yaml").write_text(LAYERS_TEMPLATE.format(arne=arne, otto=otto))
    pam_file.write_text(PAM_TEMPLATE.format(marker=marker))
    stack = SystemStack(root, arne, otto, service, log)
    try:
        init = stack.core("init", "--create-users", env=init_env)
        assert init.returncode == 0, init.stderr.decode()
        from tests import signing

        signing.key().trust(root / "etc/layershell/keys")
        yield stack
    finally:
        unmount_pkgs(root)
        for user in (arne, otto):
            subprocess.run(["userdel", "--remove", user], capture_output=True, check=False)
        pam_file.unlink(missing_ok=True)
        shutil.rmtree(root, ignore_errors=True)


def unmount_pkgs(root: Path) -> None:
    """Undo core init's nosuid,nodev bind mounts of ROOT/opt/pkgs and the layers' stores
    (docs/layers.md)."""
    for where in ("opt/pkgs", "var/lib/layershell/layers"):
        _unmount_all(os.path.realpath(root / where))


def _unmount_all(pkgs: str) -> None:
    for _ in range(8):  # one per mount stacked there; init makes at most one
        with open("/proc/self/mounts", encoding="utf-8") as f:
            if not any(line.split()[1] == pkgs for line in f):
                return
        subprocess.run(["umount", "-l", pkgs], capture_output=True, check=False)


@contextmanager
def small_disk_identity(size: str = "20m") -> Iterator[Identity]:
    """As root: an identity whose home is a real filesystem of `size` (tmpfs), for
    full-disk tests, initialised in rootless mode."""
    base = make_shared_dir("layershell-full-")
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=755", "tmpfs", str(base)], check=True
    )
    try:
        home = base / "home"
        home.mkdir()
        os.chown(home, NOBODY, NOBODY)
        prefix = ("setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--")
        ident = Identity(NOBODY, NOBODY, home, prefix)
        init = ident.run(python_cmd("--rootless", "init"))
        assert init.returncode == 0, init.stderr.decode()
        trust_test_key(ident)
        yield ident
    finally:
        subprocess.run(["umount", "-l", str(base)], check=False)
        shutil.rmtree(base, ignore_errors=True)


def rootless_store(ident: Identity, layer: str = "arne") -> Path:
    """A rootless identity's store of `layer` (state.db, cache, lock)."""
    return ident.home / ".local/share/layershell/layers" / layer


def rootless_pkgs(ident: Identity) -> Path:
    """A rootless identity's package tree (/opt/pkgs inside the layers)."""
    return ident.home / ".local/share/layershell/pkgs"


# The system extension image ------------------------------------------------------------

CHECKOUT = Path(__file__).resolve().parent.parent


@dataclass
class BuiltImage:
    image: Any  # layershell.host.sysext.Image (sysext is a build tool: imported when used)
    work: Path  # the build venv and staging, reusable by another build
    tree: Path  # the image extracted with unsquashfs -d


def build_sysext(base: Path, checkout: Path = CHECKOUT, work: Path | None = None) -> BuiltImage:
    """Build the image of `checkout` into base/out with the documented command,
    `./dev.sh sysext`, read what it printed (and check it), and extract the image to
    base/tree."""
    import re

    from layershell.host import sysext

    if shutil.which("mksquashfs") is None or shutil.which("unsquashfs") is None:
        pytest.skip("squashfs-tools is not installed (./dev.sh test installs it)")
    work = work or base / "work"
    out = base / "out"
    done = subprocess.run(
        [str(checkout / "dev.sh"), "sysext", "--out", str(out), "--work", str(work)],
        capture_output=True, text=True, check=False, timeout=1200,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    printed = re.fullmatch(
        r"(?P<path>/\S+\.raw): (?P<size>[0-9]+) bytes, sha256 (?P<sha>[0-9a-f]{64})\n"
        r"  SOURCE_DATE_EPOCH=(?P<epoch>[0-9]+), built in (?P<seconds>[0-9]+) s\n",
        done.stdout,
    )
    assert printed is not None, done.stdout
    image = sysext.Image(
        printed["path"], int(printed["size"]), printed["sha"], int(printed["epoch"]),
        float(printed["seconds"]),
    )  # fmt: skip
    assert image.size == os.path.getsize(image.path)
    assert image.sha256 == sysext.sha256_of(image.path)
    tree = base / "tree"
    subprocess.run(["unsquashfs", "-q", "-d", str(tree), image.path], check=True)
    print(f"sysext build: {image.size} bytes in {image.seconds:.0f} s")
    return BuiltImage(image, work, tree)


def install_package(
    ident: Identity,
    shared: Path,
    name: str,
    files: dict[str, bytes | str],
    profile: str,
    extra: str = "",
) -> None:
    """Publish `files` as package NAME 1.0 in a repository under `shared` and install it
    as `ident` with a manifest giving it `profile` (and the entry's `extra` lines)."""
    from tests.packages import Repository

    repo = Repository(shared / f"repo-{name}-{profile}")
    repo.add(name, "1.0", files)
    repo.index()
    config = ident.home / f"{name}-{profile}.yaml"
    config.write_text(
        f"composable:\n  default_repository: {repo.file_url}\n  packages:\n"
        f"    - name: {name}\n      version: '1.0'\n      profile: {profile}\n{extra}"
    )
    config.chmod(0o644)
    r = ident.run(python_cmd("install", "--config", str(config)), timeout=120)
    assert r.returncode == 0, r.stderr.decode()
