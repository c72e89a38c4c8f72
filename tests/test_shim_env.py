"""Issue 13, item 1: a shim's program gets its caller's environment as a native program
would, under `default`, `nonetwork` and `trusted`, less what changes what the loader or
an interpreter runs (sandbox.DENY_ENV); `strict` passes a short list; a package's `env:`
passes, denies and sets more. Rootless, the shims called by name on PATH."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from layershell.layers import sandbox
from tests.packages import ARCH, Repository
from tests.support import Identity, install_package, python_cmd

PRINTENV: dict[str, bytes | str] = {"bin/showenv": "#!/bin/sh\nexec env\n"}
# What a caller may have set; the denied ones would change what runs in the layer.
CALLER = {
    "MY_VAR": "hello world",
    "JQ_COLORS": "0;31:0;32",
    "RIPGREP_CONFIG_PATH": "/home/x/.ripgreprc",
    "SSH_AUTH_SOCK": "/run/user/1000/ssh.sock",
    "LD_PRELOAD": "/tmp/evil.so",
    "LD_LIBRARY_PATH": "/tmp/evil",
    "LD_AUDIT": "/tmp/audit.so",
    "GCONV_PATH": "/tmp/gconv",
    "GLIBC_TUNABLES": "glibc.malloc.check=3",
    "MALLOC_CHECK_": "3",
    "PYTHONPATH": "/tmp/py",
    "PERL5OPT": "-Mevil",
    "NODE_OPTIONS": "--require /tmp/evil.js",
    "BASH_ENV": "/tmp/evil.sh",
    "BASH_FUNC_ls%%": "() { echo pwned; }",
    "LAYERSHELL_ROOT": "/tmp/elsewhere",
}
DENIED = [k for k in CALLER if sandbox.denied_env(k)]


def install(ident: Identity, shared: Path, profile: str, extra: str = "") -> None:
    install_package(ident, shared, "envy", PRINTENV, profile, extra)


def environment(ident: Identity, env: dict[str, str], path: str | None = None) -> dict[str, str]:
    shim = str(ident.home / ".local/bin/showenv")
    full = {**ident.env, **env, "PATH": path or ident.env["PATH"]}
    r = subprocess.run(
        [*ident.prefix, "env", "-i", *(f"{k}={v}" for k, v in full.items()), shim],
        capture_output=True, timeout=60, check=False, cwd=str(ident.home),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr.decode()
    return dict(line.split("=", 1) for line in r.stdout.decode().splitlines() if "=" in line)


@pytest.mark.parametrize("profile", ["default", "nonetwork", "trusted"])
def test_the_callers_environment_passes_but_what_changes_what_runs(
    fresh_rootless: Identity, shared_dir: Path, profile: str
) -> None:
    """The attack: LD_PRELOAD, GCONV_PATH, an exported bash function and the like,
    handed to a shim, would run code of the caller's choosing before the program's
    own; none of them reaches it, whatever else does."""
    install(fresh_rootless, shared_dir, profile)
    got = environment(fresh_rootless, CALLER)
    for key in ("MY_VAR", "JQ_COLORS", "RIPGREP_CONFIG_PATH", "SSH_AUTH_SOCK", "TERM", "LANG"):
        assert got.get(key) == {**fresh_rootless.env, **CALLER}[key], key
    assert DENIED and not [k for k in DENIED if k in got], got
    assert got["LAYERSHELL_LAYER"] == "otto"  # ours, set after the filter
    assert got["HOME"] == str(fresh_rootless.home)


def test_path_is_the_layers_then_the_callers_entries_the_view_has(
    fresh_rootless: Identity, shared_dir: Path
) -> None:
    install(fresh_rootless, shared_dir, "default")
    tools = fresh_rootless.home / "tools"  # in the home: the view shows it (read-only)
    tools.mkdir()
    os.chown(tools, fresh_rootless.uid, fresh_rootless.gid)
    caller = f"relative/bin:/nonexistent/bin:{tools}:/usr/bin:{fresh_rootless.home}/.local/bin"
    got = environment(fresh_rootless, {}, path=caller)
    entries = got["PATH"].split(":")
    layer = sandbox.LAYER_PATH.split(":")
    assert entries[: len(layer)] == layer  # the layer's own programs first
    assert entries[len(layer) :] == [str(tools), f"{fresh_rootless.home}/.local/bin"]


def test_strict_passes_a_short_list_and_what_env_pass_names(
    fresh_rootless: Identity, shared_dir: Path
) -> None:
    install(fresh_rootless, shared_dir, "strict", "      env: {pass: [MY_VAR]}\n")
    got = environment(fresh_rootless, CALLER)
    assert got["MY_VAR"] == "hello world"
    assert "JQ_COLORS" not in got and "SSH_AUTH_SOCK" not in got
    assert not [k for k in DENIED if k in got]
    assert got["HOME"] == "/tmp" and got["PATH"] == sandbox.LAYER_PATH


def test_env_deny_and_set_are_the_packages_own(fresh_rootless: Identity, shared_dir: Path) -> None:
    extra = "      env:\n        deny: [MY_VAR]\n        set: {LESS: '-R', JQ_COLORS: '1;33'}\n"
    install(fresh_rootless, shared_dir, "default", extra)
    got = environment(fresh_rootless, CALLER)
    assert "MY_VAR" not in got
    assert got["LESS"] == "-R"
    assert got["JQ_COLORS"] == "1;33"  # set: wins over the caller's
    assert got["RIPGREP_CONFIG_PATH"] == CALLER["RIPGREP_CONFIG_PATH"]


@pytest.mark.parametrize(
    ("env", "where", "words"),
    [
        ("{pass: [LD_PRELOAD]}", "7:", "LD_PRELOAD never reaches a layer's program"),
        ("{set: {GCONV_PATH: /x}}", "7:", "GCONV_PATH never reaches"),
        ("{pass: ['1BAD']}", "7:", "invalid environment variable name '1BAD'"),
        ("{pass: MY_VAR}", "7:", "must be a list"),
        ("{passs: [MY_VAR]}", "7:", "unknown key"),
        ("[MY_VAR]", "7:", "must be a mapping"),
        ('{set: {A: "x\\ny"}}', "7:", "must be printable text"),
        ("{set: {A: '@LAYERSHELL_PROGRAM@'}}", "7:", "no @LAYERSHELL_"),
        ("{set: {A: 3}}", "7:", "must be text, not"),
        ("{set: {PATH: /opt/x/bin}}", "7:", "PATH is set by layershell for every program"),
        ("{set: {OPENSSL_CONF: /x}}", "7:", "OPENSSL_CONF never reaches"),
    ],
)
def test_bad_env_is_refused_with_its_line(tmp_path: Path, env: str, where: str, words: str) -> None:
    manifest = tmp_path / "composable.yaml"
    manifest.write_text(
        "composable:\n  default_repository: file:///srv/repo\n  packages:\n"
        "    - name: envy\n      version: '1.0'\n      profile: default\n"
        f"      env: {env}\n"
    )
    r = subprocess.run(python_cmd("check", str(manifest)), capture_output=True, text=True)
    assert r.returncode == 2, r.stdout + r.stderr
    said = r.stdout + r.stderr
    assert f"composable.yaml:{where}" in said and words in said, said
    assert "Traceback" not in said


WRAPPED: dict[str, bytes | str] = {
    # docs/exposure.md's wrapper, as a package ships it
    "bin/wrapped": '#!/bin/sh\nhere=$(dirname "$(readlink -f "$0")")\n'
    'LD_LIBRARY_PATH="$here/../lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"'
    ' exec "$here/../libexec/wrapped" "$@"\n',
    "libexec/wrapped": '#!/bin/sh\necho "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"\n',
    "lib/.keep": "",
}


def test_a_wrapper_in_the_package_sets_the_loaders_variables_itself(
    fresh_rootless: Identity, shared_dir: Path
) -> None:
    repo = Repository(shared_dir / "repo-wrapped")
    repo.add("wrapped", "1.0", WRAPPED, modes={"libexec/wrapped": 0o755})
    repo.index()
    r = fresh_rootless.run(python_cmd("install", f"{repo.file_url}/{ARCH}/wrapped_1.0"))
    assert r.returncode == 0, r.stderr.decode()
    shim = str(fresh_rootless.home / ".local/bin/wrapped")
    r = fresh_rootless.run([shim], env={"LD_LIBRARY_PATH": "/tmp/evil"})
    out = r.stdout.decode().strip()
    assert out.startswith("LD_LIBRARY_PATH=/") and out.endswith("/bin/../lib"), r.stderr
    assert "/tmp/evil" not in out  # the caller's never got in; the package's own did
