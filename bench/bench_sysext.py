"""Is the system extension's frozen runtime as quick to start as the venv, and how big is it?

Prints one table, each row next to its baseline measured in the same run:

  1 --version   `core --version` from the extension's runtime (the image extracted, its
                /usr/bin/core: PyInstaller's bootloader, then the bundled interpreter)
                against the venv's `core` (Debian's python3 and the installed wheel).
  2 list        `core list --json` with 100 packages installed (installed once, untimed,
                by the venv's core), both sides reading the same state.
  3 image       the image's size (`./dev.sh sysext`) and sha256.

Goals: the extension's runtime <= 1.5x the venv's start-up, in both rows; the image
<= 40 MiB. The script states per goal whether it was met and never fails because of a
timing; it exits 1 only when something cannot be measured (the output says why).

    /opt/layershell/venv/bin/python bench/bench_sysext.py [--image RAW] [--calls N]

  --image RAW   an image `./dev.sh sysext` built (default: build one now, ~1 minute)
  --calls N     timed calls per side and row (default 20; median shown), interleaved
  --python PY   the venv's interpreter (default: the one running this script)

Rootless mode refuses root, so as root the measuring part runs as uid/gid 65534 (as
bench_install.py does), in a temporary directory under /var/tmp removed afterwards.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from bench_install import BenchError, child_env, rerun_as_nobody, run_checked, tiny_package, tool

GOAL_RATIO = 1.5
GOAL_IMAGE_MIB = 40.0
PACKAGES = 100
CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def progress(line: str) -> None:
    print(f"bench_sysext: {line}", file=sys.stderr, flush=True)


def build_image(work: str) -> str:
    sys.path.insert(0, CHECKOUT)
    from layershell.host import sysext

    progress("building the image (./dev.sh sysext)")
    try:
        image = sysext.build(CHECKOUT, os.path.join(work, "out"), os.path.join(work, "build"))
    except sysext.SysextError as exc:
        raise BenchError(f"the image did not build: {exc}") from None
    return image.path


def timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, check=False)
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise BenchError(
            f"{' '.join(argv)} exited {done.returncode}: {done.stderr.decode()[-500:]}"
        )
    return took


def measure(pairs: list[tuple[str, list[str], list[str]]], env: dict[str, str], calls: int
            ) -> list[tuple[str, float, float]]:  # fmt: skip
    rows = []
    for label, extension, venv in pairs:
        timed(extension, env)  # warm-up: page cache, both sides
        timed(venv, env)
        ours: list[float] = []
        base: list[float] = []
        for _ in range(calls):  # interleaved: drift hits both alike
            ours.append(timed(extension, env))
            base.append(timed(venv, env))
        rows.append((label, statistics.median(ours) * 1000, statistics.median(base) * 1000))
    return rows


def bench(work: str, image: str, python: str, calls: int) -> None:
    if os.geteuid() == 0:
        raise BenchError("the measuring process must not be root (rootless mode refuses it)")
    tree = os.path.join(work, "tree")
    run_checked([tool("unsquashfs"), "-q", "-d", tree, image], os.environ.copy(), "unsquashfs")
    frozen = os.path.join(tree, "usr/bin/core")
    venv_core = os.path.join(os.path.dirname(python), "core")
    if not os.access(venv_core, os.X_OK):
        raise BenchError(f"no {venv_core}: --python must be a venv's interpreter with layershell")
    home = os.path.join(work, "home")
    os.makedirs(home)
    env = child_env(home)
    run_checked([venv_core, "--rootless", "init"], env, "core --rootless init")
    tarballs = [tiny_package(os.path.join(work, f"p{i:03d}_1.0.tar.gz"), f"p{i:03d}")
                for i in range(PACKAGES)]  # fmt: skip
    progress(f"installing {PACKAGES} packages (untimed)")
    run_checked([venv_core, "install", "--quiet", *tarballs], env, "core install")
    listed = run_checked([frozen, "list", "--json"], env, "the extension's core list")
    if listed.count('"name"') != PACKAGES:
        raise BenchError(f"the extension's core lists {listed.count(chr(34) + 'name')} packages")
    rows = measure(
        [
            ("core --version", [frozen, "--version"], [venv_core, "--version"]),
            (f"core list --json ({PACKAGES} packages)", [frozen, "list", "--json"],
             [venv_core, "list", "--json"]),
        ],
        env,
        calls,
    )  # fmt: skip
    size = os.path.getsize(image)
    print(f"layershell system extension vs venv, median of {calls} calls each")
    print(f"  image   {os.path.basename(image)}")
    print(f"  venv    {os.path.dirname(os.path.dirname(python))} ({python})")
    print()
    print(f"  {'row':<36} {'extension':>10} {'venv':>10} {'ratio':>7}")
    for label, ours, base in rows:
        print(f"  {label:<36} {ours:>8.1f}ms {base:>8.1f}ms {ours / base:>6.2f}x")
    mib = size / (1 << 20)
    print(f"  {'image size':<36} {mib:>7.1f}MiB")
    print()
    for label, ours, base in rows:
        met = ours / base <= GOAL_RATIO
        print(f"goal: {label} <= {GOAL_RATIO}x the venv: {'met' if met else 'NOT met'}"
              f" ({ours / base:.2f}x)")  # fmt: skip
    met = mib <= GOAL_IMAGE_MIB
    print(f"goal: image <= {GOAL_IMAGE_MIB:.0f} MiB: {'met' if met else 'NOT met'} ({mib:.1f} MiB)")


def run_as_nobody(image: str, python: str, calls: int) -> int:
    args = ["--python", python, "--image", image, "--calls", str(calls)]
    return rerun_as_nobody(os.path.abspath(__file__), args, "/var/tmp", "bench-sysext-")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--image", help="the .raw to measure (default: build one)")
    parser.add_argument("--calls", type=int, default=20, help="timed calls per side and row")
    parser.add_argument("--python", default=sys.executable, help="the venv's interpreter")
    parser.add_argument("--work", help=argparse.SUPPRESS)  # set when run as uid 65534
    args = parser.parse_args(argv)
    python = os.path.abspath(args.python)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-sysext-build-", dir="/var/tmp") as build:
            image = os.path.abspath(args.image) if args.image else build_image(build)
            if not os.path.isfile(image):
                raise BenchError(f"{image} is not a file", "pass the .raw ./dev.sh sysext built")
            if args.work:
                bench(args.work, image, python, args.calls)
            elif os.geteuid() == 0:
                os.chmod(build, 0o755)
                return run_as_nobody(image, python, args.calls)
            else:
                with tempfile.TemporaryDirectory(prefix="bench-sysext-", dir="/var/tmp") as work:
                    bench(work, image, python, args.calls)
    except BenchError as exc:
        return exc.report("bench_sysext")
    return 0


if __name__ == "__main__":
    sys.exit(main())
