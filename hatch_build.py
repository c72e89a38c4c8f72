"""Build layershell's two executables into the wheel: layershell-enter (layershell/layers/enter.c)
and the layer-shell launcher (layershell/layers/launcher.c).

They are compiled here, when layershell is built, and never by `core init`: the hosts
layershell is for (Fedora CoreOS) have no compiler. Building the wheel from the sdist
therefore needs a C compiler, as any C extension does; the wheel is tagged for this
platform (py3-none-linux_<arch>), since it carries machine code.

Both are hardened and linked statically as position-independent executables
(-static-pie): no dependency on the host's C library or loader, ASLR kept, full RELRO.
A toolchain without a static libc (Fedora's glibc-static not installed) falls back to a
PIE linked against the C library only. docs/design.md ("The executables") has the
sizes and the reasons.

Each build gets an id, a hash of its source, the compiler's version and the flags,
baked into the binary and recorded in layershell/_bin/build.json; `core init` checks
the executor it installs against that record (layershell/host/binaries.py).

The manual pages core(1) and layer-shell(1) are written here too, from the click
definitions (layershell/cli/manual.py), and go into the wheel's data as
share/man/man1/: pip installs them beside the venv's bin/, where man-db looks.
Importing the commands imports layershell's dependencies, so they are build
requirements as well (pyproject.toml).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

MARKER = "# Managed by layershell"  # names.MARKER (the build runs without the package)
HARDENING = [
    "-O2", "-Wall", "-Werror=format-security",
    "-fstack-protector-strong", "-fstack-clash-protection", "-fcf-protection",
    "-D_FORTIFY_SOURCE=2", "-fPIE",
    "-Wl,-z,relro", "-Wl,-z,now", "-Wl,-z,noexecstack",
]  # fmt: skip
LINKAGES = {"static-pie": ["-static-pie"], "pie": ["-pie"]}
PROGRAMS = {"layershell-enter": "enter.c", "layer-shell": "launcher.c"}
MANUAL = ("core.1", "layer-shell.1")  # what layershell/cli/manual.py writes
MAN_DIR = "share/man/man1"  # in the wheel's .data/data/: <prefix>/share/man/man1


class BuildError(Exception):
    pass


def c_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def compiler() -> list[str]:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise BuildError(
            "building layershell needs a C compiler for layershell-enter and the "
            "layer-shell launcher: install gcc and libc6-dev (Debian) or gcc and "
            "glibc-static (Fedora), or install a layershell wheel built for this platform"
        )
    return cc.split()


def compiler_version(cc: list[str]) -> str:
    done = subprocess.run([*cc, "--version"], capture_output=True, text=True, check=False)
    return done.stdout.splitlines()[0] if done.returncode == 0 and done.stdout else cc[0]


def build_one(cc: list[str], source: str, out: str, linkage: str, version: str) -> str:
    """Compile `source` to `out`; its build id."""
    flags = [*HARDENING, *LINKAGES[linkage]]
    with open(source, "rb") as f:
        digest = hashlib.sha256(f.read())
    digest.update("\0".join([version, *flags]).encode())
    build_id = digest.hexdigest()[:16]
    defines = [f"-DMARKER={c_string(MARKER)}", f"-DLAYERSHELL_BUILD_ID={c_string(build_id)}"]
    done = subprocess.run(
        [*cc, *flags, *defines, "-o", out, source], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise BuildError(f"{' '.join(cc)} {source} ({linkage}) failed:\n{done.stderr.strip()}")
    return build_id


def build_all(package_dir: str, out_dir: str) -> dict[str, Any]:
    """Both programs into out_dir, static-pie if this toolchain links it, and the record."""
    cc = compiler()
    version = compiler_version(cc)
    record: dict[str, Any] = {}
    for name, source in PROGRAMS.items():
        path = os.path.join(package_dir, source)
        out = os.path.join(out_dir, name)
        try:
            linkage = "static-pie"
            build_id = build_one(cc, path, out, linkage, version)
        except BuildError as exc:
            print(f"layershell: {exc}\nlayershell: linking {name} as a PIE against the C "
                  "library instead", file=sys.stderr)  # fmt: skip
            linkage = "pie"
            build_id = build_one(cc, path, out, linkage, version)
        record[name] = {
            "build": build_id,
            "source": f"layershell/{source}",
            "linkage": linkage,
            "compiler": version,
            "flags": [*HARDENING, *LINKAGES[linkage]],
            "size": os.path.getsize(out),
        }
    with open(os.path.join(out_dir, "build.json"), "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2, sort_keys=True)
        f.write("\n")
    return record


def write_manual(root: str, out_dir: str) -> None:
    """The manual pages, written by a child python: it imports the checkout's layershell
    (not one installed where the build runs), with -B so the source tree gets no
    bytecode, and this process keeps none of it."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); "
        "from layershell.cli import manual; sys.exit(manual.main(sys.argv[2:]))"
    )
    argv = [sys.executable, "-B", "-c", code, root, out_dir]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=root)
    missing = [name for name in MANUAL if not os.path.isfile(os.path.join(out_dir, name))]
    if done.returncode != 0 or missing:
        raise BuildError(
            "writing the manual pages (layershell/cli/manual.py) failed; the build needs "
            "layershell's dependencies importable (pyproject.toml's build-system.requires):"
            f"\n{done.stderr.strip()}"
        )


class CustomBuildHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        self._tmp = tempfile.mkdtemp(prefix="layershell-bin-")
        man = os.path.join(self._tmp, "man")
        try:
            build_all(os.path.join(self.root, "layershell", "layers"), self._tmp)
            write_manual(self.root, man)
        except BuildError as exc:
            raise SystemExit(f"layershell: {exc}") from None
        for name in (*PROGRAMS, "build.json"):
            build_data["force_include"][os.path.join(self._tmp, name)] = f"layershell/_bin/{name}"
        for name in MANUAL:
            build_data["shared_data"][os.path.join(man, name)] = f"{MAN_DIR}/{name}"
        build_data["pure_python"] = False
        platform = sysconfig.get_platform().replace("-", "_").replace(".", "_")
        build_data["tag"] = f"py3-none-{platform}"

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        tmp = getattr(self, "_tmp", None)
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
