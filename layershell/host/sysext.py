"""Build layershell as a systemd system extension image (`./dev.sh sysext`).

A build tool, run on a Debian 12 machine from the checkout; never imported by `core`
itself (the frozen application leaves it out). docs/boot.md, "The system extension
image", has the layout, the match rule and the measurements.

    python3 -m layershell.host.sysext [--out DIR] [--work DIR]

1. a build venv (Debian's python3) with this checkout's wheel (its hatch_build.py
   compiles the executor and the launcher into layershell/_bin/) and PyInstaller;
2. a PyInstaller onedir application of layershell, with the wheel's _bin/ and _data/
   inside, and without libpam (the host's libpam and its modules are used);
3. a staged tree: /usr/lib/layershell/ (the application), /usr/bin/core and
   /usr/bin/layer-shell (relative links to it), the units under
   /usr/lib/systemd/system/, the manual pages the wheel installed into the build venv
   under /usr/share/man/man1/ and /usr/lib/extension-release.d/extension-release.layershell;
4. `mksquashfs -all-root -noappend` with every time set to SOURCE_DATE_EPOCH (the
   commit's time), then the image's size and sha256, and its line in SHA256SUMS.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass

from layershell.host import origin

NAME = "layershell"
PYINSTALLER = "pyinstaller>=6,<7"
# Shared objects the frozen application must not carry: PAM is the host's (its libpam
# reads the host's /etc/pam.d and loads the host's modules, built against it). python-pam
# loads it through ctypes, which PyInstaller's analysis would otherwise bundle.
# libaudit and libcap-ng come only with libpam (nothing else in the bundle links them).
EXCLUDED_LIBRARIES = (
    "libpam.so", "libpam_misc.so", "libpamc.so", "libaudit.so", "libcap-ng.so",
)  # fmt: skip
EXTENSION_RELEASE = "usr/lib/extension-release.d/extension-release." + NAME
APP_DIR = origin.EXTENSION_APP.lstrip("/")
UNIT_DIR = "usr/lib/systemd/system"
MAN_DIR = "usr/share/man/man1"
MANUAL = ("core.1", "layer-shell.1")  # hatch_build.py's, in the venv's share/man/man1
WANTS_DIR = UNIT_DIR + "/multi-user.target.wants"

# The frozen application's entry point: one executable for both programs, chosen by the
# name it was started under (the /usr/bin links keep their own name in argv[0]).
# It also answers `-I -S -c CODE ARGS...` (or -IS) as python would: layershell re-runs itself
# through sys.executable that way (session.this_python, the layer-shell launcher that
# core init writes), and in the frozen application sys.executable is this program.
ENTRY = """\
import os
import sys

# PyInstaller's bootloader points LD_LIBRARY_PATH at the bundled libraries and adds
# _PYI_* variables. The dynamic loader read LD_LIBRARY_PATH when this process started;
# the programs core runs (systemctl, useradd, unshare, the executor and the layers'
# programs) must get the host's libraries and the caller's environment, not these.
if "LD_LIBRARY_PATH_ORIG" in os.environ:
    os.environ["LD_LIBRARY_PATH"] = os.environ.pop("LD_LIBRARY_PATH_ORIG")
else:
    os.environ.pop("LD_LIBRARY_PATH", None)
for _name in [k for k in os.environ if k.startswith("_PYI_")]:
    del os.environ[_name]


def is_flags(arg):  # -I, -S, or both as one (-IS: the launcher's)
    return len(arg) > 1 and arg[0] == "-" and set(arg[1:]) <= {"I", "S"}


def python_c(argv):
    at = 1
    while at < len(argv) and is_flags(argv[at]):
        at += 1
    if at >= len(argv) - 1 or argv[at] != "-c":
        return False
    code = argv[at + 1]
    sys.argv = ["-c", *argv[at + 2 :]]
    exec(compile(code, "<string>", "exec"), {"__name__": "__main__"})
    return True


def main():
    first = sys.argv[1] if len(sys.argv) > 1 else ""
    name = os.path.basename(sys.argv[0]).lstrip("-")
    # Only the form layershell itself uses (flags first), and never under the name
    # layer-shell: `layer-shell -c CMD` is a shell command (su, sshd, a login), which
    # must run in the layer, not as Python on the host.
    if name != "layer-shell" and is_flags(first) and python_c(sys.argv):
        return
    if name == "layer-shell":
        from layershell.layers.main import main as shell

        shell(sys.argv)
    else:
        from layershell.cli import main as core

        core()


main()
"""


class SysextError(Exception):
    pass


@dataclass
class Image:
    path: str
    size: int
    sha256: str
    epoch: int
    seconds: float


def run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    if done.returncode != 0:
        raise SysextError(
            f"{' '.join(argv[:3])} ... failed (exit {done.returncode}):\n"
            f"{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )
    return done  # type: ignore[no-any-return]


def architecture(machine: str | None = None) -> str:
    machine = machine or platform.machine()
    try:
        return origin.ARCHITECTURES[machine]
    except KeyError:
        raise SysextError(f"no systemd architecture name known for {machine}") from None


def source_date_epoch(checkout: str) -> int:
    if "SOURCE_DATE_EPOCH" in os.environ:
        return int(os.environ["SOURCE_DATE_EPOCH"])
    # safe.directory: root building from a checkout someone else owns only reads its log.
    done = run(
        ["git", "-c", f"safe.directory={checkout}", "-C", checkout, "log", "-1", "--format=%ct"]
    )
    return int(done.stdout.strip())


def version(checkout: str) -> str:
    namespace: dict[str, object] = {}
    with open(os.path.join(checkout, NAME, "__init__.py"), encoding="utf-8") as f:
        for line in f:
            if line.startswith("__version__"):
                exec(line, namespace)  # noqa: S102 - our own one-line assignment
    found = namespace.get("__version__")
    if not isinstance(found, str):
        raise SysextError("layershell/__init__.py sets no __version__")
    return found


def extension_release(arch: str) -> str:
    """ID=_any: the extension holds its own runtime and needs of the host only the C
    library, PAM and systemd, so it is not tied to one OS or OS version, and an OS
    update never unmerges it. ARCHITECTURE= still refuses it on another machine type.
    EXTENSION_RELOAD_MANAGER=1 makes systemd-sysext 255 and newer reload the service
    manager after a merge or refresh, so the image's units are seen; 252 ignores it
    (core ignition's layershell-extension.service reloads there)."""
    return f"ID=_any\nARCHITECTURE={arch}\nEXTENSION_RELOAD_MANAGER=1\n"


def target_unit() -> str:
    """layershell.target: what `systemctl enable` of each unit would do, shipped in the
    image (which cannot rely on presets: at first boot they run before the image is
    merged). Masking a unit turns it off."""
    wants = " ".join(origin.ENABLED)
    return (
        "# Managed by layershell: its units, from its system extension image.\n"
        "[Unit]\n"
        "Description=layershell (system extension)\n"
        f"Wants={wants}\n\n"
        "[Install]\nWantedBy=multi-user.target\n"
    )


def build_venv(venv: str, checkout: str) -> str:
    python = os.path.join(venv, "bin", "python")
    if not os.path.exists(python):
        run(["/usr/bin/python3", "-m", "venv", venv])
    pip = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    run([*pip, PYINSTALLER, checkout])
    # Always this checkout's layershell, even when the version number did not change.
    run([*pip, "--no-deps", "--force-reinstall", checkout])
    return python


def freeze(python: str, work: str, epoch: int) -> str:
    """PyInstaller onedir of layershell; the directory holding the executable."""
    site = run(
        [python, "-I", "-c", "import layershell, os; print(os.path.dirname(layershell.__file__))"]
    ).stdout.strip()
    entry = os.path.join(work, "layershell_entry.py")
    with open(entry, "w", encoding="utf-8") as f:
        f.write(ENTRY)
    spec = os.path.join(work, NAME + ".spec")
    with open(spec, "w", encoding="utf-8") as f:
        f.write(
            f"""\
from PyInstaller.utils.hooks import collect_submodules
hidden = collect_submodules("layershell", filter=lambda m: m != "layershell.host.sysext")
hidden += collect_submodules("rich")
hidden += collect_submodules("isal")  # unpack/reading.py imports it where it inflates
a = Analysis(
    [{entry!r}],
    datas=[({os.path.join(site, "_bin")!r}, "layershell/_bin"),
           ({os.path.join(site, "_data")!r}, "layershell/_data")],
    hiddenimports=hidden,
    excludes=["layershell.host.sysext", "tkinter", "PyInstaller"],
)
a.binaries = [b for b in a.binaries
              if not os.path.basename(b[0]).startswith({EXCLUDED_LIBRARIES!r})]
pyz = PYZ(a.pure)
exe = EXE(pyz, a.scripts, [], exclude_binaries=True, name={NAME!r}, strip=False,
          upx=False, console=True)
coll = COLLECT(exe, a.binaries, a.datas, strip=False, upx=False, name={NAME!r})
"""
        )
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(epoch), PYTHONHASHSEED="0")
    dist = os.path.join(work, "dist")
    run(
        [
            python, "-m", "PyInstaller", "--noconfirm", "--clean", "--log-level", "WARN",
            "--distpath", dist, "--workpath", os.path.join(work, "pyi"), spec,
        ],
        env=env,
        cwd=work,  # not the checkout: its layershell/ has no _bin/
    )  # fmt: skip
    return os.path.join(dist, NAME)


def stage(app: str, root: str, checkout: str, arch: str, manual: str) -> None:
    """`manual`: the directory holding core.1 and layer-shell.1 (the build venv's)."""
    if os.path.exists(root):
        shutil.rmtree(root)
    shutil.copytree(app, os.path.join(root, APP_DIR), symlinks=True)
    bindir = os.path.join(root, "usr", "bin")
    os.makedirs(bindir)
    for program in (origin.EXTENSION_CORE, origin.EXTENSION_SHELL):
        os.symlink(f"../lib/{NAME}/{NAME}", os.path.join(root, program.lstrip("/")))
    # The host's man looks in /usr/share/man, which the merged image extends.
    os.makedirs(os.path.join(root, MAN_DIR))
    for page in MANUAL:
        shutil.copyfile(os.path.join(manual, page), os.path.join(root, MAN_DIR, page))
    units = os.path.join(root, UNIT_DIR)
    os.makedirs(units)
    source = os.path.join(checkout, "units")
    # layershell-extension.service is the host's, not the image's: systemd must know it
    # before the image is merged (core ignition and core init install it in /etc).
    for name in sorted(set(os.listdir(source)) - {origin.EXTENSION_UNIT}):
        with open(os.path.join(source, name), encoding="utf-8") as f:
            text = f.read()
        # core is /usr/bin/core in the image: a system extension extends /usr only.
        with open(os.path.join(units, name), "w", encoding="utf-8") as f:
            f.write(text.replace(origin.INSTALLED_CORE, origin.EXTENSION_CORE))
    with open(os.path.join(units, origin.TARGET), "w", encoding="utf-8") as f:
        f.write(target_unit())
    # Enabled as `systemctl enable` would, for a systemd that merges the image before it
    # loads units (or reloads after merging); 252 needs layershell-extension.service.
    os.makedirs(os.path.join(root, WANTS_DIR))
    os.symlink(f"../{origin.TARGET}", os.path.join(root, WANTS_DIR, origin.TARGET))
    release = os.path.join(root, EXTENSION_RELEASE)
    os.makedirs(os.path.dirname(release))
    with open(release, "w", encoding="utf-8") as f:
        f.write(extension_release(arch))
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(top, name)
            if not os.path.islink(path):
                mode = os.stat(path).st_mode
                os.chmod(path, (mode | 0o444 | (0o111 if mode & 0o111 else 0)) & 0o755)


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_sums(out: str, image: str, digest: str) -> None:
    """SHA256SUMS beside the images, one `<sha256>  <file>` line each (sysext-bakery)."""
    sums = os.path.join(out, "SHA256SUMS")
    name = os.path.basename(image)
    lines: list[str] = []
    if os.path.exists(sums):
        with open(sums, encoding="utf-8") as f:
            lines = [x for x in f.read().splitlines() if x and not x.endswith("  " + name)]
    lines.append(f"{digest}  {name}")
    with open(sums + ".tmp", "w", encoding="utf-8") as f:
        f.write("".join(x + "\n" for x in sorted(lines, key=lambda x: x.split("  ", 1)[1])))
    os.replace(sums + ".tmp", sums)


def build(checkout: str, out: str, work: str) -> Image:
    started = time.monotonic()
    checkout, out, work = (os.path.abspath(x) for x in (checkout, out, work))
    if shutil.which("mksquashfs") is None:
        raise SysextError("mksquashfs is missing: apt-get install squashfs-tools")
    arch = architecture()
    epoch = source_date_epoch(checkout)
    os.makedirs(work, exist_ok=True)
    os.makedirs(out, exist_ok=True)
    python = build_venv(os.path.join(work, "venv"), checkout)
    app = freeze(python, work, epoch)
    root = os.path.join(work, "root")
    manual = os.path.join(os.path.dirname(os.path.dirname(python)), "share", "man", "man1")
    stage(app, root, checkout, arch, manual)
    image = os.path.join(out, f"{NAME}-{version(checkout)}-{arch}.raw")
    run(
        [
            "mksquashfs", root, image, "-all-root", "-noappend", "-no-progress",
            "-mkfs-time", str(epoch), "-all-time", str(epoch),
        ],
        # mksquashfs refuses SOURCE_DATE_EPOCH beside the options, which say the same.
        env={k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"},
    )  # fmt: skip
    digest = sha256_of(image)
    write_sums(out, image, digest)
    return Image(image, os.path.getsize(image), digest, epoch, time.monotonic() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dev.sh sysext", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="build/sysext", help="where the image goes")
    parser.add_argument("--work", default="build/sysext-work", help="build venv and staging")
    parser.add_argument("--checkout", default=".", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        image = build(args.checkout, args.out, args.work)
    except SysextError as exc:
        print(f"sysext: error: {exc}", file=sys.stderr)
        return 1
    print(f"{image.path}: {image.size} bytes, sha256 {image.sha256}")
    print(f"  SOURCE_DATE_EPOCH={image.epoch}, built in {image.seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
