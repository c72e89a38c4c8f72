"""The two executables layershell is built with, and the handshake `core init` does.

hatch_build.py compiles layershell-enter (enter.c) and the layer-shell launcher
(launcher.c) when layershell is built, into layershell/_bin/ with build.json, the
record of each one's build id. `core init` compiles nothing: it copies them from here.

- The executor is checked before it is installed: `_bin/layershell-enter --version`
  must print the build id the record names (the handshake: a binary from another build,
  or one this host cannot run, is refused), and again once installed where layers run it.
- The launcher is generic; core init writes the interpreter and the code it runs into
  the slot its data segment keeps for them (launcher.c), in its own copy of the bytes.
"""

from __future__ import annotations

import json
import os
import subprocess

from layershell.errors import LayershellError

EXECUTOR = "layershell-enter"
LAUNCHER = "layer-shell"
# Keep in step with launcher.c.
SLOT_MAGIC = b"layershell-launcher-slot:"
SLOT_SIZE = 8192
BUILD_PREFIX = b"layershell-enter build "  # enter.c's build_id string

REINSTALL = (
    "reinstall layershell from a wheel built for this host (pip install --force-reinstall "
    "layershell), or build it: building needs a C compiler, core init does not"
)


def bin_dir() -> str:
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "_bin")


class Built:
    """One executable as the package carries it: its bytes and its recorded build id."""

    __slots__ = ("build", "data", "path")

    def __init__(self, path: str, data: bytes, build: str) -> None:
        self.path = path
        self.data = data
        self.build = build


def record(directory: str | None = None) -> dict[str, dict[str, object]]:
    """build.json: what hatch_build.py built, or an error saying layershell was not built."""
    path = os.path.join(directory or bin_dir(), "build.json")
    try:
        with open(path, encoding="utf-8") as f:
            found = json.load(f)
    except FileNotFoundError:
        raise LayershellError(
            f"this layershell was not built with its executables: {path} is missing "
            "(a source checkout on sys.path, or an editable install)",
            REINSTALL,
        ) from None
    except (OSError, ValueError) as exc:
        raise LayershellError(f"cannot read {path}: {exc}", REINSTALL) from None
    if not isinstance(found, dict):
        raise LayershellError(f"{path} is not a build record", REINSTALL)
    return found


def _load(name: str, directory: str | None) -> Built:
    entry = record(directory).get(name)
    build = entry.get("build") if isinstance(entry, dict) else None
    path = os.path.join(directory or bin_dir(), name)
    if not isinstance(build, str):
        raise LayershellError(f"the build record names no {name}", REINSTALL)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise LayershellError(f"cannot read {path}: {exc.strerror}", REINSTALL) from None
    return Built(path, data, build)


def build_of(data: bytes) -> str | None:
    """The build id an executor's bytes carry, read without running it; None if none
    (one compiled by a core init from before the handshake, or not ours at all)."""
    at = data.find(BUILD_PREFIX)
    if at < 0:
        return None
    end = data.find(b"\0", at)
    return data[at + len(BUILD_PREFIX) : end].decode("ascii", errors="replace")


def handshake(path: str, expected: str) -> None:
    """Run `path --version`; refuse unless it answers with build `expected`."""
    try:
        done = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except OSError as exc:
        raise LayershellError(
            f"{path} does not run on this host: {exc.strerror}", REINSTALL
        ) from None
    answer = done.stdout.strip()
    if done.returncode != 0 or answer != (BUILD_PREFIX.decode() + expected):
        said = answer or done.stderr.strip() or f"exit status {done.returncode}"
        raise LayershellError(
            f"{path} is not the executor this layershell was built with: it answers "
            f"{said!r} to --version, this layershell expects build {expected}",
            REINSTALL,
        )


def executor(directory: str | None = None) -> Built:
    """The executor from the package, after its handshake."""
    built = _load(EXECUTOR, directory)
    handshake(built.path, built.build)
    return built


def launcher(python: str, code: str, fast: str = "", directory: str | None = None) -> bytes:
    """The launcher's bytes with `python`, `code` and the fast path's compiled file
    (layers/fast.py; "" for none: every call starts Python) written into its slot."""
    built = _load(LAUNCHER, directory)
    payload = b"".join(os.fsencode(x) + b"\0" for x in (python, code, fast))
    at = built.data.find(SLOT_MAGIC)
    start = at + len(SLOT_MAGIC)
    room = SLOT_SIZE - len(SLOT_MAGIC)
    empty = at >= 0 and built.data[start : start + room] == b"\0" * room
    if not empty or built.data.find(SLOT_MAGIC, start) >= 0:
        raise LayershellError(f"{built.path} has no empty launcher slot", REINSTALL)
    if len(payload) > room:
        raise LayershellError(
            f"the launcher's slot holds {room} bytes; {python}, layershell's path and {fast} "
            f"need {len(payload)}",
            "install layershell under a shorter path",
        )
    return built.data[:start] + payload + built.data[start + len(payload) :]


def with_slot(data: bytes, *, python: str | None = None, fast: str | None = None) -> bytes:
    """A set-up launcher's bytes with fields of its slot replaced (tests, bench/: a copy
    that always takes the Python path, or one with no Python behind its fast path)."""
    start = data.index(SLOT_MAGIC) + len(SLOT_MAGIC)
    room = SLOT_SIZE - len(SLOT_MAGIC)
    fields = data[start : start + room].split(b"\0")[:3]
    if python is not None:
        fields[0] = os.fsencode(python)
    if fast is not None:
        fields[2] = os.fsencode(fast)
    payload = b"".join(x + b"\0" for x in fields)
    return data[:start] + payload.ljust(room, b"\0") + data[start + room :]
