"""Attacks on the caller's terminal (issue 10, attack 1) and on the caller's home
through the cwd (attack 6), written as the attacks.

A program in a layer that still has its caller's terminal as its controlling terminal
could push bytes into the terminal's input queue (TIOCSTI, and TIOCLINUX's selection
paste on a virtual console): the caller's shell then reads and runs them once the
program has exited. This kernel allows TIOCSTI (dev.tty.legacy_tiocsti=1), so each test
below typed its command into the caller's shell before the executor's seccomp filter and
`core shell`'s own terminal existed. Every attempt must fail, and the caller's shell must
run nothing it was not given.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.packages import Repository
from tests.support import Identity, SystemStack, python_cmd

# Tries every way to reach TIOCSTI/TIOCLINUX and prints one line per try; "INJECTED"
# means the kernel accepted it. argv[1] is the command to type.
INJECTOR_C = r"""
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

static int via_libc(int fd, unsigned long req, char c) { return ioctl(fd, req, &c); }

static int via_syscall(int fd, unsigned long req, char c) {
    return (int)syscall(SYS_ioctl, fd, req, &c);
}

#if defined(__x86_64__)
static int via_x32(int fd, unsigned long req, char c) {
    return (int)syscall(0x40000000 | 514, fd, req, &c);
}
static int via_int80(int fd, unsigned long req, char c) {
    /* int 0x80 takes 32-bit pointers: the byte must live below 4 GiB */
    static char *low_byte;
    if (!low_byte)
        low_byte = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_32BIT,
                        -1, 0);
    if (low_byte == MAP_FAILED) return -1;
    *low_byte = c;
    long ret;
    __asm__ volatile("int $0x80" : "=a"(ret) : "a"(54), "b"(fd), "c"(req), "d"(low_byte)
                     : "memory");
    if (ret < 0) { errno = (int)-ret; return -1; }
    return (int)ret;
}
#endif

static void attempt(const char *what, int (*fn)(int, unsigned long, char), unsigned long req,
                    const char *text) {
    int ok = 1;
    for (const char *p = text; *p && ok; p++)
        ok = fn(0, req, *p) == 0;
    printf("%s: %s\n", what, ok ? "INJECTED" : strerror(errno));
    fflush(stdout);
}

int main(int argc, char **argv) {
    const char *text = argc > 1 ? argv[1] : "true\n";
    char paste[2] = {2, 0}; /* TIOCLINUX subcode 2: TIOCL_SETSEL; 3 pastes */
    attempt("tiocsti", via_libc, TIOCSTI, text);
    attempt("tiocsti-high-bits", via_syscall, TIOCSTI | (1UL << 32), text);
    attempt("tioclinux", via_libc, TIOCLINUX, paste);
#if defined(__x86_64__)
    attempt("tiocsti-x32", via_x32, TIOCSTI, text);
    attempt("tiocsti-i386", via_int80, TIOCSTI, text);
#endif
    printf("window: %s\n", isatty(0) ? "tty" : "no tty");
    return 0;
}
"""


@pytest.fixture(scope="module")
def injector(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("needs a C compiler to build the injector (dev.sh installs gcc)")
    work = tmp_path_factory.mktemp("injector")
    (work / "inject.c").write_text(INJECTOR_C)
    cc = shutil.which("cc") or "gcc"
    subprocess.run([cc, "-O0", "-o", str(work / "inject"), str(work / "inject.c")], check=True)
    return (work / "inject").read_bytes()


def spawn_shell(argv: list[str], env: dict[str, str], cwd: str) -> object:
    pexpect = pytest.importorskip("pexpect")
    child = pexpect.spawn(argv[0], argv[1:], env={**env, "PS1": "$ "}, cwd=cwd, timeout=30)
    child.setwinsize(30, 100)
    child.expect_exact("$ ")
    return child


def run_in_shell(child: object, command: str) -> str:
    """Run `command` in the spawned shell; returns what it printed. A sentinel with
    arithmetic proves the shell answered this command, not an echo of it."""
    child.sendline(f"{command}; echo end-$((40+2))")  # type: ignore[attr-defined]
    child.expect_exact("end-42", timeout=60)  # type: ignore[attr-defined]
    before: bytes = child.before  # type: ignore[attr-defined]
    return before.decode(errors="replace")


def assert_nothing_typed(child: object, marker: Path, output: str) -> None:
    # Anything pushed into the queue is read by the shell before this next command.
    run_in_shell(child, "sleep 0.3")
    run_in_shell(child, "true")
    assert "INJECTED" not in output, output
    assert not marker.exists(), f"the caller's shell ran injected input:\n{output}"
    for what in ("tiocsti", "tiocsti-high-bits", "tioclinux"):
        assert f"{what}: Operation not permitted" in output, output


# Shims and layer-shell: the executor's seccomp filter ------------------------------

# Leaves a child behind that, once the program has exited and the caller's shell has its
# terminal back, makes itself the terminal's foreground group and reads what the caller
# types next; it also tries to set a line discipline that kills the terminal (N_NULL).
# What it managed is written to argv[1].
THIEF = """#!/usr/bin/python3
import fcntl, os, signal, struct, sys, termios, time
log = open(sys.argv[1], "w", buffering=1)
try:
    fcntl.ioctl(0, termios.TIOCSETD, struct.pack("i", 27))
    log.write("setd: INJECTED\\n")
except OSError as e:
    log.write(f"setd: {e.strerror}\\n")
if os.fork() == 0:
    os.setpgid(0, 0)
    for sig in (signal.SIGTTOU, signal.SIGTTIN, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    time.sleep(1.0)
    fd = os.open("/dev/tty", os.O_RDWR)
    try:
        os.tcsetpgrp(fd, os.getpgrp())
        log.write("tcsetpgrp: INJECTED\\n")
        log.write("STOLEN:" + os.read(fd, 1000).decode() + "\\n")
    except OSError as e:
        log.write(f"tcsetpgrp: {e.strerror}\\n")
    os._exit(0)
print("thief: parent exits", flush=True)
"""


@pytest.fixture
def injecting_shim(fresh_rootless: Identity, shared_dir: Path, injector: bytes) -> Identity:
    repo = Repository(shared_dir / "repo")
    repo.add("typer", "1.0", {
        "bin/typer": injector,
        "bin/typer-nap": "#!/bin/sh\nexec sleep 30\n",
        "bin/typer-size": "#!/bin/sh\nexec stty size\n",
        "bin/typer-thief": THIEF,
    })  # fmt: skip
    repo.index()
    config = fresh_rootless.home / "typer.yaml"
    config.write_text(
        f"composable:\n  default_repository: {repo.file_url}\n  packages:\n"
        "    - name: typer\n      version: '1.0'\n      profile: default\n"
    )
    r = fresh_rootless.run(python_cmd("install", "--config", str(config)), timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    return fresh_rootless


def test_shim_program_cannot_type_into_its_callers_shell(injecting_shim: Identity) -> None:
    ident = injecting_shim
    marker = ident.home / "typed-by-shim"
    child = spawn_shell(ident.argv(["/bin/sh"]), ident.env, str(ident.home))
    output = run_in_shell(child, f"typer 'touch {marker}\n'")
    assert_nothing_typed(child, marker, output)
    assert "window: tty" in output  # the caller's terminal is still the program's
    child.sendline("exit")  # type: ignore[attr-defined]


def test_a_shims_leftover_child_cannot_take_the_terminal_back(
    injecting_shim: Identity, shared_dir: Path
) -> None:
    """After the program exits, a child it left makes itself the terminal's foreground
    process group (allowed in the same session) and reads the caller's next line."""
    ident = injecting_shim
    work = shared_dir / "work"  # the cwd: read-write for a default shim, unlike the home
    work.mkdir()
    os.chown(work, ident.uid, ident.gid)
    log = work / "thief.log"
    child = spawn_shell(ident.argv(["/bin/sh"]), ident.env, str(work))
    run_in_shell(child, f"typer-thief {log}")
    time.sleep(2)  # the leftover has tried by now
    answer = run_in_shell(child, "echo typed-by-$((6*7))-victim")
    assert "typed-by-42-victim" in answer
    text = log.read_text()
    assert "tcsetpgrp: Operation not permitted" in text, text
    assert "setd: Operation not permitted" in text, text
    assert "STOLEN" not in text
    child.sendline("exit")  # type: ignore[attr-defined]


def test_shim_keeps_job_control_and_window_size(injecting_shim: Identity) -> None:
    """The filter blocks two ioctls, not the terminal: Ctrl-Z/fg and the window size
    still reach a shim's program."""
    ident = injecting_shim
    child = spawn_shell(ident.argv(["/bin/sh", "-m"]), ident.env, str(ident.home))
    child.sendline("typer-nap")  # type: ignore[attr-defined]
    time.sleep(1)
    child.sendcontrol("z")  # type: ignore[attr-defined]
    child.expect("Stopped", timeout=20)  # type: ignore[attr-defined]
    out = run_in_shell(child, "jobs")
    assert "typer-nap" in out, out
    child.sendline("fg")  # type: ignore[attr-defined]
    child.expect_exact("typer-nap")  # type: ignore[attr-defined]
    time.sleep(0.5)
    child.sendcontrol("c")  # type: ignore[attr-defined]
    assert "status-130" in run_in_shell(child, "echo status-$?")
    child.setwinsize(41, 123)  # type: ignore[attr-defined]
    out = run_in_shell(child, "typer-size")
    assert "41 123" in out, out
    child.sendline("exit")  # type: ignore[attr-defined]


def test_layer_shell_program_cannot_type_into_its_callers_shell(
    fresh_rootless: Identity, shared_dir: Path, injector: bytes
) -> None:
    ident = fresh_rootless
    # Layer otto sees arne's /opt/pkgs: arne puts the program there.
    put = ident.run(
        [ident.layer_shell, "--layer", "arne", "-c", f"cat > {PROGRAM} && chmod 755 {PROGRAM}"],
        input=injector,
    )
    assert put.returncode == 0, put.stderr.decode()
    marker = ident.home / "typed-by-layer"
    child = spawn_shell(ident.argv(["/bin/sh"]), ident.env, str(ident.home))
    output = run_in_shell(
        child, f"{ident.layer_shell} --layer otto -- {PROGRAM} 'touch {marker}\n'"
    )
    assert_nothing_typed(child, marker, output)


# Root's terminal: core shell --------------------------------------------------------


PROGRAM = "/opt/pkgs/inject"  # where layers arne and otto both see it


def root_shell(system: SystemStack) -> object:
    return spawn_shell(["/bin/sh"], system.env, "/")


@pytest.fixture
def planted(system: SystemStack, injector: bytes) -> Iterator[SystemStack]:
    """The injector at PROGRAM in the shared stack, removed afterwards with anything
    the test planted in arne's home (the stack is shared by the whole session)."""
    path = system.root / PROGRAM.lstrip("/")
    path.write_bytes(injector)
    path.chmod(0o755)
    yield system
    path.unlink(missing_ok=True)
    for home in (system.root / "var/lib/layershell/layers/arne/home",):
        (home / ".profile").unlink(missing_ok=True)


def test_program_run_by_root_in_a_layer_cannot_type_into_roots_shell(
    planted: SystemStack, shared_dir: Path
) -> None:
    system = planted
    marker = shared_dir / "typed-as-root"
    child = root_shell(system)
    core = " ".join(python_cmd("shell", "--layer", "otto"))
    output = run_in_shell(child, f"{core} -- {PROGRAM} 'touch {marker}\n'")
    assert_nothing_typed(child, marker, output)


def test_core_shell_gives_the_layer_a_terminal_of_its_own(system: SystemStack) -> None:
    """Not root's terminal: even a process of the account that escaped the filter
    (none should) would only reach a terminal root reads nothing from."""
    child = root_shell(system)
    which = "stat -L -c 'tty=%t:%T' /proc/self/fd/0"
    mine = run_in_shell(child, which).split("tty=")[-1].split()[0]
    core = " ".join(python_cmd("shell", "--layer", "otto"))
    theirs = run_in_shell(child, f"{core} -- {which}")
    assert "tty=" in theirs, theirs
    assert theirs.split("tty=")[-1].split()[0] != mine
    # ... and it still behaves as a terminal: size and a prompt answered.
    child.setwinsize(33, 77)  # type: ignore[attr-defined]
    size = run_in_shell(child, f"{core} -- stty size")
    assert "33 77" in size, size
    child.sendline(f"{core} -- sh -c 'printf \"name? \"; read n; echo hi-$n'")  # type: ignore[attr-defined]
    child.expect_exact("name? ")  # type: ignore[attr-defined]
    child.sendline("root")  # type: ignore[attr-defined]
    child.expect_exact("hi-root")  # type: ignore[attr-defined]
    run_in_shell(child, "true")


LEFTOVER = """import os, signal, sys, time
if os.fork():
    print("started", flush=True)
    sys.exit(0)
for s in (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGTSTP):
    signal.signal(s, signal.SIG_IGN)
while True:  # every 20 ms: never quiet long enough for a relay that waits for silence
    os.write(1, b"\\033[0m")
    time.sleep(0.02)
"""


def test_a_process_left_in_core_shell_does_not_keep_roots_terminal(system: SystemStack) -> None:
    """The program exits but leaves a child that ignores every signal and keeps printing
    into the layer's terminal: root's shell must get its terminal back, not wait for it
    (a fake prompt could then collect what root types)."""
    tag = f"left-{os.getpid()}"
    child = root_shell(system)
    core = " ".join(python_cmd("shell", "--layer", "otto"))
    try:
        out = run_in_shell(child, f"{core} -- python3 -c {shlex.quote(LEFTOVER)} {tag}")
        assert "started" in out
        # Root's own shell answers, and gets what root types.
        assert "root-here-42" in run_in_shell(child, "echo root-here-$((6*7))")
    finally:
        for pid in pids_with(tag):
            os.kill(pid, signal.SIGKILL)


def pids_with(tag: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if tag.encode() in f.read():
                        found.append(int(entry))
            except OSError:
                continue
    return found


def test_core_shell_status_and_no_tty_case(system: SystemStack) -> None:
    """Without a terminal on stdin there is no relay: the program gets a new session
    (no controlling terminal, so TIOCSTI on an inherited tty fd is refused) and its
    output and status pass straight through."""
    r = subprocess.run(
        [*python_cmd("shell", "--layer", "otto"), "--", "sh", "-c",
         "echo out; echo err >&2; test -e /dev/tty && (: </dev/tty) 2>/dev/null "
         "&& echo has-ctty; exit 9"],
        env=system.env, capture_output=True, stdin=subprocess.DEVNULL, timeout=60, check=False,
    )  # fmt: skip
    assert r.returncode == 9, r.stderr
    assert r.stdout.decode().split() == ["out"]
    assert "err" in r.stderr.decode()


def test_arne_profile_cannot_type_into_root_at_next_core_shell(
    planted: SystemStack, shared_dir: Path
) -> None:
    """An install.sh (or anything of arne's) writes ~/.profile in arne's home; root's
    next `core shell --layer arne` starts a login shell that runs it."""
    system = planted
    marker = shared_dir / "typed-at-login"
    r = system.in_layer(
        system.arne, f"printf '%s\\n' \"{PROGRAM} 'touch {marker}\n'\" > \"$HOME/.profile\""
    )
    assert r.returncode == 0, r.stderr.decode()
    child = root_shell(system)
    core = " ".join(python_cmd("shell", "--layer", "arne"))
    child.sendline(core)  # type: ignore[attr-defined]
    child.expect_exact("window: ", timeout=60)  # type: ignore[attr-defined]
    login_output: bytes = child.before  # type: ignore[attr-defined]
    child.sendline("exit")  # type: ignore[attr-defined]
    # Root's shell has its terminal back (its prompt) before root types again: a line
    # typed while the session still ends goes to the session, as with su --pty.
    child.expect_exact("logout", timeout=60)  # type: ignore[attr-defined]
    child.expect_exact("$ ", timeout=60)  # type: ignore[attr-defined]
    run_in_shell(child, "true")
    assert_nothing_typed(child, marker, login_output.decode(errors="replace"))


# The caller's other terminals ------------------------------------------------------

PEEK = """#!/usr/bin/python3
import os, sys
try:
    os.close(os.open(sys.argv[1], os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK))
    print("opened")
except OSError as e:
    print("refused:", e.strerror)
"""


@pytest.fixture
def peekers(fresh_rootless: Identity, shared_dir: Path) -> Identity:
    repo = Repository(shared_dir / "repo")
    for profile in ("default", "strict"):
        repo.add(f"peek{profile}", "1.0", {f"bin/peek-{profile}": PEEK})
    repo.index()
    config = fresh_rootless.home / "peek.yaml"
    config.write_text(
        f"composable:\n  default_repository: {repo.file_url}\n  packages:\n"
        + "".join(
            f"    - name: peek{p}\n      version: '1.0'\n      profile: {p}\n"
            for p in ("default", "strict")
        )
    )
    r = fresh_rootless.run(python_cmd("install", "--config", str(config)), timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    return fresh_rootless


def test_a_strict_program_cannot_open_the_callers_other_terminals(peekers: Identity) -> None:
    """Another terminal of the caller's (a pty they own, where they might type a
    password) is open to its owner, and so to a program running as them: under `strict`
    the program has a /dev of its own and does not see it. Under `default` it does (the
    documented limit: the host's /dev, as for a native program)."""
    ident = peekers
    master, slave = os.openpty()
    try:
        other = os.ttyname(slave)
        os.chown(other, ident.uid, ident.gid)
        strict = ident.run([str(ident.home / ".local/bin/peek-strict"), other])
        assert strict.stdout.decode().strip() == "refused: No such file or directory", strict
        default = ident.run([str(ident.home / ".local/bin/peek-default"), other])
        assert default.stdout.decode().strip() == "opened", default
    finally:
        os.close(slave)
        os.close(master)


def test_a_stopped_session_leader_gives_root_its_shell_back(system: SystemStack) -> None:
    """A layer process can stop the session's leader: root's `core shell` waited for it
    for ever with root's terminal raw. It now stops too, as su does: root's shell says
    Stopped, and fg resumes both."""
    child = spawn_shell(["/bin/sh", "-m"], system.env, "/")
    core = " ".join(python_cmd("shell", "--layer", "otto"))
    child.sendline(f"{core} -- sh -c 'kill -STOP $$; echo resumed-$((6*7))'")  # type: ignore[attr-defined]
    child.expect("Stopped", timeout=60)  # type: ignore[attr-defined]
    assert "root-42" in run_in_shell(child, "echo root-$((6*7))")
    child.sendline("fg")  # type: ignore[attr-defined]
    child.expect_exact("resumed-42", timeout=60)  # type: ignore[attr-defined]
    run_in_shell(child, "true")


def test_roots_terminal_hanging_up_ends_the_layers_session(system: SystemStack) -> None:
    """Root's terminal goes away (ssh dropped): nothing is left to talk to the layer's
    session, which ignored SIGHUP and kept root's `core shell` alive."""
    tag = f"hup-{os.getpid()}"
    child = root_shell(system)
    core = " ".join(python_cmd("shell", "--layer", "otto"))
    code = "import signal, time; signal.signal(signal.SIGHUP, signal.SIG_IGN); time.sleep(300)"
    child.sendline(f"{core} -- python3 -c {shlex.quote(code)} {tag}")  # type: ignore[attr-defined]
    deadline = time.monotonic() + 30
    while not pids_with(tag) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert pids_with(tag), "the layer's program did not start"
    child.close(force=False)  # type: ignore[attr-defined]
    deadline = time.monotonic() + 20
    while pids_with(tag) and time.monotonic() < deadline:
        time.sleep(0.2)
    try:
        assert not pids_with(tag)
    finally:
        for pid in pids_with(tag):
            os.kill(pid, signal.SIGKILL)
