"""How long does a first boot take to bring up 10 packages from the inbox, next to a shell
script doing the same work by hand with the real tools?

In the systemd testbed (tests/testbed.py: Debian bookworm booted in systemd-nspawn, with
systemd-portabled; docs/testbed.md), each round, with fresh package names:

  layershell  10 tarballs in /opt/inbox/<profile>/arne/: 5 with a program in bin/ and 5
              portable service images, under the profiles default, nonetwork, strict,
              trusted and default; the host manifest names them (enable and start for
              each service). Then `core firstboot --force`, what layershell-firstboot.service
              runs, timed until it returns: every tarball installed as arne, its programs
              exposed as shims, every image attached with its profile and its service
              started (firstboot checks that they stay active). Checked afterwards: all
              listed, every shim on PATH, every service active.
  by hand     the same work for 10 other tarballs as a shell script would do it: `tar -xzf`
              into /opt/by-hand/NAME_VERSION (next to /opt/pkgs, whose trees layershell
              owns and clears of strangers), `ln -s` of each program into /usr/local/bin,
              `portablectl attach --enable --now --profile P` per service. No sandbox,
              no verification, nothing recorded: the least the result takes.

Before the first round the accounts and the inbox directories exist (`core init
--create-users`, untimed), as Ignition leaves them; `core firstboot` runs init again
(already in place) and the rest. layershell-inbox.path is stopped before each drop (init
starts it again) so that nothing but the timed command picks the tarballs up. The rounds
alternate which side goes first.

Goal (issue 16): layershell <= 1.5x by hand (medians). Prints each round, the medians and
the per-package median (a round's time / 10). Never fails because of a timing; exits 1
when something cannot be measured (the output says why). Root only (it boots a container).

    /opt/layershell/venv/bin/python bench/bench_boot.py [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, CHECKOUT)

from tests import testbed  # noqa: E402  (the checkout's test helpers: the testbed itself)
from tests.packages import program, tarball  # noqa: E402

Testbed = testbed.Testbed
GOAL = 1.5
PROFILES = ("default", "nonetwork", "strict", "trusted", "default")
INBOX = "/opt/inbox/{profile}/arne"
WORK = "/var/tmp/bench-boot"  # in the container


class BenchError(Exception):
    pass


def check(result: subprocess.CompletedProcess[str], what: str) -> str:
    """stdout of a command that succeeded, else BenchError naming `what`."""
    if result.returncode != 0:
        raise BenchError(f"{what} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return result.stdout


class Round:
    """One round's 10 packages for one side: names, tarballs in WORK, profiles."""

    def __init__(self, side: str, number: int) -> None:
        tag = f"{side}{number}"
        self.programs = [f"bp{tag}p{i}" for i in range(5)]
        self.services = [(f"bp{tag}s{i}", PROFILES[i]) for i in range(5)]

    def all_names(self) -> list[str]:
        return [*self.programs, *(n for n, _ in self.services)]


def make_tarballs(tb: Testbed, r: Round) -> None:
    """The round's tarballs in WORK (the images built inside the container, from its own
    binaries, by tests/data/mk-portable-package.sh)."""
    host_work = tb.host_path(WORK)
    host_work.mkdir(parents=True, exist_ok=True)
    for name in r.programs:
        tarball(host_work / f"{name}_1.0.tar.gz", program(name, "1.0"))
    for name, _ in r.services:
        tree = f"{WORK}/{name}-tree"
        built = tb.exec("sh", f"{WORK}/mk-portable-package.sh", tree, name, "1.0")
        check(built, f"mk-portable-package.sh for {name}")
        out = f"{WORK}/{name}_1.0.tar.gz"
        check(tb.exec("tar", "-C", tree, "-czf", out, "."), f"tar of {name}")


def manifest_text(rounds: list[Round]) -> str:
    lines = ["composable:", "  default_repository: file:///var/empty", "  packages:"]
    for r in rounds:
        for name in r.programs:
            lines += [f"    - name: {name}", "      version: '1.0'", "      profile: default"]
        for name, profile in r.services:
            lines += [
                f"    - name: {name}", "      version: '1.0'", f"      profile: {profile}",
                f"      enable: [{name}.service]", f"      start: [{name}.service]",
            ]  # fmt: skip
    return "\n".join(lines) + "\n"


def layershell_round(tb: Testbed, r: Round, named: list[Round]) -> float:
    check(tb.exec("systemctl", "stop", "layershell-inbox.path"), "stopping the inbox path")
    tb.write("/etc/layershell/composable.yaml", manifest_text(named))
    for name in r.programs:
        drop(tb, name, "default")
    for name, profile in r.services:
        drop(tb, name, profile)
    start = time.perf_counter()
    result = tb.exec("core", "firstboot", "--force", timeout=600)
    took = time.perf_counter() - start
    check(result, "core firstboot")
    listed = json.loads(check(tb.exec("core", "list", "--json"), "core list --json"))
    have = {x["name"] for x in listed if x["active"]}
    missing = [n for n in r.all_names() if n not in have]
    if missing:
        said = result.stdout + result.stderr
        raise BenchError(f"core firstboot left out {missing}:\n{said}")
    verify(tb, r)
    return took


def drop(tb: Testbed, name: str, profile: str) -> None:
    """Into the inbox as an admin (or Ignition) does: written aside, then renamed."""
    inbox = INBOX.format(profile=profile)
    check(tb.exec("mkdir", "-p", inbox), "mkdir inbox")
    aside, there = f"{inbox}/.{name}_1.0.tar.gz", f"{inbox}/{name}_1.0.tar.gz"
    check(tb.exec("cp", f"{WORK}/{name}_1.0.tar.gz", aside), "cp into the inbox")
    check(tb.exec("mv", aside, there), "mv into the inbox")


def by_hand_script(r: Round) -> str:
    lines = ["set -eu"]
    for name in r.programs:
        d = f"/opt/by-hand/{name}_1.0"
        lines += [f"mkdir -p {d}", f"tar -xzf {WORK}/{name}_1.0.tar.gz -C {d}",
                  f"ln -s {d}/bin/{name} /usr/local/bin/{name}"]  # fmt: skip
    for name, profile in r.services:
        d = f"/opt/by-hand/{name}_1.0"
        attach = f"portablectl attach --enable --now --profile {profile} {d} >/dev/null"
        lines += [f"mkdir -p {d}", f"tar -xzf {WORK}/{name}_1.0.tar.gz -C {d}", attach]
    return "\n".join(lines) + "\n"


def by_hand_round(tb: Testbed, r: Round) -> float:
    tb.write(f"{WORK}/by-hand.sh", by_hand_script(r))
    start = time.perf_counter()
    result = tb.exec("sh", f"{WORK}/by-hand.sh", timeout=600)
    took = time.perf_counter() - start
    check(result, "the by-hand script")
    verify(tb, r)
    return took


def verify(tb: Testbed, r: Round) -> None:
    """Every program on PATH answers, every service is active."""
    for name in r.programs:
        out = check(tb.exec("runuser", "-u", "otto", "--", f"/usr/local/bin/{name}"), name)
        if out.strip() != f"{name} 1.0":
            raise BenchError(f"{name} answered {out!r}")
    for name, _ in r.services:
        state = tb.exec("systemctl", "is-active", f"{name}.service").stdout.strip()
        if state != "active":
            raise BenchError(f"{name}.service is {state}, not active")


def bench(rounds: int) -> None:
    problem = testbed.missing_prerequisites()
    if problem:
        raise BenchError(f"the testbed cannot start here: {problem}")
    tb = testbed.Testbed()
    tb.start()
    try:
        testbed.install_layershell(tb)
        check(tb.exec("core", "init", "--create-users"), "core init --create-users")
        script = Path(CHECKOUT) / "tests/data/mk-portable-package.sh"
        tb.host_path(WORK).mkdir(parents=True, exist_ok=True)
        tb.copy_in(script, f"{WORK}/mk-portable-package.sh")
        ours: list[float] = []
        hand: list[float] = []
        named: list[Round] = []
        for n in range(1, rounds + 1):
            mine, theirs = Round("l", n), Round("h", n)
            make_tarballs(tb, mine)
            make_tarballs(tb, theirs)
            named.append(mine)
            order = ("ours", "hand") if n % 2 else ("hand", "ours")
            for side in order:
                if side == "ours":
                    ours.append(layershell_round(tb, mine, named))
                else:
                    hand.append(by_hand_round(tb, theirs))
            print(f"round {n}: layershell {ours[-1]:.2f} s, by hand {hand[-1]:.2f} s",
                  flush=True)  # fmt: skip
    finally:
        tb.stop()
    a, b = statistics.median(ours), statistics.median(hand)
    print()
    print(f"{'first boot, 10 packages':<44}  {'median':>8}  {'per package':>11}")
    print(f"{'layershell: core firstboot from the inbox':<44}  {a:7.2f}s  {a / 10 * 1000:9.0f}ms")
    print(f"{'by hand: tar -x, ln -s, portablectl attach':<44}  {b:7.2f}s  {b / 10 * 1000:9.0f}ms")
    ratio = a / b
    verdict = "met" if ratio <= GOAL else "NOT met"
    print(f"goal: first boot <= {GOAL:g}x the by-hand script (medians): {verdict} "
          f"({ratio:.2f}x: {a:.2f} s vs {b:.2f} s over {rounds} rounds)")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_boot: needs root: it boots the systemd testbed", file=sys.stderr)
        return 1
    try:
        bench(max(1, args.rounds))
    except BenchError as exc:
        print(f"bench_boot: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
