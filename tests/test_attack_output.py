"""A package's own text reaches root's terminal only as text (issue 10): no escape
sequence from a package is written to a terminal, written as the attack. OSC 52 sets
the clipboard of the terminal emulator root pastes from next; other sequences make some
terminals type their answers into the input."""

from __future__ import annotations

from pathlib import Path

from tests.packages import tarball
from tests.support import SystemStack

OSC52 = "\x1b]52;c;dG91Y2ggL3RtcC9wd25lZAo=\x07"  # "touch /tmp/pwned" into the clipboard


def test_install_sh_output_reaches_root_only_as_text(system: SystemStack, shared_dir: Path) -> None:
    package = tarball(
        shared_dir / "loud_1.0.tar.gz",
        {"install.sh": f"printf '%s\\n' '{OSC52}' 'csi \x1b[2J\x9b2J'\nexit 3\n",
         "bin/loud": "#!/bin/sh\n"},
    )  # fmt: skip
    r = system.core("install", str(package))
    assert r.returncode != 0
    err = r.stderr
    assert b"install.sh failed" in err, err
    assert b"\x1b" not in err and "\x9b".encode() not in err, err
    assert b"\\x1b]52;c;dG91Y2ggL3RtcC9wd25lZAo=\\x07" in err  # shown, harmless
