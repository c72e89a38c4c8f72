"""Shell completion for a package's shims, computed inside the layer (docs/exposure.md,
"Shell completions").

A package's own completion script is code: sourced by the host's shell it would run
outside the layer, and in root's shell as root. So no host shell ever sources it. For
each shim whose package has a completion for its name (bash's
`share/bash-completion/completions/<name>`, else fish's
`share/fish/vendor_completions.d/<name>.fish` when the view has fish), whoever writes
the shims writes files of its own text:

- a completer, `<state>/complete/<name>`: a shim of the package (same executor line,
  same profile) whose program is the layer's bash (or fish), which sources the
  package's script there, from an empty directory, completes the caller's command line
  (passed as arguments: strict passes no COMP_LINE) and prints one candidate a line;
- a registration per shell, each of which only runs the completer: bash's
  `complete -o default -C <completer> <name>` where bash-completion loads a command's
  completion on first use, a zsh function `_layershell_<name>` with `#compdef <name>`
  (a name of our own: `_<name>` could shadow one of zsh's, `_files` say), a fish file
  `<name>.fish`.

Root's shell may load a registration, but the completer is a shim, and the executor
refuses to run a layer program as root: root gets no completion and runs nothing of the
package. Every file carries the marker; a file without it is never overwritten.
"""

from __future__ import annotations

import os
import re
import shlex
import stat
from collections.abc import Callable
from dataclasses import dataclass

from layershell.atomic import write_atomic
from layershell.exposure.manpages import Report  # the same report: written, removed, collisions
from layershell.layers import sandbox
from layershell.layers.model import LayerStack
from layershell.names import MARKER
from layershell.paths import ROOTLESS, Paths

# Both completers run in a directory of their own, empty, so that a completion of file
# names offers none of the view's (the caller's shell completes files itself when the
# completer prints nothing) and a key press never hands over the caller's cwd.
# Inside the layer: $1 the package's tree, $2 the command, $3 and $4 the caller's
# COMP_LINE and COMP_POINT.
BASH_COMPLETER = r"""pkg=$1 cmd=$2 COMP_LINE=$3 COMP_POINT=$4
empty=$(mktemp -d) && cd "$empty" && rmdir "$empty" || exit 0
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
FISH_COMPLETER = r"""set -l script $argv[1]/share/fish/vendor_completions.d/$argv[2].fish
set -l line $argv[3]
if string match -qr '^[0-9]+$' -- "$argv[4]"
    set line (string sub -l $argv[4] -- "$line")
end
set -l empty (mktemp -d); and cd $empty; and rmdir $empty; or exit 0
test -f $script; or exit 0
source $script >/dev/null 2>&1
complete -C -- "$line" | string replace -r '\t.*' ''
"""
FISH = "/usr/bin/fish"  # the view's /usr is the host's


@dataclass(frozen=True)
class Source:
    """Where a package keeps its completion for a shell, and how the layer runs it."""

    parts: tuple[str, ...]
    file: Callable[[str], str]
    program: str
    argv: tuple[str, ...]


SOURCES = (
    Source(("share", "bash-completion", "completions"), lambda n: n, "/bin/bash",
           ("-c", BASH_COMPLETER, "layershell-complete")),
    Source(("share", "fish", "vendor_completions.d"), lambda n: f"{n}.fish", FISH,
           ("--no-config", "-c", FISH_COMPLETER)),
)  # fmt: skip


def _data_home(paths: Paths) -> str:
    return os.path.dirname(paths.man_dir)  # $XDG_DATA_HOME, ~/.local/share


def _fish_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _bash(name: str, completer: str) -> str:
    # `complete -C STRING` keeps STRING and evaluates it as shell code at each TAB: the
    # path is quoted for that evaluation, and again for this line. -o filenames has
    # readline quote what it types in: a candidate is the package's text, and
    # `x;touch ~/.bashrc` typed in as it is would run outside the layer on Enter.
    return (
        f"{MARKER}: {name}'s completion runs in its layer ({completer}).\n"
        f"complete -o default -o filenames -C {shlex.quote(shlex.quote(completer))}"
        f" {shlex.quote(name)}\n"
    )


def _zsh(name: str, completer: str) -> str:
    return (
        f"#compdef {name}\n"
        f"{MARKER}: {name}'s completion runs in its layer ({completer}).\n"
        'local line=${(j: :)words[1,CURRENT-1]}" $PREFIX"\n'
        "local -a found\n"
        f'found=(${{(f)"$(COMP_LINE=$line COMP_POINT=${{#line}} {shlex.quote(completer)}'
        ' 2>/dev/null)"})\n'
        "if (( ${#found} )); then compadd -- $found; else _files; fi\n"
    )


def _fish(name: str, completer: str) -> str:
    func = "__layershell_complete_" + name.encode().hex()
    return (
        f"{MARKER}: {name}'s completion runs in its layer ({completer}).\n"
        f"function {func}\n"
        "    set -l line (commandline -cp)\n"
        '    env COMP_LINE="$line" COMP_POINT=(string length -- "$line")'
        f" {_fish_quote(completer)} 2>/dev/null\n"
        "end\n"
        f"complete -c {_fish_quote(name)} -a '({func})'\n"
    )


@dataclass(frozen=True)
class Shell:
    system: str  # under the host's root
    rootless: str  # under $XDG_DATA_HOME
    file: Callable[[str], str]
    text: Callable[[str, str], str]


# Where each shell looks without configuration (fish reads /usr/local/share only when
# XDG_DATA_DIRS names it; zsh has no user directory: docs/exposure.md says what to add).
SHELLS = {
    "bash": Shell("usr/local/share/bash-completion/completions", "bash-completion/completions",
                  lambda n: n, _bash),
    "zsh": Shell("usr/local/share/zsh/site-functions", "zsh/site-functions",
                 lambda n: f"_layershell_{n}", _zsh),
    "fish": Shell("etc/fish/completions", "fish/vendor_completions.d",
                  lambda n: f"{n}.fish", _fish),
}  # fmt: skip


def registration_file(shell: str, name: str) -> str:
    return SHELLS[shell].file(name)


def registration(paths: Paths, shell: str, name: str) -> str:
    where = SHELLS[shell]
    if paths.mode == ROOTLESS:
        base = os.path.join(_data_home(paths), where.rootless)
    else:
        base = os.path.join(paths.root, where.system)
    return os.path.join(base, registration_file(shell, name))


def source_of(paths: Paths, package: str, version: str, name: str) -> Source | None:
    """The first of SOURCES whose file the package's tree has as a regular file,
    reached without following a link (the layer account's tree)."""
    for source in SOURCES:
        if source.program == FISH and not os.path.exists(FISH):
            continue
        if _regular(paths, package, version, (*source.parts, source.file(name))):
            return source
    return None


def _regular(paths: Paths, package: str, version: str, parts: tuple[str, ...]) -> bool:
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(os.path.join(paths.pkgs_dir, f"{package}_{version}"), flags)
    except OSError:
        return False
    try:
        for part in parts[:-1]:
            nxt = os.open(part, flags, dir_fd=fd)
            os.close(fd)
            fd = nxt
        st = os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
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
# The builtins and reserved words of bash, zsh and fish (`compgen -b -k`, zsh's
# $builtins and $reswords, fish's `builtin -n`), and the commands they also have as
# builtins: a shim of such a name never runs (the shell's own wins), but its
# registration would replace the builtin's completion (`#compdef cd` first on fpath,
# vendor_completions.d/cd.fish before fish's own), so every `cd <TAB>` ran the package.
SHELL_WORDS = frozenset("""
abbr alias and argparse autoload begin bg bind bindkey block break breakpoint builtin bye
caller case cd chdir command commandline compadd comparguments compcall compctl
compdescribe compfiles compgen compgroups complete compopt compquote compset comptags
comptry compvalues contains continue coproc count declare dirs disable disown do done
echo echotc echoti elif else emit emulate enable end esac eval exec exit export false fc
fg fi float for foreach function functions getln getopts hash help history if in integer
jobs kill let limit local log logout mapfile math nocorrect noglob not or path popd print
printf private pushd pushln pwd r random read readarray readonly realpath rehash repeat
return sched select set set_color setopt shift shopt source status string suspend switch
test then time times trap true ttyctl type typeset ulimit umask unalias unfunction unhash
unlimit unset unsetopt until vared wait whence where which while zcompile zformat zle
zmodload zparseopts zregexparse zstyle
""".split())  # noqa: SIM905 (one table, as the shells print it)  # fmt: skip


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
    from layershell.exposure import shims as shims_mod

    report = Report()
    wanted: dict[str, str] = {}
    for name, shim in shims.items():
        assert isinstance(shim, shims_mod.Shim)
        # bash-completion also looks for <cmd>.bash and _<cmd>: a program of such a name
        # would hide another command's completion.
        if name.endswith(".bash") or name.startswith("_") or name in SHELL_WORDS:
            continue
        source = source_of(paths, shim.package, shim.version, name)
        if source is None:
            continue
        shell_shim = shims_mod.Shim(
            name, shim.package, shim.version, source.program, shim.profile, shim.env,
            shim.writable,
        )  # fmt: skip
        spec = shims_mod.spec(paths, stack, shell_shim)
        argv = sandbox.executor_argv(spec, paths.executor, name=name)
        pkg = f"{inner_pkgs}/{shim.package}"
        line = shlex.join([*map(os.fsdecode, argv), *source.argv, pkg, name])
        wanted[name] = (
            "#!/bin/sh\n"
            f"{MARKER}: completion for {name} of package {shim.package}, computed in"
            " its layer; core expose manages it.\n"
            f'exec {line} "$COMP_LINE" "$COMP_POINT"\n'
        )
    completers = paths.completers_dir
    try:
        present = os.listdir(completers)
    except OSError:
        present = []
    for name in present:
        completer = os.path.join(completers, name)
        package = _package_of(completer)
        if name in wanted or package is None or (only is not None and package not in only):
            continue
        for path in (completer, *(registration(paths, shell, name) for shell in SHELLS)):
            if _ours(path):
                os.unlink(path)
                report.removed.append(path)
    for name, text in sorted(wanted.items()):
        completer = os.path.join(completers, name)
        try:
            _write(completer, text, 0o755, report)
            for shell, where in SHELLS.items():
                _write(registration(paths, shell, name), where.text(name, completer), 0o644,
                       report)  # fmt: skip
        except OSError as exc:  # a completion is not worth failing the install
            report.collisions.append(f"cannot write the completion of {name}: {exc.strerror}")
    return report


def write_own(paths: Paths, scripts: dict[str, dict[str, str]]) -> Report:
    """core's and layer-shell's own completion: `scripts` is program -> shell -> the
    script click generates for it. Rewritten by every core init; a file of the same
    name that layershell did not write is left alone."""
    report = Report()
    for program, by_shell in sorted(scripts.items()):
        for shell, text in sorted(by_shell.items()):
            mark = f"{MARKER}: {program}'s own completion; core init rewrites it.\n"
            first, _, rest = text.partition("\n")
            # zsh's compinit reads `#compdef` from the first line only.
            body = f"{first}\n{mark}{rest}" if first.startswith("#compdef") else mark + text
            try:
                _write(registration(paths, shell, program), body, 0o644, report)
            except OSError as exc:
                report.collisions.append(f"cannot write {program}'s {shell} completion: {exc}")
    return report
