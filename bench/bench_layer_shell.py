"""How long do `layer-shell --layer otto -- true` and a shim take, next to the alternatives?

Prints one table of ms/call (mean and median over --calls calls, after a few warm-up
calls) for five ways of running /bin/true:

  native       /bin/true                         what any process spawn costs here
  unshare      unshare -Ur chroot / /bin/true    the least a user namespace costs
  bwrap        bwrap --ro-bind /usr /usr ... --unshare-user /bin/true
                                                 a bare sandbox built by a C helper
  layer-shell  layer-shell --layer otto -- true  the fast launcher `core init` writes
  shim         ~/.local/bin/ptrue                the shim `core install` writes for a
                                                 package `ptrue` whose bin/ptrue is a copy
                                                 of /usr/bin/true (profile default; not
                                                 `true`: a shim may not shadow a host program)
  shim, no filter  the same shim on an executor built without its seccomp filter
                                                 (TIOCSTI/TIOCLINUX): what the filter costs

The baselines separate what layer-shell cannot avoid (a process, a user namespace) from
what a comparable sandbox in C pays for its mounts, so whatever remains is layer-shell's
own cost: starting Python and building the view. The goal is layer-shell <= 15 ms/call.

The shim row is what a user pays for every call of an installed program: /bin/sh
starting and reading the two-line shim, layershell-enter (the C executor) building the
view of layer otto with the profile's binds (home read-only, cwd read-write, the temporary
HOME here), and the exec of the package's true. Issue 4 set its goals: a shim <= 4.5
ms/call, and no slower than bare bwrap, which builds a simpler sandbox; issue 10 asked
that the seccomp filter cost at most 10% of the shim row; issue 13, that the shim stay
within 10% of the 2.2 ms it took over a 1.7 ms floor when it was filed (compared as
multiples of the floor of the same run). The script states whether each
goal was met and never fails because of a timing.

Rootless mode refuses to run as root, so as root the script re-runs itself as uid/gid
65534 through `setpriv --reuid=65534 --regid=65534 --clear-groups` (no account is
created) with HOME, XDG_DATA_HOME and XDG_CONFIG_HOME in a fresh temporary directory it
removes afterwards; as an ordinary user it uses a temporary HOME directly. Either way
it runs `core --rootless init` there first and measures ~/.local/bin/layer-shell, then
`core install ptrue_1.0.tar.gz` (built next to HOME) and measures ~/.local/bin/ptrue.

Every call is timed the same way: time.perf_counter around os.posix_spawn + waitpid,
with stdio on /dev/null, the rows interleaved call by call so drift hits all alike.

    /opt/layershell/venv/bin/python bench/bench_layer_shell.py [--calls N]
"""

from __future__ import annotations

import argparse
import gc
import os
import pwd
import shutil
import signal
import stat
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass

GOAL_MS = 15.0
SHIM_GOAL_MS = 4.5
FILTER_GOAL = 1.10  # the shim with its seccomp filter against the same shim without
# Issue 13: the shim within 10% of its cost when the issue was filed (2.2 ms/call over a
# 1.7 ms floor, the unshare row, on this machine): as multiples of the floor measured in
# the same run, so that a slower or busier machine moves both alike.
ISSUE13_SHIM_OVER_FLOOR = 2.2 / 1.7
ISSUE13_GOAL = 1.10
# Issue 16: layer-shell without Python <= 3.0 ms/call and within 1.75x the unshare floor
# (the absolute number was set on a machine whose floor was 1.72 ms; both are printed);
# the shim within 1.2x the floor.
FAST_GOAL_MS = 3.0
FAST_OVER_FLOOR = 1.75
SHIM_OVER_FLOOR = 1.2
NOBODY = 65534
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BWRAP = ("bwrap", "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin",
         "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
         "--proc", "/proc", "--dev", "/dev", "--unshare-user", "/bin/true")  # fmt: skip


class BenchError(Exception):
    """Something to fix before anything can be measured."""


@dataclass(frozen=True)
class Row:
    label: str
    path: str  # absolute: posix_spawn does no PATH search
    argv: tuple[str, ...]


def child_env(home: str) -> dict[str, str]:
    """The whole environment of every command: nothing of the caller's leaks in."""
    return {
        "PATH": PATH,
        "HOME": home,
        "XDG_DATA_HOME": os.path.join(home, ".local", "share"),
        "XDG_CONFIG_HOME": os.path.join(home, ".config"),
        "LAYERSHELL_MODE": "rootless",
        "LANG": "C.UTF-8",
    }


def row(label: str, argv: tuple[str, ...]) -> Row:
    path = argv[0] if os.path.isabs(argv[0]) else shutil.which(argv[0], path=PATH)
    if path is None:
        raise BenchError(f"{argv[0]} not found on {PATH}")
    return Row(label, path, argv)


def run_checked(argv: list[str], env: dict[str, str], what: str) -> None:
    """Run once, untimed; BenchError with the output if it did not exit 0."""
    try:
        done = subprocess.run(
            argv, check=False, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True
        )
    except OSError as exc:
        raise BenchError(f"{what}: cannot run {argv[0]}: {exc.strerror}") from None
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip() or "(no output)"
        raise BenchError(
            f"{what} exited {done.returncode}, as uid {os.getuid()}:\n"
            f"  $ {' '.join(argv)}\n" + "\n".join(f"  | {line}" for line in output.splitlines())
        )


def init_layers(core: str, env: dict[str, str]) -> str:
    """`core --rootless init` in the temporary HOME; the launcher it wrote."""
    run_checked([core, "--rootless", "init"], env, "core --rootless init")
    launcher = os.path.join(env["HOME"], ".local", "bin", "layer-shell")
    if not os.access(launcher, os.X_OK):
        raise BenchError(f"core --rootless init did not write an executable {launcher}")
    return launcher


def install_shim(core: str, env: dict[str, str], where: str) -> str:
    """`core install` a package whose bin/ptrue is /usr/bin/true; the shim it wrote."""
    package = os.path.join(where, "ptrue_1.0.tar.gz")
    with tarfile.open(package, "w:gz") as tar:
        info = tarfile.TarInfo("bin")
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        tar.addfile(info)
        info = tar.gettarinfo("/usr/bin/true", arcname="bin/ptrue")
        info.mode = 0o755
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        with open("/usr/bin/true", "rb") as f:
            tar.addfile(info, f)
    run_checked([core, "install", package], env, "core install ptrue_1.0.tar.gz")
    shim = os.path.join(env["HOME"], ".local", "bin", "ptrue")
    if not os.access(shim, os.X_OK):
        raise BenchError(f"core install did not write an executable shim {shim}")
    return shim


def unfiltered_shim(shim: str, where: str) -> str:
    """A copy of `shim` whose executor is layershell's enter.c built without the
    seccomp filter (bench only: the macro exists for this comparison), with the flags
    hatch_build.py built the real one with (layershell/_bin/build.json), so the two
    differ by the filter alone."""
    import importlib.util
    import json

    spec = importlib.util.find_spec("layershell")
    if spec is None or spec.origin is None:
        raise BenchError("layershell is not importable here: run ./dev.sh install")
    package = os.path.dirname(spec.origin)
    source = os.path.join(package, "layers", "enter.c")
    try:
        with open(os.path.join(package, "_bin", "build.json"), encoding="utf-8") as f:
            flags = json.load(f)["layershell-enter"]["flags"]
    except (OSError, ValueError, KeyError) as exc:
        raise BenchError(f"layershell's build record is unreadable: {exc}") from None
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise BenchError("no C compiler for the unfiltered executor (apt-get install gcc)")
    helper = os.path.join(where, "layershell-enter-unfiltered")
    run_checked([cc, *flags, "-DLAYERSHELL_BENCH_NO_FILTER", "-o", helper, source],
                dict(os.environ), "cc enter.c")  # fmt: skip
    with open(shim, encoding="utf-8") as f:
        text = f.read()
    ours = text.split("exec ", 1)[1].split(" ", 1)[0]  # the executor the shim names
    copy = os.path.join(where, "ptrue-unfiltered")
    with open(copy, "w", encoding="utf-8") as f:
        # both the "#!" line (the kernel starts it) and the exec line (it reads that)
        text = text.replace(f"#!{ours} ", f"#!{helper} ", 1)
        f.write(text.replace(f"exec {ours} ", f"exec {helper} ", 1))
    os.chmod(copy, 0o755)
    return copy


def python_path(launcher: str, where: str) -> str:
    """A copy of the launcher with no compiled file in its slot: every call starts Python
    (binaries.with_slot, as tests/support.py's launcher_variant)."""
    from layershell.host import binaries

    with open(launcher, "rb") as f:
        data = binaries.with_slot(f.read(), fast="")
    out = os.path.join(where, "layer-shell-python")
    with open(out, "wb") as f:
        f.write(data)
    os.chmod(out, 0o755)
    return out


def spawn(r: Row, env: dict[str, str], devnull: int) -> float:
    """Seconds for one call, spawn to reaped; BenchError if it did not exit 0."""
    actions = [(os.POSIX_SPAWN_DUP2, devnull, fd) for fd in (0, 1, 2)]
    start = time.perf_counter()
    pid = os.posix_spawn(
        r.path, r.argv, env, file_actions=actions, setsigdef=(signal.SIGPIPE, signal.SIGXFSZ)
    )
    _, status = os.waitpid(pid, 0)
    elapsed = time.perf_counter() - start
    if status != 0:
        raise BenchError(f"{r.label}: a timed call exited {os.waitstatus_to_exitcode(status)}")
    return elapsed


def measure(rows: list[Row], env: dict[str, str], calls: int, warmup: int) -> list[list[float]]:
    times: list[list[float]] = [[] for _ in rows]
    devnull = os.open(os.devnull, os.O_RDWR)
    gc.disable()
    try:
        for i in range(warmup + calls):
            for r, kept in zip(rows, times, strict=True):
                try:
                    elapsed = spawn(r, env, devnull)
                except BenchError:
                    run_checked([r.path, *r.argv[1:]], env, r.label)  # show why, if it can
                    raise
                if i >= warmup:
                    kept.append(elapsed * 1000.0)
    finally:
        gc.enable()
        os.close(devnull)
    return times


def launcher_kind(path: str) -> str:
    with open(path, "rb") as f:
        head = f.read(4)
    return "compiled" if head == b"\x7fELF" else "#! script" if head[:2] == b"#!" else "unknown"


def print_table(
    rows: list[Row], times: list[list[float]], calls: int, warmup: int, launcher: str
) -> list[float]:
    """The table; returns each row's mean."""
    means = [statistics.fmean(t) for t in times]
    medians = [statistics.median(t) for t in times]
    native = means[0]
    uid = os.getuid()
    who = "nobody" if uid == NOBODY else "you"
    print(f"ms per call of /bin/true: {calls} calls each after {warmup} warm-up calls, "
          f"interleaved; posix_spawn + waitpid; uid {uid} ({who}); rootless mode, "
          f"{launcher_kind(launcher)} launcher {launcher}")  # fmt: skip
    width = max(len(r.label) for r in rows)
    print(f"{'command':<{width}}  {'mean ms':>8}  {'median ms':>9}  vs native (mean)")
    for r, mean, median in zip(rows, means, medians, strict=True):
        versus = (
            "1.0x (baseline)" if r is rows[0] else f"{mean / native:.1f}x (+{mean - native:.2f} ms)"
        )
        print(f"{r.label:<{width}}  {mean:8.2f}  {median:9.2f}  {versus}")
    return means


def bench(home: str, calls: int, warmup: int, core: str) -> None:
    if os.geteuid() == 0:
        raise BenchError("the measuring process must not be root (rootless mode refuses it)")
    env = child_env(home)
    os.chdir(home)
    launcher = init_layers(core, env)
    shim = install_shim(core, env, os.path.dirname(os.path.abspath(home)))
    shell_argv = (launcher, "--layer", "otto", "--", "true")
    rows = [
        row("native /bin/true", ("/bin/true",)),
        row("unshare -Ur chroot / /bin/true", ("unshare", "-Ur", "chroot", "/", "/bin/true")),
        row("bwrap (bare, --unshare-user)", BWRAP),
        row("layer-shell --layer otto -- true", shell_argv),
        row("layer-shell, the Python path", (python_path(launcher, home), *shell_argv[1:])),
        row("shim: ptrue (profile default)", (shim,)),
        row("shim, no seccomp filter", (unfiltered_shim(shim, home),)),
    ]
    for r in rows:
        run_checked([r.path, *r.argv[1:]], env, r.label)
    times = measure(rows, env, calls, warmup)
    means = print_table(rows, times, calls, warmup, launcher)
    medians = [statistics.median(t) for t in times]
    floor, bwrap, shell, shim_at, bare = 1, 2, 3, 5, 6  # indexes into rows
    verdict = "met" if means[shell] <= GOAL_MS else "NOT met"
    print(f"goal: layer-shell <= {GOAL_MS:g} ms/call (mean): {verdict} "
          f"(mean {means[shell]:.2f} ms, median {medians[shell]:.2f} ms)")  # fmt: skip
    verdict = "met" if means[shim_at] <= SHIM_GOAL_MS else "NOT met"
    print(f"goal: shim <= {SHIM_GOAL_MS:g} ms/call (mean): {verdict} "
          f"(mean {means[shim_at]:.2f} ms, median {medians[shim_at]:.2f} ms)")  # fmt: skip
    verdict = "met" if means[shim_at] <= means[bwrap] else "NOT met"
    print(f"goal: shim no slower than bare bwrap (mean): {verdict} "
          f"(shim {means[shim_at]:.2f} ms, bwrap {means[bwrap]:.2f} ms, "
          f"{means[shim_at] - means[bwrap]:+.2f} ms)")  # fmt: skip
    ratio = means[shim_at] / means[bare]
    verdict = "met" if ratio <= FILTER_GOAL else "NOT met"
    print(f"goal: the seccomp filter adds <= {FILTER_GOAL - 1:.0%} to a shim (mean): "
          f"{verdict} ({ratio:.3f}x: {means[shim_at]:.2f} ms with, "
          f"{means[bare]:.2f} ms without)")  # fmt: skip
    verdict = "met" if means[shell] <= FAST_GOAL_MS else "NOT met"
    print(f"goal: layer-shell <= {FAST_GOAL_MS:g} ms/call without Python (mean): {verdict} "
          f"(mean {means[shell]:.2f} ms; the floor here is {means[floor]:.2f} ms)")  # fmt: skip
    over = means[shell] / means[floor]
    verdict = "met" if over <= FAST_OVER_FLOOR else "NOT met"
    print(f"goal: layer-shell within {FAST_OVER_FLOOR:g}x the unshare floor (mean): {verdict} "
          f"({over:.2f}x)")  # fmt: skip
    over = means[shim_at] / means[floor]
    verdict = "met" if over <= SHIM_OVER_FLOOR else "NOT met"
    print(f"goal: shim within {SHIM_OVER_FLOOR:g}x the unshare floor (mean): {verdict} "
          f"({over:.2f}x)")  # fmt: skip
    over_floor = means[shim_at] / means[floor]
    limit = ISSUE13_SHIM_OVER_FLOOR * ISSUE13_GOAL
    verdict = "met" if over_floor <= limit else "NOT met"
    print(
        f"goal: shim within {ISSUE13_GOAL - 1:.0%} of issue 13's {ISSUE13_SHIM_OVER_FLOOR:.2f}x"
        f" the unshare floor (mean): {verdict} ({over_floor:.2f}x, at most {limit:.2f}x)"
    )


def check_traversable(path: str) -> None:
    """uid 65534 must be able to reach the temporary directory."""
    parent = os.path.dirname(path)
    while True:
        if not os.stat(parent).st_mode & stat.S_IXOTH:
            raise BenchError(
                f"{parent} is not searchable by others, so uid {NOBODY} cannot reach {path}",
                "set TMPDIR=/tmp",
            )
        if parent == os.path.dirname(parent):
            return
        parent = os.path.dirname(parent)


def run_as_nobody(calls: int, warmup: int, core: str) -> int:
    """As root: this script again, as uid/gid 65534 by setpriv, in a fresh HOME."""
    try:
        pwd.getpwuid(NOBODY)
    except KeyError:
        raise BenchError(
            f"uid {NOBODY} has no passwd entry; layer-shell looks its caller up there"
        ) from None
    setpriv = shutil.which("setpriv", path=PATH)
    if setpriv is None:
        raise BenchError("setpriv (util-linux) is needed to measure as uid 65534")
    base = tempfile.mkdtemp(prefix="bench-layer-shell-")
    try:
        check_traversable(base)
        home = os.path.join(base, "home")
        os.mkdir(home)
        for path in (base, home):
            os.chmod(path, 0o755)
            os.chown(path, NOBODY, NOBODY)
        worker = [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                  sys.executable, os.path.abspath(__file__), "--calls", str(calls),
                  "--warmup", str(warmup), "--core", core, "--home", home]  # fmt: skip
        return subprocess.run(worker, check=False, env=child_env(home), cwd=home).returncode
    finally:
        shutil.rmtree(base, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=200, help="timed calls per command")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls first")
    parser.add_argument(
        "--core",
        default=os.path.join(os.path.dirname(sys.executable), "core"),
        help="the core command (default: next to this Python)",
    )
    parser.add_argument("--home", help=argparse.SUPPRESS)  # set when run as uid 65534
    args = parser.parse_args(argv)
    if args.calls < 1 or args.warmup < 0:
        parser.error("--calls must be >= 1 and --warmup >= 0")
    core = os.path.abspath(args.core)
    try:
        if not os.access(core, os.X_OK):
            raise BenchError(f"{core} is not executable", "pass --core PATH")
        if args.home:
            bench(args.home, args.calls, args.warmup, core)
        elif os.geteuid() == 0:
            return run_as_nobody(args.calls, args.warmup, core)
        else:
            with tempfile.TemporaryDirectory(prefix="bench-layer-shell-") as base:
                home = os.path.join(base, "home")
                os.mkdir(home, 0o755)
                bench(home, args.calls, args.warmup, core)
    except BenchError as exc:
        print(f"bench_layer_shell: error: {exc.args[0]}", file=sys.stderr)
        for hint in exc.args[1:]:
            print(f"  hint: {hint}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
