"""The README's first command ends in demo/run.sh: it must keep working."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from tests.support import Identity

DEMO = Path(__file__).resolve().parent.parent / "demo"


def test_demo_runs_end_to_end(fresh_rootless: Identity) -> None:
    # The identity may not read the checkout (CI clones under /root): give it a copy.
    copy = fresh_rootless.home / "demo"
    shutil.copytree(DEMO, copy)
    for d, _, files in os.walk(copy):
        os.chmod(d, 0o755)
        for f in files:
            os.chmod(os.path.join(d, f), 0o755)
    venv_bin = os.path.dirname(sys.executable)
    r = fresh_rootless.run(
        ["bash", str(copy / "run.sh")],
        env={"PATH": f"{fresh_rootless.home}/.local/bin:{venv_bin}:/usr/bin:/bin"},
        timeout=300,
    )
    out = r.stdout.decode()
    assert r.returncode == 0, out + r.stderr.decode()
    assert "installed hello 1.0 in layer arne" in out
    assert "installed cowsay-lite 0.3 in layer arne" in out
    assert "hello 1.0 from layer otto" in out
    assert "hello 2.0 (testing) from layer otto" in out
    assert "layer 1 is read-only from layer 2" in out
    assert "hello 2.0 (testing) from layer otto as uid" in out and "from the shim" in out
    assert "< layers work >" in out
    assert out.rstrip().endswith("demo finished")
