"""How fast does `core install` install, and does it stay fast as a layer fills up?

Prints one table, each row next to a baseline measured in the same run:

  1 install   `core install BIG.tar.gz` of a generated package (~100 MB in 10,000 files
              of log-normal sizes, text, binary-like and incompressible, in 500 nested
              directories, 10 commands in bin/ and 100 symbolic links)
              against `sha256sum BIG.tar.gz && tar -xzf BIG.tar.gz -C DIR` (GNU tar):
              layershell also hashes, unpacks (checking every entry) into staging,
              renames and records. Median of 3, each into a fresh HOME's empty layer
              and a fresh DIR. Goal (issue 16; it was 1.5x): <= 1.0x the baseline.
  1z zst      the same tree as a .tar.zst (zstd level 3) against `sha256sum && tar
              --zstd -xf`. Goals: <= 1.0x its baseline, and faster than row 1.
  1s signed   `core install --config` of the same package from a file:// repository
              signed by `core repo index --sign` (a key made for the run, trusted in
              the HOME) against the same repository with `verify: checksum`: what
              checking SHA256SUMS.gpg with gpgv and matching index.json and the
              tarball against SHA256SUMS cost. 7 interleaved pairs (after a warm-up),
              fresh HOMEs; the ratio is the median of the pairs' ratios. Goal (issue
              14): <= 1.10x.
  2 list      `core list --json` with 1,000 packages installed (installed untimed, 100
              tarballs per `core install` call), median of 10, next to `python -c pass`
              with the same interpreter (its start-up, which no Python CLI avoids).
              Goal (issue 16): <= 50 ms. Nothing changes between the calls, so each
              prints the listing the one before kept (cli/list_cache.py).
  2u changed  the same, each call right after a touch of the layer's state.db (0.1 s
              before), so no kept listing can be used: what the first listing after a
              change costs. No goal.
  2t table    `core list` (the table, piped) of the same as row 2. Goal: <= 80 ms.
  3 #1001     `core install` of one small tarball into the layer holding those 1,000
              packages against the same into an empty layer (#1), median of 5 each,
              `core remove` after each. Goal: <= 1.2x.
  4 list      `core list --json` once the same layer holds 10,000 packages, each call right
              after a change as in row 2u, next to row 2u:
              the cost curve (a listing prints every row, so it grows with them; nothing
              else may).
  5 #10001    row 3 again at 10,000 packages. Goal: <= 1.2x install #1.

The script states per goal whether it was met and never fails because of a timing; it
exits 1 only when something cannot be measured (the output says why).

    /opt/layershell/venv/bin/python bench/bench_install.py [--quick] [--python PY]
                                                           [--tmpdir DIR]

  --quick       a smoke run: 10 MB in 1,000 files, 100 and 300 packages (same repetitions)
  --python PY   the interpreter that runs `PY -m layershell` (= core) and `PY -c pass`
                (default: the one running this script)
  --tmpdir DIR  where packages are generated and unpacked (default /var/tmp; the layers'
                HOMEs are there too, so both sides write to the same filesystem)

Rootless mode refuses to run as root, so as root the script re-runs itself as uid/gid
65534 through `setpriv --reuid=65534 --regid=65534 --clear-groups` (no account is
created); as an ordinary user it runs as itself. Either way every layer gets a private
HOME (with XDG_DATA_HOME and XDG_CONFIG_HOME in it) where `core --rootless init` runs
first, everything lives in one temporary directory under --tmpdir, and that directory
is removed afterwards.

Every timed call is time.perf_counter around os.posix_spawn + wait4, stdout on
/dev/null and stderr in a log shown if the call fails; os.sync() runs (untimed) before
each, so write-back left by the previous run is not billed to the next; rows'
repetitions are interleaved, layershell and baseline in turn, so drift hits both alike.
Each row starts with one untimed warm-up call of each side. Row 1 also shows the
CPU time (user + sys, from wait4, children included) of each side: GNU tar runs gzip
in a second process, so on several CPUs its wall time is below its CPU time.

Nothing large is deleted until the end: on ext4 without a journal, the kernel skips
inodes freed in the last 60 s (300 s while their inode table block is dirty) when it
allocates new ones (fs/ext4/ialloc.c, recently_deleted()), so unpacking 10,000 files
right after deleting 10,000 scans past every one of them: 5-10x slower, and more with
each round. The header says when --tmpdir is on such a filesystem; anything else that
deleted many files there in the last minutes (a test run) still slows both sides.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pwd
import random
import shutil
import signal
import stat
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

NOBODY = 65534
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MiB = 1 << 20

GOAL_INSTALL_RATIO = 1.0  # issue 16 (it was 1.5): no slower than sha256sum && tar
GOAL_LIST_MS = 50.0  # issue 16 (it was 200): no click or rich for a plain listing
GOAL_TABLE_MS = 80.0
GOAL_GROWTH_RATIO = 1.2
GOAL_SIGNED_RATIO = 1.10  # issue 14: a signed repository against the same unverified
INSTALL_RUNS = 3
SIGNED_RUNS = 7  # both sides do the same work but for the check: more runs, less noise
LIST_RUNS = 10
PROBE_RUNS = 5
BATCH = 100  # tarballs per `core install` call when filling the layer

SEED = 3  # the generated package is the same in every run
MTIME = 1_700_000_000


class BenchError(Exception):
    """Something to fix before anything can be measured."""

    def report(self, program: str) -> int:
        """Say what and how to fix it on stderr; the exit status, 1."""
        print(f"{program}: error: {self.args[0]}", file=sys.stderr)
        for hint in self.args[1:]:
            print(f"  hint: {hint}", file=sys.stderr)
        return 1


@dataclass(frozen=True)
class Scale:
    big_bytes: int
    big_files: int
    packages: int
    many: int  # rows 4 and 5: the same layer filled up to this many


FULL = Scale(100 * MiB, 10_000, 1_000, 10_000)
QUICK = Scale(10 * MiB, 1_000, 100, 300)


def progress(line: str) -> None:
    print(f"bench_install: {line}", file=sys.stderr, flush=True)


def child_env(home: str) -> dict[str, str]:
    """The whole environment of every command: nothing of the caller's leaks in."""
    return {
        "PATH": PATH,
        "HOME": home,
        "XDG_DATA_HOME": os.path.join(home, ".local", "share"),
        "XDG_CONFIG_HOME": os.path.join(home, ".config"),
        "LAYERSHELL_MODE": "rootless",
        "LANG": "C.UTF-8",
        "TERM": "dumb",
    }


def tool(name: str) -> str:
    path = shutil.which(name, path=PATH)
    if path is None:
        raise BenchError(f"{name} not found on {PATH}")
    return path


def run_checked(argv: list[str], env: dict[str, str], what: str) -> str:
    """Run once, untimed; its stdout, or BenchError with the output if it did not exit 0."""
    try:
        done = subprocess.run(
            argv, check=False, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True
        )
    except OSError as exc:
        raise BenchError(f"{what}: cannot run {argv[0]}: {exc.strerror}") from None
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip() or "(no output)"
        shown = " ".join(argv) if len(argv) < 12 else " ".join([*argv[:10], "..."])
        raise BenchError(
            f"{what} exited {done.returncode}, as uid {os.getuid()}:\n  $ {shown}\n"
            + "\n".join(f"  | {line}" for line in output.splitlines()[-30:])
        )
    return done.stdout


# --- the generated package ---------------------------------------------------------------

WORDS = (
    "def", "return", "self", "import", "from", "class", "if", "else", "for", "in", "not",
    "None", "value", "name", "path", "size", "data", "error", "result", "config", "layer",
    "package", "version", "the", "of", "and", "to", "is", "with", "buffer", "index",
    "count", "offset", "length", "struct", "static", "const", "int", "char", "void",
    "#include", "printf", "=", "==", "+", "(", ")", ":", ",", "{", "}", "[", "]", "->",
)  # fmt: skip
DIR_WORDS = ("core", "util", "net", "io", "plugins", "data", "locale", "doc", "tests", "x86")
TOP_DIRS = ("bin", "lib", "share", "include", "libexec", "etc")
EXTENSIONS = {"text": (".py", ".txt", ".json", ".h", ".c", ".md"), "binary": (".so", ".bin"),
              "random": (".gz", ".png", ".zip")}  # fmt: skip


@dataclass(frozen=True)
class Planned:
    path: str
    kind: str  # text | binary | random | script | dir | symlink
    size: int = 0
    target: str = ""


@dataclass(frozen=True)
class PackageInfo:
    path: str
    files: int
    dirs: int
    symlinks: int
    unpacked: int
    archive: int


def text_corpus(rng: random.Random, size: int) -> bytes:
    """Source-code-like text: compresses about 3-4x, like real text files."""
    out: list[str] = []
    length = 0
    while length < size:
        words = rng.choices(WORDS, k=rng.randint(2, 12))
        if rng.random() < 0.5:
            words.append(f"{rng.choice(WORDS[:40])}_{rng.randint(0, 9999)}")
        line = "    " * rng.randint(0, 3) + " ".join(words) + "\n"
        out.append(line)
        length += len(line)
    return "".join(out).encode()[:size]


def plan_package(rng: random.Random, files: int, total: int) -> list[Planned]:
    """Directories, files (log-normal sizes summing to `total`, a few big ones) and links."""
    dirs = list(TOP_DIRS)
    while len(dirs) < max(len(TOP_DIRS), files // 20):
        parent = rng.choice(dirs)
        if parent != "bin" and parent.count("/") < 5:
            dirs.append(f"{parent}/{rng.choice(DIR_WORDS)}{len(dirs)}")
    big = max(1, files // 3000)  # large binaries or data files: about 20% of the bytes
    raw = [rng.lognormvariate(0, 1.6) for _ in range(files - big)]
    scale = total * 0.8 / sum(raw)
    sizes = [int(x * scale) for x in raw]
    sizes += [(total - sum(sizes)) // big] * big
    sizes[-1] += total - sum(sizes)
    rng.shuffle(sizes)
    plan = [Planned(d, "dir") for d in dirs]
    commands = max(1, files // 1000)  # bin/ holds a few commands: each one gets a shim
    regular: list[Planned] = []
    for i, size in enumerate(sizes):
        if i < commands:
            regular.append(Planned(f"bin/cmd{i:02d}", "script", size))
            continue
        weights = (15, 60, 25) if size > 256 * 1024 else (65, 20, 15)
        kind = rng.choices(("text", "binary", "random"), weights)[0]
        where = rng.choice(dirs[1:])  # dirs[0] is bin
        regular.append(Planned(f"{where}/f{i:05d}{rng.choice(EXTENSIONS[kind])}", kind, size))
    plan += regular
    for i in range(files // 100):  # same-directory links, like lib/libx.so -> libx.so.1
        to = rng.choice(regular[commands:])
        head, _, name = to.path.rpartition("/")
        plan.append(Planned(f"{head}/link{i:04d}", "symlink", target=name))
    # Directory order, a directory before what it holds, as GNU tar writes archives.
    plan.sort(key=lambda p: p.path.split("/"))
    return plan


def content(rng: random.Random, corpus: bytes, p: Planned) -> bytes:
    def text(n: int) -> bytes:
        start = rng.randrange(len(corpus))
        doubled = corpus[start:] + corpus[:start]
        return (doubled * (n // len(corpus) + 1))[:n]

    if p.kind == "script":
        return (b"#!/bin/sh\n" + text(p.size))[: p.size]
    if p.kind == "text":
        return text(p.size)
    if p.kind == "random":
        return rng.randbytes(p.size)
    blocks: list[bytes] = []  # binary: random code, zero padding and strings, 4 KiB each
    for offset in range(0, p.size, 4096):
        n = min(4096, p.size - offset)
        r = rng.random()
        blocks.append(rng.randbytes(n) if r < 0.55 else bytes(n) if r < 0.75 else text(n))
    return b"".join(blocks)


def generate_package(path: str, files: int, total: int) -> PackageInfo:
    rng = random.Random(SEED)
    corpus = text_corpus(rng, MiB)
    plan = plan_package(rng, files, total)
    counts = {"dir": 0, "symlink": 0, "file": 0}
    unpacked = 0
    with tarfile.open(path, "w:gz", compresslevel=6, format=tarfile.GNU_FORMAT) as tar:
        for p in plan:
            info = tarfile.TarInfo(p.path)
            info.mtime, info.uname, info.gname = MTIME, "root", "root"
            if p.kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
                counts["dir"] += 1
            elif p.kind == "symlink":
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, p.target, 0o777
                tar.addfile(info)
                counts["symlink"] += 1
            else:
                data = content(rng, corpus, p)
                info.size = len(data)
                info.mode = 0o755 if p.kind == "script" else 0o644
                tar.addfile(info, io.BytesIO(data))
                counts["file"] += 1
                unpacked += len(data)
    return PackageInfo(
        path, counts["file"], counts["dir"], counts["symlink"], unpacked, os.path.getsize(path)
    )


def tiny_package(path: str, name: str) -> str:
    """<name>_1.0.tar.gz holding bin/<name>, a one-line script."""
    data = f'#!/bin/sh\necho "{name} 1.0"\n'.encode()
    with tarfile.open(path, "w:gz") as tar:
        d = tarfile.TarInfo("bin")
        d.type, d.mode, d.mtime = tarfile.DIRTYPE, 0o755, MTIME
        tar.addfile(d)
        f = tarfile.TarInfo(f"bin/{name}")
        f.size, f.mode, f.mtime = len(data), 0o755, MTIME
        tar.addfile(f, io.BytesIO(data))
    return path


def tree_summary(root: str) -> tuple[int, int, int]:
    """(regular files, symbolic links, bytes in files) under root."""
    files = links = total = 0
    for top, dirs, names in os.walk(root):
        for name in names + dirs:
            st = os.lstat(os.path.join(top, name))
            if stat.S_ISLNK(st.st_mode):
                links += 1
            elif stat.S_ISREG(st.st_mode):
                files += 1
                total += st.st_size
    return files, links, total


# --- running and timing ------------------------------------------------------------------


class Runner:
    """Spawns timed calls: stdout on /dev/null, stderr in a log read back on failure."""

    def __init__(self, work: str) -> None:
        self.log = os.path.join(work, "stderr.log")
        self.devnull = os.open(os.devnull, os.O_RDWR)
        self.cpu = 0.0  # user + sys seconds of the last call, its children included

    def close(self) -> None:
        os.close(self.devnull)

    def time(self, argv: list[str], env: dict[str, str], what: str) -> float:
        """Seconds for one call, spawn to reaped; BenchError if it did not exit 0."""
        os.sync()
        log = os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            actions = [
                (os.POSIX_SPAWN_DUP2, self.devnull, 0),
                (os.POSIX_SPAWN_DUP2, self.devnull, 1),
                (os.POSIX_SPAWN_DUP2, log, 2),
            ]
            start = time.perf_counter()
            pid = os.posix_spawn(
                argv[0], argv, env, file_actions=actions,
                setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
            )  # fmt: skip
            _, status, usage = os.wait4(pid, 0)
            elapsed = time.perf_counter() - start
            self.cpu = usage.ru_utime + usage.ru_stime
        finally:
            os.close(log)
        if status != 0:
            with open(self.log, errors="replace") as f:
                tail = f.read().strip().splitlines()[-30:] or ["(no output on stderr)"]
            raise BenchError(
                f"{what} exited {os.waitstatus_to_exitcode(status)}, as uid {os.getuid()}:\n"
                f"  $ {' '.join(argv)}\n" + "\n".join(f"  | {line}" for line in tail)
            )
        return elapsed


@dataclass(frozen=True)
class Result:
    label: str
    baseline: str
    ours: list[float]  # seconds
    base: list[float]
    unit: str  # how to show them: "s" or "ms"
    ours_cpu: tuple[float, ...] = ()  # user + sys seconds, where measured
    base_cpu: tuple[float, ...] = ()
    # The ratio as the median of each interleaved pair's (ours / base): for two sides that
    # do the same work but one step, so that drift between pairs (the filesystem getting
    # slower as HOMEs pile up) cancels out instead of deciding the medians.
    paired: bool = False

    @property
    def ours_median(self) -> float:
        return statistics.median(self.ours)

    @property
    def base_median(self) -> float:
        return statistics.median(self.base)

    @property
    def ratio(self) -> float:
        if self.paired:
            return statistics.median(o / b for o, b in zip(self.ours, self.base, strict=True))
        return self.ours_median / self.base_median

    def show(self, seconds: float) -> str:
        return f"{seconds:.2f} s" if self.unit == "s" else f"{seconds * 1000:.1f} ms"


class Bench:
    def __init__(self, work: str, scale: Scale, python: str, runner: Runner) -> None:
        self.work, self.scale, self.python, self.runner = work, scale, python, runner

    def core(self, *args: str) -> list[str]:
        return [self.python, "-m", "layershell", *args]

    def new_home(self, name: str) -> dict[str, str]:
        """A private HOME with `core --rootless init` done; its environment."""
        home = os.path.join(self.work, name)
        os.mkdir(home, 0o755)
        env = child_env(home)
        run_checked(self.core("--rootless", "init"), env, f"core --rootless init ({name})")
        return env

    def listed(self, env: dict[str, str]) -> list[dict[str, object]]:
        rows = json.loads(run_checked(self.core("list", "--json"), env, "core list --json"))
        if not isinstance(rows, list):
            raise BenchError("core list --json did not print a list")
        return rows

    def interleave(
        self, ours: Callable[[], float], base: Callable[[], float], runs: int, warmup: bool
    ) -> tuple[list[float], list[float]]:
        if warmup:
            ours()
            base()
        times: tuple[list[float], list[float]] = ([], [])
        for _ in range(runs):
            times[0].append(ours())
            times[1].append(base())
        return times

    # row 1

    def row_install(self, pkg: PackageInfo, path: str = "", untar: str = "-xzf") -> Result:
        """Row 1 (the .tar.gz), or with `path` and `untar` ("--zstd -xf") row 1z."""
        sha256sum, tar = tool("sha256sum"), tool("tar")
        path = path or pkg.path
        kind = ".tar.zst" if path.endswith(".zst") else ".tar.gz"
        cpu: tuple[list[float], list[float]] = ([], [])

        def ours() -> float:
            # A fresh HOME each time rather than `core remove`: see "Nothing large is
            # deleted" above. Its `core --rootless init` is not timed.
            env = self.new_home(f"home-install{kind[5:]}-{len(cpu[0]) + 1}")
            took = self.runner.time(self.core("install", path), env, f"core install ({kind})")
            if not cpu[0]:
                self.check_same(env, pkg)
            cpu[0].append(self.runner.cpu)
            return took

        def base() -> float:
            into = tempfile.mkdtemp(dir=self.work, prefix="tar-")
            took = self.runner.time([sha256sum, path], child_env(into), "sha256sum")
            used = self.runner.cpu
            argv = [tar, *untar.split(), path, "-C", into]
            took += self.runner.time(argv, child_env(into), "tar")
            cpu[1].append(used + self.runner.cpu)
            return took

        def sample(times: list[float]) -> tuple[float, ...]:
            return tuple(times[1:])  # without the warm-up

        row = "1" if kind == ".tar.gz" else "1z"
        progress(f"row {row}: {INSTALL_RUNS} installs of {os.path.basename(path)} each way")
        ours_times, base_times = self.interleave(ours, base, INSTALL_RUNS, warmup=True)
        return Result(
            f"{row} install {pkg.unpacked / 1e6:.0f} MB, {pkg.files} files ({kind})",
            f"sha256sum FILE && tar {untar} FILE -C DIR (GNU tar)",
            ours_times,
            base_times,
            "s",
            sample(cpu[0]),
            sample(cpu[1]),
        )

    def check_same(self, env: dict[str, str], pkg: PackageInfo) -> None:
        """Both sides must produce the same tree, or the comparison means nothing."""
        rows = [r for r in self.listed(env) if r.get("name") == "big"]
        if len(rows) != 1:
            raise BenchError(f"core list --json shows {len(rows)} rows for big, not 1")
        got = tree_summary(str(rows[0]["path"]))
        want = (pkg.files, pkg.symlinks, pkg.unpacked)
        if got != want:
            raise BenchError(f"core install unpacked (files, links, bytes) {got}, not {want}")

    # row 1s

    def row_signed(self, pkg: PackageInfo) -> Result:
        """The same package from a file:// repository signed by a key the layer trusts,
        against that repository with `verify: checksum` (no signature checked)."""
        gnupg = os.path.join(self.work, "gnupg")
        os.mkdir(gnupg, 0o700)
        gpg_env = {**child_env(self.work), "GNUPGHOME": gnupg}
        label = "layershell bench <bench@layershell.invalid>"
        run_checked(
            [
                tool("gpg"),
                "--batch",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
                "--quick-gen-key",
                label,
                "ed25519",
                "sign",
                "1d",
            ],
            gpg_env,
            "gpg key",
        )
        public = run_checked(
            [tool("gpg"), "--armor", "--export", "bench@layershell.invalid"],
            gpg_env,
            "gpg --export",
        )
        arch_dir = os.path.join(self.work, "repo", os.uname().machine)
        os.makedirs(arch_dir, 0o755)
        os.link(pkg.path, os.path.join(arch_dir, os.path.basename(pkg.path)))
        run_checked(
            self.core("repo", "index", arch_dir, "--sign", "bench@layershell.invalid"),
            gpg_env,
            "core repo index --sign",
        )
        subprocess.run([tool("gpgconf"), "--kill", "all"], env=gpg_env, check=False)
        url = "file://" + os.path.dirname(arch_dir)
        manifests = {}
        for kind, extra in (
            ("signed", ""),
            ("checksum", f"  repositories:\n    - url: {url}\n      verify: checksum\n"),
        ):
            path = os.path.join(self.work, f"{kind}.yaml")
            with open(path, "w", encoding="utf-8") as f:
                f.write(
                    f"composable:\n  default_repository: {url}\n{extra}  packages:\n"
                    "    - name: big\n      version: '1.0'\n"
                )
            manifests[kind] = path
        made = [0]

        def once(kind: str) -> float:
            made[0] += 1
            env = self.new_home(f"home-{kind}-{made[0]}")
            keys = os.path.join(env["XDG_CONFIG_HOME"], "layershell", "keys")
            os.makedirs(keys, exist_ok=True)
            with open(os.path.join(keys, "bench.asc"), "w", encoding="utf-8") as f:
                f.write(public)
            argv = self.core("install", "--config", manifests[kind])
            return self.runner.time(argv, env, f"core install ({kind} repository)")

        progress(f"row 1s: {SIGNED_RUNS} installs from a signed and a checksum-only repository")
        ours, base = self.interleave(
            lambda: once("signed"), lambda: once("checksum"), SIGNED_RUNS, warmup=True
        )
        return Result(
            "1s install from a signed file:// repository",
            "the same repository with verify: checksum (no signature checked)",
            ours,
            base,
            "s",
            paired=True,
        )

    # rows 2 and 3

    def fill(self, env: dict[str, str], tarballs: list[str], expect: int | None = None) -> None:
        for start in range(0, len(tarballs), BATCH):
            chunk = tarballs[start : start + BATCH]
            progress(f"installing packages {start + 1}-{start + len(chunk)} (one core install)")
            run_checked(self.core("install", *chunk), env, "core install (filling the layer)")
        count, want = len(self.listed(env)), expect or len(tarballs)
        if count != want:
            raise BenchError(f"core list --json shows {count} packages, not {want}")

    def row_list(self, env: dict[str, str]) -> Result:
        progress(f"row 2: core list --json and python -c pass, {LIST_RUNS} times each")
        ours, base = self.interleave(
            lambda: self.runner.time(self.core("list", "--json"), env, "core list --json"),
            lambda: self.runner.time([self.python, "-c", "pass"], env, "python -c pass"),
            LIST_RUNS,
            warmup=True,
        )
        return Result(
            f"2 core list --json, {self.scale.packages} packages",
            "python -c pass (interpreter start-up)",
            ours,
            base,
            "ms",
        )

    def list_after_change(self, env: dict[str, str]) -> float:
        """One `core list --json` right after its record changed (a touch of state.db):
        the listing kept from the call before cannot be used."""
        os.utime(os.path.join(env["XDG_DATA_HOME"], "layershell", "layers", "arne", "state.db"))
        time.sleep(0.1)  # past the racy window, as a change seconds ago would be
        return self.runner.time(self.core("list", "--json"), env, "core list --json")

    def row_list_changed(self, env: dict[str, str]) -> Result:
        """Row 2u: the same listing, each time right after its record changed (a touch of
        state.db), so that the listing kept from the call before cannot be used."""
        progress(f"row 2u: core list --json after a change, {LIST_RUNS} times")
        ours, base = self.interleave(
            lambda: self.list_after_change(env),
            lambda: self.runner.time([self.python, "-c", "pass"], env, "python -c pass"),
            LIST_RUNS,
            warmup=True,
        )
        return Result(
            f"2u core list --json, {self.scale.packages} packages, after a change",
            "python -c pass (interpreter start-up)",
            ours,
            base,
            "ms",
        )

    def row_table(self, env: dict[str, str]) -> Result:
        progress(f"row 2t: core list (the table, piped) and python -c pass, {LIST_RUNS} times")
        ours, base = self.interleave(
            lambda: self.runner.time(self.core("list"), env, "core list"),
            lambda: self.runner.time([self.python, "-c", "pass"], env, "python -c pass"),
            LIST_RUNS,
            warmup=True,
        )
        return Result(
            f"2t core list (table), {self.scale.packages} packages",
            "python -c pass (interpreter start-up)",
            ours,
            base,
            "ms",
        )

    def row_many_list(self, env: dict[str, str], at_first: Result) -> Result:
        progress(f"row 4: core list --json with {self.scale.many} packages, {LIST_RUNS} times")
        ours, _ = self.interleave(
            lambda: self.list_after_change(env),
            lambda: 0.0,
            LIST_RUNS,
            warmup=True,
        )
        return Result(
            f"4 core list --json, {self.scale.many} packages, after a change",
            f"row 2u: the same with {self.scale.packages} (ratio: per call, not per row)",
            ours,
            at_first.ours,
            "ms",
        )

    def row_growth(self, full: dict[str, str], probe: str, empty: dict[str, str],
                   count: int) -> Result:  # fmt: skip

        def once(env: dict[str, str]) -> float:
            took = self.runner.time(self.core("install", probe), env, "core install (probe)")
            run_checked(self.core("remove", "probe"), env, "core remove probe")
            return took

        progress(f"install #{count + 1}: {PROBE_RUNS} installs of one small package each way")
        ours, base = self.interleave(lambda: once(full), lambda: once(empty), PROBE_RUNS, True)
        return Result(
            f"{'3' if count == self.scale.packages else '5'} core install #{count + 1} (small)",
            "install #1: the same into an empty layer",
            ours,
            base,
            "ms",
        )

    def run(self) -> list[Result]:
        s = self.scale
        progress(f"generating a {s.big_bytes // MiB} MiB / {s.big_files}-file package")
        start = time.perf_counter()
        pkg = generate_package(os.path.join(self.work, "big_1.0.tar.gz"), s.big_files, s.big_bytes)
        progress(f"  done in {time.perf_counter() - start:.1f} s: {pkg.archive / 1e6:.1f} MB")
        packages = os.path.join(self.work, "packages")
        os.mkdir(packages, 0o755)
        tarballs = [
            tiny_package(os.path.join(packages, f"pkg{i:05d}_1.0.tar.gz"), f"pkg{i:05d}")
            for i in range(1, s.many + 1)
        ]
        probe = tiny_package(os.path.join(packages, "probe_1.0.tar.gz"), "probe")
        print(describe(pkg, self.python), flush=True)
        zst = zstd_copy(pkg.path)
        results = [self.row_install(pkg), self.row_install(pkg, zst, "--zstd -xf")]
        results.append(self.row_signed(pkg))
        full = self.new_home("home-full")
        empty = self.new_home("home-empty")
        self.fill(full, tarballs[: s.packages])
        results.append(self.row_list(full))
        results.append(self.row_table(full))
        changed = self.row_list_changed(full)
        results.append(self.row_growth(full, probe, empty, s.packages))
        # The cost curve: the same layer ten times fuller (rows 4 and 5).
        self.fill(full, tarballs[s.packages :], expect=s.many)
        results.append(self.row_many_list(full, changed))
        results.append(self.row_growth(full, probe, empty, s.many))
        results.append(changed)  # last: the rows before keep their places
        return results


def zstd_copy(gz: str) -> str:
    """The same tar stream as `gz`, zstd-compressed (level 3, the zstd default), beside it."""
    import gzip

    import zstandard

    out = gz[: -len(".tar.gz")] + ".tar.zst"
    cctx = zstandard.ZstdCompressor(level=3)
    with (
        gzip.open(gz, "rb") as src,
        open(out, "wb") as dst,
        cctx.stream_writer(dst, closefd=False) as into,
    ):
        shutil.copyfileobj(src, into)
    os.chmod(out, 0o644)
    return out


def journal_less_ext4(path: str) -> bool:
    """Whether path is on ext4 without a journal (see the module docstring)."""
    dev = os.stat(path).st_dev
    try:
        name = os.path.basename(os.readlink(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}"))
    except OSError:
        return False
    journals = os.listdir("/proc/fs/jbd2") if os.path.isdir("/proc/fs/jbd2") else []
    on_ext4 = os.path.isdir(f"/proc/fs/ext4/{name}")
    return on_ext4 and not any(j.rpartition("-")[0] == name for j in journals)


def describe(pkg: PackageInfo, python: str) -> str:
    where = os.path.dirname(pkg.path)
    st = os.statvfs(where)
    free = st.f_bavail * st.f_frsize / 1e9
    note = ""
    if journal_less_ext4(where):
        note = ("\nnote: ext4 without a journal: file creation is slow for minutes after "
                "many deletions there (see the docstring)")  # fmt: skip
    return (
        f"uid {os.getuid()}, {os.cpu_count()} CPUs, {python} -m layershell, work in "
        f"{where} ({free:.0f} GB free){note}\n"
        f"package: {pkg.files} files, {pkg.dirs} directories, {pkg.symlinks} symbolic links, "
        f"{pkg.unpacked / 1e6:.1f} MB unpacked, {pkg.archive / 1e6:.1f} MB .tar.gz "
        f"({pkg.unpacked / pkg.archive:.1f}x)"
    )


def print_table(results: list[Result]) -> None:
    print()
    width = max(len(r.label) for r in results)
    print(f"{'row':<{width}}  {'layershell':>11}  {'baseline':>11}  {'ratio':>6}")
    for r in results:
        ours, base = r.show(r.ours_median), r.show(r.base_median)
        print(f"{r.label:<{width}}  {ours:>11}  {base:>11}  {r.ratio:5.2f}x")
        print(f"    baseline: {r.baseline}")
    print("\nmedians shown; every sample, in run order:")
    for r in results:
        ours = ", ".join(r.show(t) for t in r.ours)
        base = ", ".join(r.show(t) for t in r.base)
        print(f"  {r.label.split(' ', 1)[0]}  layershell: {ours}\n     baseline:   {base}")
        if r.ours_cpu and r.base_cpu:
            ours = ", ".join(r.show(t) for t in r.ours_cpu)
            base = ", ".join(r.show(t) for t in r.base_cpu)
            ratio = statistics.median(r.ours_cpu) / statistics.median(r.base_cpu)
            print(f"     CPU (user + sys): layershell {ours}; baseline {base}; "
                  f"ratio of medians {ratio:.2f}x")  # fmt: skip
    install, install_zst, signed, listing, table, growth, many, growth_many, changed = results
    print()
    verdict(
        f"install <= {GOAL_INSTALL_RATIO:g}x sha256sum + tar",
        install.ratio <= GOAL_INSTALL_RATIO,
        f"{install.ratio:.2f}x: {install.show(install.ours_median)} vs "
        f"{install.show(install.base_median)}",
    )
    verdict(
        f"install of the .tar.zst <= {GOAL_INSTALL_RATIO:g}x sha256sum + tar --zstd",
        install_zst.ratio <= GOAL_INSTALL_RATIO,
        f"{install_zst.ratio:.2f}x: {install_zst.show(install_zst.ours_median)} vs "
        f"{install_zst.show(install_zst.base_median)}",
    )
    verdict(
        "the .tar.zst installs faster than the .tar.gz",
        install_zst.ours_median < install.ours_median,
        f"{install_zst.show(install_zst.ours_median)} vs {install.show(install.ours_median)}",
    )
    verdict(
        f"verification adds <= {GOAL_SIGNED_RATIO - 1:.0%} to an install from a repository",
        signed.ratio <= GOAL_SIGNED_RATIO,
        f"{signed.ratio:.2f}x, the median of the {len(signed.ours)} pairs' ratios; medians"
        f" {signed.show(signed.ours_median)} signed vs {signed.show(signed.base_median)}"
        " checksum only",
    )
    verdict(
        f"core list --json <= {GOAL_LIST_MS:g} ms",
        listing.ours_median * 1000 <= GOAL_LIST_MS,
        f"{listing.show(listing.ours_median)}; python start-up alone "
        f"{listing.show(listing.base_median)}",
    )
    print(
        f"not a goal: core list --json right after a change (no kept listing) "
        f"{changed.show(changed.ours_median)} with {changed.label.split(', ')[1]}"
    )
    verdict(
        f"core list (table) <= {GOAL_TABLE_MS:g} ms",
        table.ours_median * 1000 <= GOAL_TABLE_MS,
        f"{table.show(table.ours_median)}; python start-up alone {table.show(table.base_median)}",
    )
    for row in (growth, growth_many):
        verdict(
            f"install #{row.label.split('#')[1].split()[0]} <= {GOAL_GROWTH_RATIO:g}x install #1",
            row.ratio <= GOAL_GROWTH_RATIO,
            f"{row.ratio:.2f}x: {row.show(row.ours_median)} vs {row.show(row.base_median)}",
        )
    print(
        f"the cost curve: core list --json after a change {many.show(many.ours_median)} with"
        f" {many.label.split(', ')[1]} against {many.show(many.base_median)} with "
        f"{changed.label.split(', ')[1]} ({many.ratio:.1f}x for 10x the rows it prints)"
    )


def verdict(goal: str, met: bool, numbers: str) -> None:
    print(f"goal: {goal}: {'met' if met else 'NOT met'} ({numbers})")


def bench(work: str, scale: Scale, python: str) -> None:
    if os.geteuid() == 0:
        raise BenchError("the measuring process must not be root (rootless mode refuses it)")
    os.chdir(work)
    runner = Runner(work)
    try:
        print_table(Bench(work, scale, python, runner).run())
    finally:
        runner.close()


def check_traversable(path: str) -> None:
    """uid 65534 must be able to reach the temporary directory."""
    parent = os.path.dirname(path)
    while True:
        if not os.stat(parent).st_mode & stat.S_IXOTH:
            raise BenchError(
                f"{parent} is not searchable by others, so uid {NOBODY} cannot reach {path}",
                "pass --tmpdir /var/tmp",
            )
        if parent == os.path.dirname(parent):
            return
        parent = os.path.dirname(parent)


def rerun_as_nobody(script: str, args: list[str], tmpdir: str, prefix: str) -> int:
    """As root: `script ARGS --work DIR` again, as uid/gid 65534 by setpriv, in a fresh
    directory DIR under tmpdir (removed afterwards); its exit status."""
    try:
        pwd.getpwuid(NOBODY)
    except KeyError:
        raise BenchError(
            f"uid {NOBODY} has no passwd entry; layershell looks its caller up there"
        ) from None
    setpriv = tool("setpriv")
    work = tempfile.mkdtemp(prefix=prefix, dir=tmpdir)
    try:
        check_traversable(work)
        os.chmod(work, 0o755)
        os.chown(work, NOBODY, NOBODY)
        worker = [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                  sys.executable, script, *args, "--work", work]  # fmt: skip
        return subprocess.run(worker, check=False, env=child_env(work), cwd=work).returncode
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_as_nobody(tmpdir: str, quick: bool, python: str) -> int:
    args = ["--python", python, *(["--quick"] if quick else [])]
    return rerun_as_nobody(os.path.abspath(__file__), args, tmpdir, "bench-install-")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="10 MB / 1,000 files, 100 pkgs")
    parser.add_argument("--python", default=sys.executable, help="runs -m layershell")
    parser.add_argument("--tmpdir", default="/var/tmp", help="where to generate and unpack")
    parser.add_argument("--work", help=argparse.SUPPRESS)  # set when run as uid 65534
    args = parser.parse_args(argv)
    scale = QUICK if args.quick else FULL
    python = os.path.abspath(args.python)
    try:
        if not os.access(python, os.X_OK):
            raise BenchError(f"{python} is not executable", "pass --python PATH")
        if args.work:
            bench(args.work, scale, python)
        elif os.geteuid() == 0:
            return run_as_nobody(args.tmpdir, args.quick, python)
        else:
            with tempfile.TemporaryDirectory(prefix="bench-install-", dir=args.tmpdir) as work:
                bench(work, scale, python)
    except BenchError as exc:
        return exc.report("bench_install")
    return 0


if __name__ == "__main__":
    sys.exit(main())
