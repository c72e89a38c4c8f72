"""The executor and the launcher are built with layershell (hatch_build.py), never by
`core init`: init works on a host without a compiler (Fedora CoreOS), in rootless and
system mode, and installs only the executor this layershell was built with (issue 12).

"No compiler" is a PATH made of links to every program of the usual PATH but the
compilers, assemblers and linkers."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from layershell.host import binaries
from tests import support
from tests.support import IS_ROOT, Identity, make_shared_dir, needs_userns, python_cmd


def installed_package() -> Path:
    """The layershell that `core` runs (the venv's), not the checkout pytest imports."""
    where = subprocess.run(
        [sys.executable, "-I", "-c", "import layershell; print(layershell.__file__)"],
        capture_output=True, text=True, cwd="/", check=True,
    ).stdout.strip()  # fmt: skip
    return Path(where).parent


PACKAGE = installed_package()
PACKAGED = PACKAGE / "_bin"
TOOLCHAIN = re.compile(
    r"(.*-linux-gnu-)?(cc|gcc|c89|c99|c\+\+|g\+\+|cpp|clang|clang\+\+|tcc|as|ld|ld\.\w+)"
    r"(-[0-9.]+)?"
)


@pytest.fixture(scope="module")
def no_cc() -> Iterator[str]:
    """A PATH directory with every program of /usr/local/bin, /usr/bin, /bin, /usr/sbin
    and /sbin except a compiler toolchain."""
    where = make_shared_dir("layershell-nocc-")
    try:
        for directory in ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin",
                          "/sbin", "/bin"):  # fmt: skip
            for name in sorted(os.listdir(directory)) if os.path.isdir(directory) else ():
                link = where / name
                if TOOLCHAIN.fullmatch(name) or link.is_symlink():
                    continue
                link.symlink_to(os.path.join(directory, name))
        for compiler in ("cc", "gcc", "c99", "c89", "gcc-12", "x86_64-linux-gnu-gcc", "ld"):
            assert shutil.which(compiler, path=str(where)) is None, compiler
        assert shutil.which("unshare", path=str(where)) is not None
        yield str(where)
    finally:
        shutil.rmtree(where, ignore_errors=True)


@pytest.fixture
def bare_identity() -> Iterator[Identity]:
    """An identity (as rootless_identity) on which core init has not run yet."""
    if not support.userns_available():
        pytest.skip("unprivileged user namespaces are disabled on this kernel")
    base = make_shared_dir("layershell-prebuilt-")
    home = base / "home"
    home.mkdir()
    try:
        if IS_ROOT:
            os.chown(home, support.NOBODY, support.NOBODY)
            prefix = ("setpriv", f"--reuid={support.NOBODY}", f"--regid={support.NOBODY}",
                      "--clear-groups", "--")  # fmt: skip
            yield Identity(support.NOBODY, support.NOBODY, home, prefix)
        else:
            yield Identity(os.getuid(), os.getgid(), home)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def err(r: subprocess.CompletedProcess[bytes]) -> str:
    return r.stderr.decode(errors="replace")


def recorded(name: str) -> str:
    with open(PACKAGED / "build.json", encoding="utf-8") as f:
        build = json.load(f)[name]["build"]
    assert isinstance(build, str)
    return build


def executor_of(ident: Identity) -> Path:
    return ident.home / ".local/share/layershell/libexec/layershell-enter"


def init(ident: Identity, no_cc: str) -> subprocess.CompletedProcess[bytes]:
    return ident.run(python_cmd("--rootless", "init"),
                     env={"PATH": f"{ident.home}/.local/bin:{no_cc}"})  # fmt: skip


def with_build(data: bytes, build: str) -> bytes:
    """The executor's bytes, claiming another build id (same length)."""
    old = binaries.BUILD_PREFIX + recorded(binaries.EXECUTOR).encode()
    assert data.count(old) == 1
    return data.replace(old, binaries.BUILD_PREFIX + build.encode())


@needs_userns
def test_rootless_init_without_a_compiler_installs_what_was_built(
    bare_identity: Identity, no_cc: str
) -> None:
    r = init(bare_identity, no_cc)
    assert r.returncode == 0, err(r)
    executor = executor_of(bare_identity)
    assert executor.read_bytes() == (PACKAGED / binaries.EXECUTOR).read_bytes()
    version = bare_identity.run([str(executor), "--version"])
    assert version.stdout.decode() == f"layershell-enter build {recorded('layershell-enter')}\n"
    # The launcher works: layer 2 runs a command, with argv[0] passed through.
    shell = bare_identity.run(
        [bare_identity.layer_shell, "--layer", "otto", "--", "sh", "-c", "echo in otto"],
        env={"PATH": f"{bare_identity.home}/.local/bin:{no_cc}"},
    )
    assert shell.returncode == 0, err(shell)
    assert shell.stdout == b"in otto\n"


@needs_userns
def test_init_again_leaves_the_installed_executor(bare_identity: Identity, no_cc: str) -> None:
    assert init(bare_identity, no_cc).returncode == 0
    before = executor_of(bare_identity).stat()
    r = init(bare_identity, no_cc)
    assert r.returncode == 0, err(r)
    after = executor_of(bare_identity).stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


@needs_userns
@pytest.mark.parametrize(
    ("content", "said"),
    [
        (b"#!/bin/sh\nexec /bin/true\n", "not written by layershell"),
        (b"stale", "layershell-enter build 0000000000000000, and this layershell was built with"),
    ],
    ids=["foreign", "stale"],
)
def test_an_executor_core_init_did_not_install_is_refused_with_a_hint(
    bare_identity: Identity, no_cc: str, content: bytes, said: str
) -> None:
    executor = executor_of(bare_identity)
    packaged = (PACKAGED / binaries.EXECUTOR).read_bytes()
    planted = {b"stale": with_build(packaged, "0" * 16)}.get(content, content)
    put = bare_identity.run(
        ["sh", "-c", 'mkdir -p "${1%/*}" && cat > "$1" && chmod 755 "$1"', "-", str(executor)],
        input=planted,
    )
    assert put.returncode == 0, err(put)
    r = init(bare_identity, no_cc)
    assert r.returncode != 0
    assert "Traceback" not in err(r), err(r)
    assert said in err(r), err(r)
    assert f"remove it (rm {executor}) and run core init again" in err(r), err(r)
    assert executor.read_bytes() == planted
    assert not Path(bare_identity.layer_shell).exists(), "init changed things before refusing"
    # Following the hint works.
    executor.unlink()
    assert init(bare_identity, no_cc).returncode == 0


def test_an_executor_an_older_core_init_compiled_is_replaced(
    bare_identity: Identity, no_cc: str
) -> None:
    """Upgrading a host: the executor a core init from before build ids compiled (our
    marker, no build id, no note) is replaced, not refused."""
    executor = executor_of(bare_identity)
    packaged = (PACKAGED / binaries.EXECUTOR).read_bytes()
    old = packaged.replace(binaries.BUILD_PREFIX, b"x" * len(binaries.BUILD_PREFIX))
    put = bare_identity.run(
        ["sh", "-c", 'mkdir -p "${1%/*}" && cat > "$1" && chmod 755 "$1"', "-", str(executor)],
        input=old,
    )
    assert put.returncode == 0, err(put)
    r = init(bare_identity, no_cc)
    assert r.returncode == 0, err(r)
    assert "compiled by an older core init" in r.stdout.decode() + err(r)
    assert executor.read_bytes() == packaged


@needs_userns
def test_an_older_executor_core_init_installed_is_replaced(
    bare_identity: Identity, no_cc: str
) -> None:
    assert init(bare_identity, no_cc).returncode == 0
    executor = executor_of(bare_identity)
    older = with_build(executor.read_bytes(), "1" * 16)
    # As an earlier core init (an older layershell) would have left it: its bytes, and
    # the note beside them naming their sha256.
    note = executor.with_name("layershell-enter.installed")
    sha = hashlib.sha256(older).hexdigest()
    executor.write_bytes(older)
    note.write_bytes(f"# Managed by layershell: earlier\n{sha} build {'1' * 16}\n".encode())
    r = init(bare_identity, no_cc)
    assert r.returncode == 0, err(r)
    built = recorded("layershell-enter")
    assert f"build {'1' * 16}, which core init installed, with build {built}" in r.stdout.decode()
    assert executor.read_bytes() == (PACKAGED / binaries.EXECUTOR).read_bytes()


@needs_userns
def test_a_packaged_executor_of_another_build_is_refused(
    bare_identity: Identity, no_cc: str
) -> None:
    """The handshake: what the package carries must answer with the build id the
    package recorded (a mixed or tampered install, a binary for another machine)."""
    site = make_shared_dir("layershell-site-")
    try:
        copy = site / "layershell"
        shutil.copytree(PACKAGE, copy)
        stale = copy / "_bin" / binaries.EXECUTOR
        stale.write_bytes(with_build(stale.read_bytes(), "2" * 16))
        subprocess.run(["chmod", "-R", "a+rX", str(site)], check=True)
        code = f"import sys; sys.path.insert(0, {str(site)!r}); import runpy; " + (
            "runpy.run_module('layershell', run_name='__main__')"
        )
        r = bare_identity.run([sys.executable, "-c", code, "--rootless", "init"],
                              env={"PATH": no_cc})  # fmt: skip
    finally:
        shutil.rmtree(site, ignore_errors=True)
    assert r.returncode != 0
    assert "Traceback" not in err(r), err(r)
    assert "is not the executor this layershell was built with" in err(r), err(r)
    assert f"layershell-enter build {'2' * 16}" in err(r), err(r)
    assert "reinstall layershell" in err(r), err(r)
    assert not executor_of(bare_identity).exists()


def test_the_launcher_refuses_to_run_before_core_init_sets_it_up() -> None:
    r = subprocess.run([str(PACKAGED / binaries.LAUNCHER)], capture_output=True, check=False)
    assert r.returncode == 127
    assert b"not set up by core init" in r.stderr


@pytest.mark.skipif(not IS_ROOT, reason="needs root: creates accounts and a PAM service")
def test_system_init_without_a_compiler_on_a_relocated_root(no_cc: str) -> None:
    with support.system_stack(init_env={"PATH": no_cc}) as system:
        executor = system.root / "var/lib/layershell/libexec/layershell-enter"
        assert executor.read_bytes() == (PACKAGED / binaries.EXECUTOR).read_bytes()
        assert (executor.stat().st_uid, executor.stat().st_mode & 0o7777) == (0, 0o755)
        # otto's login shell is the launcher: `su -` starts it as -layer-shell.
        r = system.in_layer(system.otto, "id -u; echo $HOME")
        assert r.returncode == 0, err(r)
        assert r.stdout.split()[0] == str(pwd.getpwnam(system.otto).pw_uid).encode()


# Hardening -------------------------------------------------------------------------


def readelf(*args: str) -> str:
    if shutil.which("readelf") is None or shutil.which("objdump") is None:
        pytest.skip("needs binutils (readelf, objdump) to inspect the binaries")
    return subprocess.run(["readelf", "-W", *args], capture_output=True, text=True,
                          check=True).stdout  # fmt: skip


@pytest.mark.parametrize("name", [binaries.EXECUTOR, binaries.LAUNCHER])
def test_the_binaries_are_hardened_and_need_at_most_the_c_library(name: str) -> None:
    path = str(PACKAGED / name)
    assert "DYN (Position-Independent Executable file)" in readelf("-h", path)
    segments = readelf("-l", path)
    assert "GNU_RELRO" in segments
    stack = next(line for line in segments.splitlines() if "GNU_STACK" in line)
    assert "RWE" not in stack, "executable stack"
    dynamic = readelf("-d", path)
    assert "BIND_NOW" in dynamic and "PIE" in dynamic, dynamic  # full RELRO
    needed = re.findall(r"\(NEEDED\).*\[(.*)\]", dynamic)
    assert set(needed) <= {"libc.so.6"}, needed
    ldd = subprocess.run(["ldd", path], capture_output=True, text=True, check=False)
    libraries = {line.split()[0] for line in ldd.stdout.splitlines() if line.strip()}
    assert ("statically linked" in ldd.stdout + ldd.stderr) or libraries <= {
        "linux-vdso.so.1", "libc.so.6", "/lib64/ld-linux-x86-64.so.2"
    }, ldd.stdout  # fmt: skip
    main = subprocess.run(["objdump", "-d", "--disassemble=main", path],
                          capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "endbr64" in main or os.uname().machine != "x86_64", "no CET (-fcf-protection)"
    if name == binaries.EXECUTOR:
        # -fstack-protector-strong guards main's arrays; _FORTIFY_SOURCE checks its
        # snprintf calls. (The launcher's main has no array: nothing to guard.)
        assert re.search(r"call.*<__stack_chk_fail", main), "no stack protector in main"
        assert re.search(r"call.*<_*\w+_chk>", main), "no _FORTIFY_SOURCE checks in main"


def test_the_build_hook_marks_files_as_the_package_does() -> None:
    """hatch_build.py runs without the package, so it keeps its own copy of the marker
    the launcher carries; it must be names.MARKER, or init would not know its launcher."""
    from layershell import names

    hook = (Path(__file__).resolve().parent.parent / "hatch_build.py").read_text()
    found = re.search(r'^MARKER = "([^"]*)"', hook, re.M)
    assert found is not None and found.group(1) == names.MARKER
