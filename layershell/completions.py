"""Bash completion for a package's shims, computed inside the layer (docs/exposure.md,
"Shell completions").

A package's own completion script is code: sourced by the host's bash it would run
outside the layer, and in root's shell as root. So the host's bash never sources it.
For each shim whose package has `share/bash-completion/completions/<name>`, whoever
writes the shims writes two files of its own text:

- a completer, `<state>/complete/<name>`: a shim of the package (same executor line,
  same profile) whose program is the layer's bash, which sources the package's script
  there (after the layer's bash-completion, when it has one), calls the function it
  registers with the words of COMP_LINE, and prints COMPREPLY;
- the registration, `complete -C <completer> <name>`, where bash-completion loads a
  command's completion on first use (/usr/local/share/bash-completion/completions, or
  ~/.local/share/bash-completion/completions in rootless mode).

Root's bash may load the registration, but the completer is a shim, and the executor
refuses to run a layer program as root: root gets no completion and runs nothing of the
package. Both files carry the marker; a file without it is never overwritten.
"""

from __future__ import annotations

import os
import re
import shlex
import stat

from layershell import sandbox
from layershell.atomic import write_atomic
from layershell.manpages import Report  # the same report: written, removed, collisions
from layershell.paths import ROOTLESS, Paths
from layershell.stack import LayerStack

MARKER = "# Managed by layershell"
# Inside the layer: $1 the package's tree, $2 the command, $3 and $4 the caller's
# COMP_LINE and COMP_POINT (as arguments: strict passes no such variable).
COMPLETER = r"""pkg=$1 cmd=$2 COMP_LINE=$3 COMP_POINT=$4
cd / || exit 0  # a key press never hands over the caller's cwd (bash completes files itself)
[ -r /usr/share/bash-completion/bash_completion ] && . /usr/share/bash-completion/bash_completion
. "$pkg/share/bash-completion/completions/$cmd" >/dev/null 2>&1 || exit 0
spec=$(complete -p "$cmd" 2>/dev/null) || exit 0
read -ra words <<< "$spec"
func=
for ((i = 0; i < ${#words[@]}; i++)); do
  [ "${words[i]}" = -F ] && func=${words[i + 1]}
done
[ -n "$func" ] || exit 0
line=${COMP_LINE:0:${COMP_POINT:-${#COMP_LINE}}}
read -ra COMP_WORDS <<< "$line"
case $line in *" ") COMP_WORDS+=("") ;; esac
COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
COMP_LINE=$line COMP_POINT=${#line}
"$func" "$cmd" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}" 2>/dev/null
printf '%s\n' "${COMPREPLY[@]}"
"""


def completers_dir(paths: Paths) -> str:
    return os.path.join(paths.state_dir, "complete")


def registrations_dir(paths: Paths) -> str:
    if paths.mode == ROOTLESS:
        data = os.path.dirname(paths.man_dir)  # $XDG_DATA_HOME, ~/.local/share
        return os.path.join(data, "bash-completion", "completions")
    return os.path.join(paths.root, "usr/local/share/bash-completion/completions")


def has_completion(paths: Paths, package: str, version: str, name: str) -> bool:
    """The package's tree has a regular file share/bash-completion/completions/<name>,
    reached without following a link (the layer account's tree)."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(os.path.join(paths.pkgs_dir, f"{package}_{version}"), flags)
    except OSError:
        return False
    try:
        for part in ("share", "bash-completion", "completions"):
            nxt = os.open(part, flags, dir_fd=fd)
            os.close(fd)
            fd = nxt
        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        return stat.S_ISREG(st.st_mode)
    except OSError:
        return False
    finally:
        os.close(fd)


def _ours(path: str) -> bool | None:
    """True if `path` is a file we wrote, False if someone else's, None if absent."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return False
    with open(path, "rb") as f:
        return MARKER.encode() in f.read(512)


def _write(path: str, text: str, mode: int, report: Report) -> None:
    owned = _ours(path)
    if owned is False:
        report.collisions.append(f"{path} exists and was not written by layershell: left alone")
        return
    if owned:
        with open(path, encoding="utf-8", errors="replace") as f:
            if f.read() == text:
                return
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    write_atomic(path, text, mode=mode)
    report.written.append(path)


PACKAGE_RE = re.compile(r"of package (\S+), computed in its layer")


def _package_of(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            found = PACKAGE_RE.search(f.read(512))
    except OSError:
        return None
    return found.group(1) if found else None


def sync(
    paths: Paths,
    stack: LayerStack,
    shims: dict[str, object],
    inner_pkgs: str,
    only: set[str] | None = None,
) -> Report:
    """Completers and registrations for exactly the shims in `shims` (name -> Shim) whose
    package has a completion; others of ours (of the packages in `only`) are removed."""
    from layershell import shims as shims_mod

    report = Report()
    wanted: dict[str, str] = {}
    for name, shim in shims.items():
        assert isinstance(shim, shims_mod.Shim)
        # bash-completion also looks for <cmd>.bash and _<cmd>: a program of such a name
        # would hide another command's completion.
        if name.endswith(".bash") or name.startswith("_"):
            continue
        if not has_completion(paths, shim.package, shim.version, name):
            continue
        bash_shim = shims_mod.Shim(
            name, shim.package, shim.version, "/bin/bash", shim.profile, shim.env, shim.writable
        )
        spec = shims_mod.spec(paths, stack, bash_shim)
        argv = sandbox.helper_argv(spec, paths.helper, name=name)
        pkg = f"{inner_pkgs}/{shim.package}"
        line = shlex.join([*map(os.fsdecode, argv), "-c", COMPLETER, "layershell-complete", pkg,
                           name])  # fmt: skip
        wanted[name] = (
            "#!/bin/sh\n"
            f"{MARKER}: bash completion for {name} of package {shim.package}, computed in"
            " its layer; core expose manages it.\n"
            f'exec {line} "$COMP_LINE" "$COMP_POINT"\n'
        )
    completers, registrations = completers_dir(paths), registrations_dir(paths)
    try:
        present = os.listdir(completers)
    except OSError:
        present = []
    for name in present:
        completer = os.path.join(completers, name)
        package = _package_of(completer)
        if name in wanted or package is None or (only is not None and package not in only):
            continue
        for path in (completer, os.path.join(registrations, name)):
            if _ours(path):
                os.unlink(path)
                report.removed.append(path)
    for name, text in sorted(wanted.items()):
        completer = os.path.join(completers, name)
        try:
            _write(completer, text, 0o755, report)
            _write(
                os.path.join(registrations, name),
                f"{MARKER}: {name}'s completion runs in its layer ({completer}).\n"
                f"complete -o default -C {shlex.quote(completer)} {shlex.quote(name)}\n",
                0o644,
                report,
            )
        except OSError as exc:  # a completion is not worth failing the install
            report.collisions.append(f"cannot write the completion of {name}: {exc.strerror}")
    return report
