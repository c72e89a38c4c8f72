"""Shell completions beyond bash's (docs/exposure.md, "Shell completions"): a package's
fish completion computed in its layer, the registrations zsh and fish load, and what
they may not do: shadow one of zsh's own functions, break on an odd home, or let the
package's script act outside the layer. ripgrep's real completion in bash, zsh and fish
is in tests/test_real_programs.py."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from layershell.exposure import completions
from tests.support import Identity, install_package

ODD = "/home/a b/it's $HOME \\ `x`/.local/share/layershell/complete/rg"


def need(shell: str) -> str:
    found = shutil.which(shell)
    if found is None:
        pytest.skip(f"{shell} is not installed (./dev.sh test installs it)")
    return found


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_a_registration_names_the_completer_exactly_whatever_the_path(shell: str) -> None:
    """Each registration parses, and its completer is the path as written: a home with
    spaces, quotes, `$`, a backslash and backquotes runs nothing and means itself."""
    need(shell)
    text = completions.SHELLS[shell].text("rg", ODD)
    check = subprocess.run([shell, "-n"], input=text.encode(), capture_output=True, check=False)
    assert check.returncode == 0, check.stderr
    # The completer's word, evaluated by the shell itself, is the path.
    word = {
        "bash": lambda: text.split("-C ", 1)[1].rsplit(" rg\n", 1)[0],
        "zsh": lambda: text.split("COMP_POINT=${#line} ", 1)[1].split(" 2>/dev/null", 1)[0],
        "fish": lambda: text.split('COMP_POINT=(string length -- "$line") ', 1)[1].split(
            " 2>/dev/null", 1
        )[0],
    }[shell]()
    echoed = subprocess.run([shell, "-c", f"printf '%s' {word}"], capture_output=True, check=False)
    if shell == "bash":
        # `complete -C` keeps the word as given and evaluates it at each TAB: twice.
        kept = echoed.stdout.decode()
        echoed = subprocess.run(
            [shell, "-c", f"printf '%s' {kept}"], capture_output=True, check=False
        )
    assert echoed.stdout.decode() == ODD, echoed.stderr


def test_no_zsh_registration_shadows_one_of_zshs_own_functions() -> None:
    """zsh loads every `_*` file on fpath as a function of that name, and
    /usr/local/share/zsh/site-functions comes first: a program named `files` registered
    as `_files` would have replaced the function every completion uses."""
    path = completions.registration_file("zsh", "files")
    assert path == "_layershell_files"
    assert completions.SHELLS["zsh"].text("files", "/c").startswith("#compdef files\n")


FISH_ONLY: dict[str, bytes | str] = {
    "bin/greet": "#!/bin/sh\necho hi\n",
    # Code, run inside the layer: its writes to the caller's home and /tmp must not land.
    "share/fish/vendor_completions.d/greet.fish": (
        "complete -c greet -l loud -d 'Shout'\n"
        "complete -c greet -l quiet\n"
        "echo pwned >> ~/.bashrc 2>/dev/null\n"
        "echo pwned > /tmp/greet-was-here 2>/dev/null\n"
    ),
}


def test_a_fish_completion_is_computed_in_its_layer(
    fresh_rootless: Identity, shared_dir: Path
) -> None:
    need("fish")
    ident = fresh_rootless
    install_package(ident, shared_dir, "greet", FISH_ONLY, "default")
    data = ident.home / ".local/share"
    completer = data / "layershell/complete/greet"
    bashrc = ident.home / ".bashrc"
    bashrc.write_text("# rc\n")
    witness = Path("/tmp/greet-was-here")
    witness.unlink(missing_ok=True)
    # The host's fish, through its registration.
    r = ident.run(["fish", "-c", "complete -C 'greet --'"])
    assert r.returncode == 0, r.stderr
    offered = [line.split("\t")[0] for line in r.stdout.decode().splitlines()]
    assert {"--loud", "--quiet"} <= set(offered), r.stdout + r.stderr
    # bash's registration runs the same completer (the package has no bash completion).
    assert (data / "bash-completion/completions/greet").exists()
    r = ident.run([str(completer)], env={"COMP_LINE": "greet --l", "COMP_POINT": "9"})
    assert r.stdout.decode().split() == ["--loud"], r.stdout + r.stderr
    assert bashrc.read_text() == "# rc\n"
    assert not witness.exists()
    # Root's shells may load the registrations; the completer refuses to run as root.
    as_root = subprocess.run([str(completer)], capture_output=True, check=False,
                             env={"COMP_LINE": "greet --", "COMP_POINT": "8",
                                  "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert as_root.stdout == b"" and b"refusing to run a layer program as root" in as_root.stderr


def test_a_file_not_ours_is_left_and_ours_go_with_the_package(
    fresh_rootless: Identity, shared_dir: Path
) -> None:
    need("fish")
    ident = fresh_rootless
    data = ident.home / ".local/share"
    theirs = data / "fish/vendor_completions.d/greet.fish"
    theirs.parent.mkdir(parents=True, exist_ok=True)  # core init put core.fish there
    theirs.write_text("complete -c greet -l mine\n")
    subprocess.run(["chown", "-R", f"{ident.uid}:{ident.gid}", str(ident.home / ".local")],
                   check=True)  # fmt: skip
    install_package(ident, shared_dir, "greet", FISH_ONLY, "default")
    assert theirs.read_text() == "complete -c greet -l mine\n"
    zsh = data / "zsh/site-functions/_layershell_greet"
    assert zsh.exists()
    from tests.support import python_cmd

    r = ident.run(python_cmd("remove", "greet"))
    assert r.returncode == 0, r.stderr
    assert not zsh.exists() and not (data / "layershell/complete/greet").exists()
    assert theirs.read_text() == "complete -c greet -l mine\n"
