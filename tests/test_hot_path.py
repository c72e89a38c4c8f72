"""The `layer-shell` hot path is stdlib only (issue 15): with click, yaml and rich made
unimportable, layershell.layers.main imports, and `layer-shell -c true` and
`layer-shell --layer otto -- true` run. Only --help, --version and shell completion may
load click (docs/design.md), and nothing on the path may load yaml or rich."""

from __future__ import annotations

import sys

import pytest

from tests.support import Identity

BLOCK = """
import importlib.abc, sys
class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("click", "yaml", "rich"):
            raise ImportError(f"{name}: the layer-shell hot path must not import it")
        return None
sys.meta_path.insert(0, Blocked())
"""


def run_blocked(ident: Identity, code: str) -> tuple[int, str]:
    r = ident.run([sys.executable, "-c", BLOCK + code])
    return r.returncode, (r.stdout + r.stderr).decode()


def test_the_block_itself_works(fresh_rootless: Identity) -> None:
    code, said = run_blocked(fresh_rootless, "import yaml")
    assert code != 0 and "the layer-shell hot path must not import it" in said


def test_shell_main_imports_without_click_yaml_or_rich(fresh_rootless: Identity) -> None:
    code, said = run_blocked(fresh_rootless, "import layershell.layers.main")
    assert code == 0, said


@pytest.mark.parametrize(
    "argv",
    [["layer-shell", "-c", "true"], ["layer-shell", "--layer", "otto", "--", "true"]],
    ids=["dash-c", "layer-otto"],
)
def test_layer_shell_runs_without_click_yaml_or_rich(
    fresh_rootless: Identity, argv: list[str]
) -> None:
    program = f"import sys; sys.argv = {argv!r}\nfrom layershell.layers.main import main\nmain()"
    code, said = run_blocked(fresh_rootless, program)
    assert code == 0, said
    assert "must not import" not in said


def test_the_hot_path_imports_no_typing_re_or_enum(fresh_rootless: Identity) -> None:
    """docs/design.md, "The hot path": the modules layer-shell runs import none of these
    (typing alone, with the re and enum it pulls in, costs ~7 ms a call). errors.py once
    imported typing for one annotation."""
    probe = (
        "import sys, layershell.layers.main\n"
        "print(' '.join(m for m in ('typing', 're', 'enum', 'dataclasses', 'difflib')"
        " if m in sys.modules))"
    )
    r = fresh_rootless.run([sys.executable, "-I", "-S", "-c", "import sys; sys.path[:0] = "
                            f"{sys.path!r}\n" + probe])  # fmt: skip
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode().split() == [], r.stdout.decode()
