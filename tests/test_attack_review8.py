"""The eighth attack review's findings (shell completions, bind_xdg, mkdir_p), each
written as the attack and asserting that it fails."""

from __future__ import annotations

import os
import pty
import select
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from layershell.exposure import completions
from tests.support import Identity, install_package


def need(shell: str) -> str:
    found = shutil.which(shell)
    if found is None:
        pytest.skip(f"{shell} is not installed")
    return found


def _type_into(argv: Sequence[str], env: dict[str, str], cwd: str,
               keys: Sequence[bytes]) -> bytes:  # fmt: skip
    """Run an interactive shell on a pty and type `keys`, one chunk at a time."""
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        os.chdir(cwd)
        os.execvpe(argv[0], list(argv), env)

    def drain(seconds: float) -> bytes:
        out = b""
        end = time.time() + seconds
        while time.time() < end:
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                try:
                    out += os.read(fd, 4096)
                except OSError:
                    break
        return out

    seen = drain(1.5)
    for chunk in keys:
        os.write(fd, chunk)
        seen += drain(2.5)
    os.write(fd, b"exit\n")
    seen += drain(0.5)
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        pass
    os.waitpid(pid, 0)
    os.close(fd)
    return seen


# --- a completion candidate the host's bash types in as shell code --------------------
def _injecting(witness: Path) -> dict[str, bytes | str]:
    return {
        "bin/greet": '#!/bin/sh\necho "greet: $*"\n',
        # Run in the layer: it only prints. The host's bash put the candidate on the
        # caller's command line unquoted, so Enter ran `touch` outside the layer.
        "share/bash-completion/completions/greet": (
            f"_greet() {{ COMPREPLY=('x;touch {witness}'); }}\ncomplete -F _greet greet\n"
        ),
    }


def test_a_bash_completion_candidate_is_typed_in_quoted(
    fresh_rootless: Identity, shared_dir: Path
) -> None:
    """The attack: `greet <TAB>` offered the one candidate `x;touch ~/pwned`; bash's
    `complete -C` inserts a candidate as it is (no -o filenames: no quoting), so the
    line became `greet x;touch ~/pwned` and Enter ran the package's text on the host."""
    need("bash")
    ident = fresh_rootless
    witness = ident.home / "pwned-by-a-completion"
    install_package(ident, shared_dir, "greet", _injecting(witness), "default")
    registration = ident.home / ".local/share/bash-completion/completions/greet"
    assert registration.exists()
    env = {**ident.env, "TERM": "dumb", "PS1": "$ "}
    seen = _type_into(
        ident.argv(["bash", "--norc", "--noprofile", "-i"]), env, str(ident.home),
        [f"source {registration}\n".encode(), b"greet \t", b"\n"],
    )  # fmt: skip
    assert b"greet: x" in seen, seen  # the candidate was typed in (the attack ran)
    assert not witness.exists(), seen


def test_bashs_completer_path_is_run_not_evaluated(tmp_path: Path) -> None:
    """`complete -C STRING` keeps STRING and evaluates it as shell code at each TAB:
    a completer path with a space broke, one with backquotes or $(...) ran them."""
    need("bash")
    odd = tmp_path / "a b`touch evaluated`$(touch evaluated2)"
    odd.mkdir()
    completer = odd / "rg"
    completer.write_text("#!/bin/sh\necho --ran-the-completer\n")
    completer.chmod(0o755)
    registration = tmp_path / "reg"
    registration.write_text(completions.SHELLS["bash"].text("rg", str(completer)))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TERM": "dumb", "PS1": "$ "}
    seen = _type_into(
        ["bash", "--norc", "--noprofile", "-i"], env, str(tmp_path),
        [f"source {registration}\n".encode(), b"rg \t"],
    )  # fmt: skip
    assert not (tmp_path / "evaluated").exists() and not (tmp_path / "evaluated2").exists()
    assert b"--ran-the-completer" in seen, seen


# --- a program named as a shell builtin takes over the builtin's completion ------------
BUILTIN: dict[str, bytes | str] = {
    "bin/cd": "#!/bin/sh\necho never run: cd is the shell's\n",
    "share/bash-completion/completions/cd": (
        "_cdx() { COMPREPLY=(--from-the-package); }\ncomplete -F _cdx cd\n"
    ),
}


def test_a_program_named_as_a_builtin_does_not_register_its_completion(
    fresh_rootless: Identity, shared_dir: Path
) -> None:
    """The attack: a package exposes `cd` (no /usr/bin/cd: not a host program). The shim
    never runs (the shell's builtin wins), but `#compdef cd` in
    site-functions/_layershell_cd (first on fpath) and vendor_completions.d/cd.fish
    (before fish's own completions) replace the builtin's completion: every `cd <TAB>`
    ran the package in its layer, with the cwd bound writable, and offered its words."""
    ident = fresh_rootless
    install_package(ident, shared_dir, "cdpkg", BUILTIN, "default")
    data = ident.home / ".local/share"
    for path in (
        data / "zsh/site-functions/_layershell_cd",
        data / "fish/vendor_completions.d/cd.fish",
        data / "bash-completion/completions/cd",
        data / "layershell/complete/cd",
    ):
        assert not path.exists(), path


# --- the signature bomb of review 7, in a second armor block ---------------------------
def test_a_signature_bomb_in_a_second_armor_block_never_reaches_gpgv(tmp_path: Path) -> None:
    """The attack: SIGNATURE.asc is the trusted key's armored signature, then a
    `BEGIN PGP MESSAGE` block holding review 7's compressed bomb (100,000 signatures in
    55 KB). The framing check read only the SIGNATURE block, gpgv was handed the whole
    file and read both: every install or update waited GPGV_TIMEOUT and was told to try
    again. gpgv must see only the packets that were checked."""
    import base64
    import struct
    import zlib

    from layershell.packages.verify.signature import (
        MAX_SIGNATURE,
        RepositoryTrust,
        check_signature,
    )
    from tests import signing

    data = b"sums\n"
    data_file = tmp_path / "data"
    data_file.write_bytes(data)
    one, good = tmp_path / "one.sig", tmp_path / "good.asc"
    signing.other().gpg("--detach-sign", "--output", str(one), str(data_file))
    signing.key().gpg("--detach-sign", "--armor", "--output", str(good), str(data_file))
    packer = zlib.compressobj(9, wbits=-15)
    body = b"\x01" + packer.compress(one.read_bytes() * 100_000) + packer.flush()
    bomb = b"\xc8\xff" + struct.pack(">I", len(body)) + body
    signature = (
        good.read_bytes()
        + b"-----BEGIN PGP MESSAGE-----\n\n"
        + base64.encodebytes(bomb)
        + b"-----END PGP MESSAGE-----\n"
    )
    assert len(signature) < MAX_SIGNATURE
    keys = tmp_path / "keys"
    signing.key().trust(keys)
    signed = check_signature(RepositoryTrust("file:///r"), str(keys), signature, data, "r")
    assert signed.fingerprint == signing.key().fingerprint.upper()
