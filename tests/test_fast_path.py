"""The fast path (launcher.c reading layers/fast.py's compiled file) does exactly what the
Python path does, for every call it takes, and trusts no compiled file a layer could write.

Each case runs through two copies of the installed launcher: one that always takes the
Python path (no compiled file in its slot) and one that has no Python at all (its
interpreter does not exist), so a case the fast path handed on would fail there with 127
and no output. Both must give the same exit status, stdout and stderr.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from layershell.layers import fast
from tests.support import IS_ROOT, Identity, SystemStack, launcher_variant, needs_root

# What the program sees: its argv, environment (in order), cwd, ids, signal dispositions.
SHOW = ('printf "[%s]" "$0" "$@"; echo; env; pwd; id -u; '
        "grep -E '^(SigIgn|SigBlk|NoNewPrivs|CapEff)' /proc/self/status")  # fmt: skip
CASES: list[tuple[str, ...]] = [
    ("-c", SHOW),
    ("-c", SHOW, "zero", "one", "two words", ""),
    ("-l", "-c", SHOW),
    ("-lc", SHOW),
    ("-cl", SHOW, "z"),
    ("--login", "--layer", "otto", "-c", SHOW),
    ("--layer", "otto", "-c", SHOW),
    ("--layer=otto", "-c", SHOW),
    ("--layer=", "-c", SHOW),
    ("--layer", "otto", "--", "sh", "-c", SHOW, "arg0", "x"),
    ("--", "sh", "-c", SHOW),
    ("sh", "-c", SHOW, "bare"),
    ("-l", "--", "sh", "-c", SHOW),
    ("--", "sh", "-c", "exit 7"),
    ("--", "sh", "-c", "kill -TERM $$"),
    ("--layer", "otto", "--", "no-such-program-xyz"),
    ("--", "printf", "[%s]\\n", "a b", "", "'q'", "$HOME", "*", "ünï"),
    (),  # an interactive shell, reading its commands from stdin
    ("-l",),
]
STDIN = b"echo from-stdin $0; exit 3\n"
PYTHONLESS = "/nonexistent/layershell-test/python3"


def pair(installed: Path) -> tuple[Path, Path]:
    """(the Python path's launcher, the fast path's launcher, with no Python behind it)."""
    python = installed.with_name("layer-shell-python")
    fast_only = installed.with_name("layer-shell-fast")
    if not python.exists():
        launcher_variant(installed, python.name, fast="")
        launcher_variant(installed, fast_only.name, python=PYTHONLESS)
    return python, fast_only


Run = Callable[..., subprocess.CompletedProcess[bytes]]


def same_both_ways(run: Run, launchers: tuple[Path, Path], args: Sequence[str],
                   **kwargs: object) -> subprocess.CompletedProcess[bytes]:  # fmt: skip
    slow = run([str(launchers[0]), *args], **kwargs)
    quick = run([str(launchers[1]), *args], **kwargs)
    assert quick.returncode != 127 or slow.returncode == 127, (args, quick.stderr)
    assert (quick.returncode, quick.stdout, quick.stderr) == (
        slow.returncode, slow.stdout, slow.stderr
    ), args  # fmt: skip
    return quick


@pytest.fixture
def launchers(rootless: Identity) -> tuple[Path, Path]:
    return pair(Path(rootless.layer_shell))


@pytest.mark.parametrize("args", CASES, ids=lambda a: " ".join(a)[:40] or "shell")
def test_rootless_cases_match(rootless: Identity, launchers: tuple[Path, Path],
                              args: tuple[str, ...]) -> None:  # fmt: skip
    r = same_both_ways(rootless.run, launchers, args, input=STDIN)
    assert r.returncode != 127 or b"command not found" in r.stderr


@pytest.mark.parametrize(
    "env",
    [
        {"TMPDIR": "/x", "OLDPWD": "/y", "FOO": "bar", "LC_ALL": "C", "LAYERSHELL_LAYER": "z"},
        # No locale at all: Python coerces LC_CTYPE for itself; the program must not see it.
        {"LANG": "", "TERM": ""},
        {
            "SHELL": "/bin/false",
            "USER": "someone",
            "LOGNAME": "x",
            "PATH": "/usr/bin:/bin:/nowhere",
        },
    ],
    ids=["dropped-and-kept", "no-locale", "identity-overridden"],
)
def test_rootless_environments_match(rootless: Identity, launchers: tuple[Path, Path],
                                     env: dict[str, str]) -> None:  # fmt: skip
    base = {k: v for k, v in {**rootless.env, **env}.items() if v}

    def run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(rootless.argv(argv), env=base, capture_output=True,
                              cwd=str(rootless.home), timeout=60, check=False)  # fmt: skip

    for args in (("-c", SHOW), ("-l", "-c", SHOW), ("--layer", "otto", "--", "env")):
        same_both_ways(run, launchers, args)


def test_rootless_cwd_and_signals_match(rootless: Identity, launchers: tuple[Path, Path]) -> None:
    visible = rootless.home / ".local/share/layershell/layers/arne/home/work"
    r = rootless.run([rootless.layer_shell, "-c", f"mkdir -p {visible}"])
    assert r.returncode == 0, r.stderr
    for cwd in (str(visible), "/", str(rootless.home)):
        same_both_ways(rootless.run, launchers, ("-c", "pwd"), cwd=cwd)
    # The caller ignores PIPE and INT: Python resets PIPE (it ignores it itself), keeps INT.
    ignoring = ("sh", "-c", 'trap "" PIPE INT; exec "$@"', "sh")

    def run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[bytes]:
        return rootless.run([*ignoring, *argv])

    same_both_ways(run, launchers, ("--", "grep", "^SigIgn", "/proc/self/status"))


def test_rootless_refusals_match(rootless: Identity, launchers: tuple[Path, Path]) -> None:
    """What the fast path cannot decide it hands on: the Python path's answer, unchanged."""
    python, fast_only = launchers
    for args in (("--layer", "nope", "--", "true"), ("--bogus",), ("-c",), ("--",),
                 ("--help",), ("--writable-only", "/opt/pkgs/x", "-c", "true")):  # fmt: skip
        slow = rootless.run([str(python), *args])
        assert slow.returncode != 0 or args == ("--help",)
        quick = rootless.run([str(fast_only), *args])
        assert (quick.returncode, quick.stdout) == (127, b""), args  # handed on


def test_stale_or_missing_file_hands_on_and_is_compiled_again(
    rootless: Identity, launchers: tuple[Path, Path]
) -> None:
    python, fast_only = launchers
    compiled = rootless.home / ".local/share/layershell/cache" / fast.FILE_NAME
    config = rootless.home / ".config/layershell/layers.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    shipped = rootless.run([str(python), "-c", "echo $LAYERSHELL_LAYER"])
    try:
        # An edit of layers.yaml: the fast path must not act on the old stack.
        config.write_text(
            "layers:\n  - {name: core, account: me}\n"
            "  - {name: inst, account: a, parent: core, writable: {/opt/pkgs: '{pkgs}'}}\n"
            "  - {name: run, account: o, parent: inst}\n"
        )
        os.chmod(config, 0o644)
        if IS_ROOT:
            os.chown(config, rootless.uid, rootless.gid)
        r = rootless.run([str(fast_only), "-c", "echo $LAYERSHELL_LAYER"])
        assert (r.returncode, r.stdout) == (127, b"")
        r = rootless.run([str(python), "-c", "echo $LAYERSHELL_LAYER"])
        assert r.stdout == b"inst\n", r.stderr  # ... which compiled the file again
        r = rootless.run([str(fast_only), "-c", "echo $LAYERSHELL_LAYER"])
        assert r.stdout == b"inst\n", r.stderr
    finally:
        config.unlink()
    rootless.run([str(python), "-c", "true"])
    compiled.unlink()
    r = rootless.run([str(fast_only), "-c", "true"])
    assert r.returncode == 127
    r = rootless.run([str(python), "-c", "echo $LAYERSHELL_LAYER"])
    assert r.stdout == shipped.stdout
    assert compiled.exists()
    assert rootless.run([str(fast_only), "-c", "true"]).returncode == 0


# Trust: the attacks ------------------------------------------------------------------


EVIL = "#!/bin/sh\necho PWNED-by-a-planted-executor\n"


def planted(compiled: Path, evil: Path) -> bytes:
    """The compiled file with every mention of the executor swapped for `evil`."""
    executor = compiled.parent.parent / "libexec/layershell-enter"
    data = compiled.read_bytes()
    assert b"\0" + os.fsencode(executor) + b"\0" in data
    return data.replace(b"\0" + os.fsencode(executor) + b"\0", b"\0" + os.fsencode(evil) + b"\0")


def test_rootless_file_writable_by_others_is_not_trusted(fresh_rootless: Identity,
                                                         tmp_path: Path) -> None:  # fmt: skip
    ident = fresh_rootless
    _, fast_only = pair(Path(ident.layer_shell))
    compiled = ident.home / ".local/share/layershell/cache" / fast.FILE_NAME
    evil = ident.home / "evil"
    evil.write_text(EVIL)
    evil.chmod(0o755)
    if IS_ROOT:
        os.chown(evil, ident.uid, ident.gid)
    honest = compiled.read_bytes()
    compiled.write_bytes(planted(compiled, evil))
    # As written by the owner, the planted file is the owner's own choice: it runs.
    assert b"PWNED" in ident.run([str(fast_only), "-c", "true"]).stdout
    for mode in (0o666, 0o646, 0o664):
        compiled.chmod(mode)
        r = ident.run([str(fast_only), "-c", "echo $LAYERSHELL_LAYER"])
        assert b"PWNED" not in r.stdout and r.returncode == 127, mode
    compiled.chmod(0o644)
    cache = compiled.parent
    for mode in (0o777, 0o775, 0o757):
        cache.chmod(mode)
        r = ident.run([str(fast_only), "-c", "echo $LAYERSHELL_LAYER"])
        assert b"PWNED" not in r.stdout and r.returncode == 127, mode
    cache.chmod(0o755)
    compiled.write_bytes(honest)


@pytest.fixture(scope="module")
def system_pair(stack: SystemStack) -> Iterator[tuple[SystemStack, tuple[Path, Path]]]:
    yield stack, pair(Path(stack.launcher))


@needs_root
@pytest.mark.parametrize("user", ["arne", "otto"])
@pytest.mark.parametrize("args", CASES, ids=lambda a: " ".join(a)[:40] or "shell")
def test_system_cases_match(system_pair: tuple[SystemStack, tuple[Path, Path]], user: str,
                            args: tuple[str, ...]) -> None:  # fmt: skip
    stack, launchers = system_pair
    account = getattr(stack, user)
    if user == "arne":  # each account enters its own layer: arne's is arne
        args = tuple(a.replace("otto", "arne") if a.startswith("--layer") or a == "otto"
                     else a for a in args)  # fmt: skip

    def run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[bytes]:
        return system_run(stack, account, argv, input=STDIN)

    same_both_ways(run, launchers, args)


@needs_root
def test_system_refusals_are_handed_on(system_pair: tuple[SystemStack, tuple[Path, Path]]) -> None:
    stack, (python, fast_only) = system_pair
    for user, layer in ((stack.otto, "arne"), (stack.arne, "otto"), (stack.otto, "core")):
        slow = system_run(stack, user, [str(python), "--layer", layer, "-c", "true"])
        assert slow.returncode != 0 and b"layer-shell:" in slow.stderr, (user, layer)
        quick = system_run(stack, user, [str(fast_only), "--layer", layer, "-c", "true"])
        assert (quick.returncode, quick.stdout) == (127, b""), (user, layer)
    # root hands over through PAM (handover.py): never the fast path
    r = subprocess.run([str(fast_only), "--layer", "otto", "-c", "true"], env=stack.env,
                       capture_output=True, timeout=60, check=False)  # fmt: skip
    assert r.returncode == 127


def system_run(stack: SystemStack, user: str, argv: list[str],
               input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:  # fmt: skip
    return subprocess.run(["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups",
                           "--", *argv], env=stack.env, capture_output=True, cwd="/",
                          input=input, timeout=60, check=False)  # fmt: skip


@needs_root
def test_system_file_a_layer_account_could_write_is_not_trusted(
    system_pair: tuple[SystemStack, tuple[Path, Path]],
) -> None:
    stack, (python, fast_only) = system_pair
    compiled = stack.root / "var/lib/layershell/cache" / fast.FILE_NAME
    honest = compiled.read_bytes()
    evil = stack.root / "evil-executor"
    evil.write_text(EVIL)
    evil.chmod(0o755)
    bad = planted(compiled, evil)
    ok = system_run(stack, stack.otto, [str(fast_only), "-c", "echo $LAYERSHELL_LAYER"])
    assert ok.stdout == b"otto\n", ok.stderr  # the fast path, unharmed
    try:
        # 1. root's own file, but writable by the layer accounts
        compiled.write_bytes(bad)
        compiled.chmod(0o666)
        r = system_run(stack, stack.otto, [str(fast_only), "-c", "true"])
        assert b"PWNED" not in r.stdout and r.returncode == 127
        # 2. the layer account's file
        compiled.chmod(0o644)
        shutil.chown(compiled, stack.otto, stack.otto)
        r = system_run(stack, stack.otto, [str(fast_only), "-c", "true"])
        assert b"PWNED" not in r.stdout and r.returncode == 127
        # 3. root's file in a directory the layer account owns (it could swap the file)
        shutil.chown(compiled, "root", "root")
        shutil.chown(compiled.parent, stack.otto, stack.otto)
        r = system_run(stack, stack.otto, [str(fast_only), "-c", "true"])
        assert b"PWNED" not in r.stdout and r.returncode == 127
        shutil.chown(compiled.parent, "root", "root")
        # 4. a link to a file the layer account wrote (root's link, the account's target)
        theirs = Path(f"/var/tmp/{stack.otto}-fast")
        theirs.write_bytes(bad)
        shutil.chown(theirs, stack.otto, stack.otto)
        compiled.unlink()
        compiled.symlink_to(theirs)
        r = system_run(stack, stack.otto, [str(fast_only), "-c", "true"])
        assert b"PWNED" not in r.stdout and r.returncode == 127
        # ... and the Python path, given the same files, enters the layer as always
        r = system_run(stack, stack.otto, [str(python), "-c", "echo $LAYERSHELL_LAYER"])
        assert r.stdout == b"otto\n", r.stderr
    finally:
        if compiled.is_symlink():
            compiled.unlink()
        Path(f"/var/tmp/{stack.otto}-fast").unlink(missing_ok=True)
        compiled.write_bytes(honest)
        compiled.chmod(0o644)
        shutil.chown(compiled, "root", "root")
        shutil.chown(compiled.parent, "root", "root")
        evil.unlink()


def test_a_layer_program_cannot_reach_the_compiled_file(rootless: Identity) -> None:
    """Rootless: layer programs run as the owner, so the file's owner check alone would
    not stop them; the file is simply not in any layer's view."""
    compiled = rootless.home / ".local/share/layershell/cache" / fast.FILE_NAME
    before = compiled.read_bytes()
    for layer in ("arne", "otto"):
        script = f"echo x > {compiled} || echo refused; ls {compiled.parent}"
        r = rootless.run([rootless.layer_shell, "--layer", layer, "-c", script])
        assert b"refused" in r.stdout, r.stdout
    assert compiled.read_bytes() == before
