"""The system extension image (`./dev.sh sysext`, layershell/host/sysext.py; docs/boot.md).

One build, shared by the tests through a module fixture, and a second build of the same
commit for the file-list comparison (it reuses the build venv). Both need mksquashfs
(dev.sh installs squashfs-tools) and the pip registry (PyInstaller).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from layershell import __version__
from layershell.host import origin, sysext
from layershell.host.binaries import BUILD_PREFIX
from tests.support import BuiltImage

CHECKOUT = Path(__file__).resolve().parent.parent
APP = "usr/lib/layershell"
BIN = f"{APP}/_internal/layershell/_bin"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("mksquashfs") is None or shutil.which("unsquashfs") is None,
        reason="squashfs-tools is not installed (./dev.sh test installs it)",
    ),
]


def listing(image: str) -> list[str]:
    done = subprocess.run(
        ["unsquashfs", "-l", "-d", "", image], capture_output=True, text=True, check=True
    )
    return sorted(x for x in done.stdout.splitlines() if x.startswith("/"))


def bare(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """argv with an empty environment and a PATH that holds nothing, python3 included."""
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        ["env", "-i", "PATH=/nonexistent", *argv],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        **kwargs,
    )


@pytest.fixture
def built(sysext_built: BuiltImage) -> BuiltImage:
    return sysext_built


def test_image_name_size_and_sums(built: BuiltImage) -> None:
    image = built.image
    arch = sysext.architecture()
    assert os.path.basename(image.path) == f"layershell-{__version__}-{arch}.raw"
    assert image.size == os.path.getsize(image.path) > 1_000_000
    assert image.sha256 == sysext.sha256_of(image.path)
    sums = Path(image.path).parent / "SHA256SUMS"
    assert sums.read_text() == f"{image.sha256}  {os.path.basename(image.path)}\n"
    git = ["git", "-c", f"safe.directory={CHECKOUT}", "-C", str(CHECKOUT)]
    head = subprocess.run([*git, "log", "-1", "--format=%ct"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    if "SOURCE_DATE_EPOCH" not in os.environ:
        assert image.epoch == int(head.stdout)


def test_extension_release_matches_any_os_of_this_architecture(built: BuiltImage) -> None:
    release = built.tree / "usr/lib/extension-release.d/extension-release.layershell"
    fields = dict(line.split("=", 1) for line in release.read_text().splitlines() if line.strip())
    assert fields == {
        "ID": "_any", "ARCHITECTURE": sysext.architecture(), "EXTENSION_RELOAD_MANAGER": "1",
    }  # fmt: skip
    assert sysext.architecture("x86_64") == "x86-64"


def test_no_libpam_inside_but_python_pam_is(built: BuiltImage) -> None:
    names = [os.path.basename(p) for p in listing(built.image.path)]
    assert not [n for n in names if n.startswith(("libpam", "libaudit", "libcap-ng"))]
    # The exclusion is not vacuous: python-pam is bundled (in the PYZ archive: the import
    # below fails otherwise), and it finds the host's libpam.
    done = bare(
        [
            str(built.tree / "usr/bin/core"), "-I", "-S", "-c",
            "import pam.__internals as p, ctypes.util; "
            "print(ctypes.util.find_library('pam'))",
        ]
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith("libpam.so")


def test_executor_inside_is_the_one_core_expects(built: BuiltImage) -> None:
    record = json.loads((built.tree / BIN / "build.json").read_text())
    expected = record["layershell-enter"]["build"]
    done = bare([str(built.tree / BIN / "layershell-enter"), "--version"])
    assert done.stdout.strip() == BUILD_PREFIX.decode() + expected
    # The frozen core's own binaries.bin_dir() finds it, and its handshake passes.
    done = bare(
        [
            str(built.tree / "usr/bin/core"), "-I", "-S", "-c",
            "from layershell.host import binaries; b = binaries.executor(); "
            "print(b.path, b.build)",
        ]
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(built.tree / BIN / "layershell-enter"), expected]
    # ... and it is the one this checkout's wheel was built with (the installation the
    # tests run in: -I, so not the checkout's own layershell/, which has no _bin/).
    wheel = subprocess.run(
        [sys.executable, "-I", "-c",
         "import json; from layershell.host import binaries; print(json.dumps(binaries.record()))"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert json.loads(wheel) == record


def test_core_runs_from_the_extracted_tree_without_python3(built: BuiltImage) -> None:
    core = str(built.tree / "usr/bin/core")
    done = bare([core, "--version"])
    assert (done.returncode, done.stdout.splitlines()) == (0, [
        f"core, version {__version__}",
        f"running from: extension {built.tree / 'usr/lib/layershell'}",
    ])  # fmt: skip
    done = bare([core, "check", str(CHECKOUT / "examples/composable.yaml")])
    assert done.returncode == 0, done.stderr
    assert ": ok (" in done.stdout
    # check really validates: a broken manifest is refused with its line.
    broken = built.work / "broken.yaml"
    broken.write_text("composable:\n  packages:\n    - name: goss\n      profile: loose\n")
    done = bare([core, "check", str(broken)])
    assert done.returncode == 2
    assert "broken.yaml:4:" in done.stdout + done.stderr
    shell = bare([str(built.tree / "usr/bin/layer-shell"), "--help"])
    assert shell.returncode == 0, shell.stderr
    assert shell.stdout.startswith("Usage: layer-shell")


def test_layer_shell_dash_c_is_a_shell_command_not_python_on_the_host(built: BuiltImage) -> None:
    """The attack: the frozen entry took `-c CODE` as python -c under any name, so
    `layer-shell -c '...'` (what su and sshd run for a login shell) ran Python on the
    host, outside every layer."""
    code = "import os; os.write(1, b'ran-on-the-host')"
    for argv in (["usr/bin/layer-shell", "-c", code], ["usr/bin/layer-shell", "-IS", "-c", code],
                 ["usr/bin/core", "-c", code]):  # fmt: skip
        done = bare([str(built.tree / argv[0]), *argv[1:]])
        assert "ran-on-the-host" not in done.stdout, argv


def test_the_launcher_core_init_writes_runs_the_frozen_layer_shell(
    built: BuiltImage, tmp_path: Path
) -> None:
    launcher = tmp_path / "layer-shell"
    done = bare(
        [
            str(built.tree / "usr/bin/core"), "-I", "-S", "-c",
            "import os, sys; from layershell.host import binaries, init; "
            "data = binaries.launcher(sys.executable, init.launcher_code()); "
            f"open({str(launcher)!r}, 'wb').write(data); os.chmod({str(launcher)!r}, 0o755)",
        ]
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    shell = bare([str(launcher), "--help"])  # it runs `<frozen program> -IS -c CODE ...`
    assert shell.returncode == 0, shell.stderr
    assert shell.stdout.startswith("Usage: layer-shell")


def test_programs_core_runs_get_neither_the_bundled_libraries_nor_pyinstaller_vars(
    built: BuiltImage,
) -> None:
    code = "import json, os; print(json.dumps(dict(os.environ)))"
    done = bare([str(built.tree / "usr/bin/core"), "-I", "-S", "-c", code])
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"PATH": "/nonexistent"}
    done = bare(["LD_LIBRARY_PATH=/x", str(built.tree / "usr/bin/core"), "-I", "-S", "-c", code])
    assert json.loads(done.stdout) == {"PATH": "/nonexistent", "LD_LIBRARY_PATH": "/x"}


def test_units_are_layershells_and_run_usr_bin_core(built: BuiltImage) -> None:
    units = built.tree / "usr/lib/systemd/system"
    shipped = set(os.listdir(CHECKOUT / "units")) - {origin.EXTENSION_UNIT}
    extra = {origin.TARGET, "multi-user.target.wants"}
    assert sorted(os.listdir(units)) == sorted(shipped | extra)
    # Enabled by the image itself: the target wants what core init would enable.
    assert os.readlink(units / "multi-user.target.wants" / origin.TARGET) == "../layershell.target"
    target = (units / origin.TARGET).read_text()
    assert f"Wants={' '.join(origin.ENABLED)}\n" in target
    assert "WantedBy=multi-user.target" in target
    texts = [p.read_text() for p in units.iterdir() if p.is_file()]
    assert any("ExecStart=/usr/bin/core " in t for t in texts)
    assert not any("/usr/local/bin/core" in t for t in texts)
    links = {p: os.readlink(built.tree / "usr/bin" / p) for p in ("core", "layer-shell")}
    assert links == {"core": "../lib/layershell/layershell"} | {
        "layer-shell": "../lib/layershell/layershell"
    }


def test_two_builds_of_one_commit_have_the_same_file_list(
    built: BuiltImage, tmp_path: Path
) -> None:
    again = sysext.build(str(CHECKOUT), str(tmp_path / "out"), str(built.work))
    print(f"second sysext build (venv reused): {again.seconds:.0f} s")
    first = listing(built.image.path)
    assert listing(again.path) == first
    assert "/usr/bin/core" in first and len(first) > 50


def test_manual_pages_are_in_usr_share_man(built: BuiltImage) -> None:
    """The host's man finds core(1) in /usr/share/man, which the merged image extends."""
    pages = built.tree / "usr/share/man/man1"
    assert sorted(os.listdir(pages)) == ["core.1", "layer-shell.1"]
    assert (pages / "core.1").read_text().startswith('.\\" core(1): written by')
    assert "/usr/share/man/man1/core.1" in listing(built.image.path)
