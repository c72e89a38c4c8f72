"""Which systemd units a package may ship, where, and with which keys: the one place that
knows unit rules (portable.py attaches, `core check PACKAGE` reports, both call this).

A portable service runs under its profile only as far as systemd applies the profile,
and measured on systemd 252 (docs/exposure.md) that is not far: list settings in a unit
(BindPaths=, ...) add to the profile's, single settings the profile leaves alone
(User=, ...) win, the profile's drop-in is added to `.service` units only (a socket's
ExecStartPre= runs as plain host root), and portabled attaches units from every unit
search path of an image, preferring etc/systemd/system.control and
usr/local/lib/systemd/system over the directories layershell read. So:

- an allow-list: unit types layershell can sandbox (service, socket, timer, target) and,
  per section, the keys whose every value stays inside the profile; everything else is
  refused by name, with the file and line. Some keys are allowed with a value check
  (booleans that may only tighten, Exec prefixes, unit names that must be the
  package's own, socket paths under /run/<name>);
- every key that makes systemd (root, outside the sandbox) create, chmod, chown or
  remove a host path is held to paths no one else can write on the way: a socket is a
  file right in /run/<name>/ (systemd makes only that directory, in root's /run), the
  service's directories are one component named after the package, modes have no
  group/other write and no special bits, nothing is removed on stop (RemoveOnStop=,
  RuntimeDirectoryPreserve=), no link is made (Symlinks=, a path in Alias=). A directory
  systemd makes several levels deep, or with a mode others can write, lets any local
  user swap a level for a link that root then follows (the sockd attack);
- a unit may start, stop or delay only the package's own units (and Wants= passive
  targets): Conflicts=, OnFailure=, Before=, ... never name a host service;
- units live in usr/lib/systemd/system (or lib/ or etc/systemd/system, as before); a
  file in any other unit search path, a drop-in or .wants directory, an alias link or a
  link on the way to a unit directory is refused;
- the text is parsed the way systemd's conf-parser does (comments skipped even inside a
  continuation, trailing backslash joins lines with a space, first-line BOM, sections and
  keys case-sensitive, whitespace " \\t\\n\\r" stripped), and whatever systemd would read
  differently (NUL and control bytes, invalid UTF-8, a bare CR) is refused outright.

The image portablectl sees is then built by layershell (image.py) with exactly the units
that passed, so what was checked is what is attached.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from layershell.errors import Problem

# systemd 252's system unit search path (`systemd-analyze unit-paths`), relative to an
# image's root; portabled reads each of them inside the image.
SEARCH_PATHS = (
    "etc/systemd/system.control",
    "run/systemd/system.control",
    "run/systemd/transient",
    "run/systemd/generator.early",
    "etc/systemd/system",
    "etc/systemd/system.attached",
    "run/systemd/system",
    "run/systemd/system.attached",
    "run/systemd/generator",
    "usr/local/lib/systemd/system",
    "lib/systemd/system",
    "usr/lib/systemd/system",
    "run/systemd/generator.late",
)
# Where a package's units may be (today's three); the built image has them all in IMAGE_DIR.
UNIT_DIRS = ("usr/lib/systemd/system", "lib/systemd/system", "etc/systemd/system")
IMAGE_DIR = "usr/lib/systemd/system"

# Merged /usr: `lib -> usr/lib` makes lib/systemd/system the same directory.
MERGED_LINKS = {"lib": ("usr/lib", "/usr/lib", "./usr/lib")}
TYPES = (".service", ".socket", ".timer", ".target")
MAX_UNIT_BYTES = 64 * 1024
MAX_ENTRIES = 512
WHITESPACE = " \t\n\r"

UNIT_NAME_RE = re.compile(r"\A[A-Za-z0-9:_.\\-]+(@[A-Za-z0-9:_.\\-]*)?\.[a-z]+\Z")
PLAIN_UNIT_RE = re.compile(r"\A[A-Za-z0-9:_.-]+(@[A-Za-z0-9:_.-]*)?\.[a-z]+\Z")  # no escape
BAD_BYTES_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _ancestors() -> frozenset[str]:
    out: set[str] = set()
    for path in SEARCH_PATHS:
        parts = path.split("/")
        out.update("/".join(parts[:i]) for i in range(1, len(parts)))
    return frozenset(out)


ANCESTORS = _ancestors()  # etc, etc/systemd, usr, usr/lib, ...: no link allowed there


class UnitProblem(Problem):
    """FILE:LINE: key: message (hint); line 0 when it is about the whole file."""

    def __init__(self, file: str, line: int, key: str, message: str, hint: str = "") -> None:
        super().__init__(file, line, 0, key, message, hint)

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.key}: {self.message}" + (f" ({self.hint})" if self.hint else "")


@dataclass(frozen=True)
class UnitFile:
    name: str  # e.g. goss.service
    path: str  # where it is in the package, e.g. usr/lib/systemd/system/goss.service
    data: bytes


@dataclass(frozen=True)
class Report:
    problems: tuple[UnitProblem, ...]
    units: tuple[UnitFile, ...]


def matches(unit: str, name: str) -> bool:
    """systemd attaches only units named after the image: NAME.x, NAME-x, NAME@x."""
    return any(unit.startswith(name + sep) for sep in (".", "-", "@"))


# --- where units are -------------------------------------------------------------------


def excluded(rel: str) -> bool:
    """Is `rel` (relative to a package's root) left out of the image layershell builds?
    Every unit search path, and whatever is under run/ (newer systemd reads more there)."""
    return rel.startswith("run/") or any(rel == p or rel.startswith(p + "/") for p in SEARCH_PATHS)


def link_allowed(rel: str, target: str) -> bool:
    """May the package have a symbolic link at `rel` (a path relative to its root)?
    Not on the way to a unit search path (systemd would follow it), except merged /usr."""
    if rel in MERGED_LINKS:
        return target.rstrip("/") in MERGED_LINKS[rel]
    return rel not in ANCESTORS and rel not in SEARCH_PATHS


def _open_dir(root_fd: int, rel: str) -> tuple[int | None, str]:
    """(fd of the directory at rel, "") without following a link; (None, why) when it is
    not there, with why = "link" when a link is on the way (and not a merged-/usr one)."""
    fd = os.dup(root_fd)
    done: list[str] = []
    try:
        for part in rel.split("/"):
            done.append(part)
            try:
                child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    try:
                        st = os.stat(part, dir_fd=fd, follow_symlinks=False)
                    except OSError:
                        return None, ""
                    if stat.S_ISLNK(st.st_mode):
                        here = "/".join(done)
                        target = os.readlink(part, dir_fd=fd)
                        return None, "" if link_allowed(here, target) else f"link:{here}"
                return None, ""
            os.close(fd)
            fd = child
        result, fd = fd, -1
        return result, ""
    finally:
        if fd >= 0:
            os.close(fd)


def _read(dir_fd: int, name: str, owner: int) -> bytes | str:
    """A unit file's bytes, or why it cannot be read: root never follows a link here, nor
    reads a file the tree's owner does not own (a hard link to one of root's files)."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    except OSError as exc:
        return "a link, not a plain file" if exc.errno == errno.ELOOP else str(exc.strerror)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            return "not a plain file"
        if st.st_uid != owner:
            return f"owned by uid {st.st_uid}, not by the package's owner (a hard link?)"
        data = f.read(MAX_UNIT_BYTES + 1)
    if len(data) > MAX_UNIT_BYTES:
        return f"larger than {MAX_UNIT_BYTES // 1024} KiB"
    return data


def _entries(dir_fd: int) -> list[tuple[str, int]]:
    """(name, lstat mode) of a directory's entries, sorted, at most MAX_ENTRIES + 1."""
    out: list[tuple[str, int]] = []
    with os.scandir(dir_fd) as it:
        for entry in it:
            out.append((entry.name, entry.stat(follow_symlinks=False).st_mode))
            if len(out) > MAX_ENTRIES:
                break
    return sorted(out)


def scan(root_fd: int, label: str = "") -> tuple[list[UnitProblem], list[UnitFile]]:
    """Every unit search path of the tree at root_fd: the unit files in UNIT_DIRS (not yet
    checked, names not yet matched) and a problem for everything else found there."""
    problems: list[UnitProblem] = []
    files: dict[str, UnitFile] = {}

    def where(rel: str) -> str:
        return os.path.join(label, rel) if label else rel

    seen: set[tuple[int, int]] = set()
    owner = os.fstat(root_fd).st_uid
    for directory in SEARCH_PATHS:
        fd, why = _open_dir(root_fd, directory)
        if why:
            link = why.split(":", 1)[1]
            problems.append(
                UnitProblem(
                    where(link),
                    0,
                    "path",
                    f"a link on systemd's unit search "
                    f"path {directory}: systemd would read units where it points",
                    f"make {link} a directory; units go in {IMAGE_DIR}",
                )
            )
        if fd is None:
            continue
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) in seen:
                continue  # lib/systemd/system through a link checked as usr/lib's
            seen.add((st.st_dev, st.st_ino))
            entries = _entries(fd)
            if len(entries) > MAX_ENTRIES:
                problems.append(
                    UnitProblem(where(directory), 0, "path", f"more than {MAX_ENTRIES} entries")
                )
                continue
            for entry, mode in entries:
                rel = f"{directory}/{entry}"
                if directory not in UNIT_DIRS:
                    problems.append(
                        UnitProblem(
                            where(rel),
                            1,
                            "path",
                            f"{directory} is a unit search path systemd reads before "
                            f"the others; layershell attaches units only from "
                            f"{', '.join(UNIT_DIRS)}",
                            f"move it to {IMAGE_DIR}",
                        )
                    )
                    continue
                problem = _entry_problem(entry, mode)
                if problem:
                    message, hint = problem
                    problems.append(UnitProblem(where(rel), 0, "path", message, hint))
                    continue
                data = _read(fd, entry, owner)
                if isinstance(data, str):
                    problems.append(
                        UnitProblem(where(rel), 0, "path", data, "a unit must be a plain file")
                    )
                elif entry in files:
                    problems.append(
                        UnitProblem(
                            where(rel),
                            0,
                            "path",
                            f"{entry} is also in {files[entry].path}",
                            "ship each unit once",
                        )
                    )
                else:
                    files[entry] = UnitFile(entry, rel, data)
        finally:
            os.close(fd)
    unique = list(dict.fromkeys(problems))  # a link on the way to several search paths
    return unique, sorted(files.values(), key=lambda u: u.name)


def _entry_problem(entry: str, mode: int) -> tuple[str, str] | None:
    """Why an entry of a unit directory is not a unit layershell attaches, or None."""
    if stat.S_ISDIR(mode):
        if entry.endswith(".d"):
            return (
                "a drop-in directory: layershell attaches no drop-in of a package",
                "put its settings in the unit itself",
            )
        if entry.endswith((".wants", ".requires", ".upholds")):
            return (
                "a dependency directory: layershell attaches none",
                "use WantedBy= in the unit's [Install] section",
            )
        return ("a directory in a unit directory", "remove it")
    if stat.S_ISLNK(mode):
        return (
            "a link (an alias or a mask): layershell attaches plain unit files only",
            "ship the unit itself; Alias= in [Install] names an alias",
        )
    if not stat.S_ISREG(mode):
        return ("not a plain file", "remove it")
    if not UNIT_NAME_RE.match(entry) or len(entry) > 255:
        return ("not a unit file name", "remove it")
    if not entry.endswith(TYPES):
        return (
            f"a .{entry.rsplit('.', 1)[-1]} unit: layershell can sandbox only "
            f"{', '.join(t[1:] for t in TYPES)} units",
            "remove it",
        )
    return None


def check_tree(root_fd: int, name: str, label: str = "") -> Report:
    """Every problem with the units of the package `name` whose tree is at root_fd, and
    the unit files that passed (all of them, when there is no problem)."""
    problems, files = scan(root_fd, label)
    own = {f.name for f in files}
    for unit in files:
        where = os.path.join(label, unit.path) if label else unit.path
        if not matches(unit.name, name):
            problems.append(
                UnitProblem(
                    where,
                    0,
                    "name",
                    f"{unit.name} does not start with the package name; portablectl "
                    f"would not attach it",
                    f"name it {name}.service, {name}-x.service or {name}@.service",
                )
            )
            continue
        problems += check_unit(unit.name, unit.data, where, name, own)
    return Report(tuple(problems), tuple(files) if not problems else ())


# --- systemd's syntax ------------------------------------------------------------------


def logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """(number of its first line, text) of each logical line, as systemd's conf-parser
    reads them: comment lines are dropped first (even inside a continuation), a trailing
    unescaped backslash becomes a space and joins the next line."""
    continuation: str | None = None
    start = 0
    bom_seen = False
    for number, line in enumerate(re.split(r"\r\n|\r|\n", text), 1):
        head = line.lstrip(WHITESPACE)
        if head and head[0] in "#;":
            continue
        text_part = line
        if not bom_seen and line.startswith("\ufeff"):
            text_part, bom_seen = line[1:], True
        if continuation is None:
            start, joined = number, text_part
        else:
            joined = continuation + text_part
        escaped = False
        for ch in joined:
            escaped = False if escaped else ch == "\\"
        if escaped:
            continuation = joined[:-1] + " "
            continue
        continuation = None
        yield start, joined
    if continuation is not None:
        yield start, continuation


def parse(text: str) -> Iterator[tuple[int, str, str, str]]:
    """(line, section, key, value) per assignment, plus (line, "", "", why) for each line
    systemd would reject or ignore and layershell refuses. A section line yields
    (line, section, "", "") so the caller sees unknown sections."""
    section = ""
    for number, raw in logical_lines(text):
        line = raw.strip(WHITESPACE)
        if not line:
            continue
        if line.startswith("["):
            if not line.endswith("]") or len(line) < 2:
                yield number, "", "", f"not a section header: {line[:40]!r}"
                section = ""
                continue
            section = line[1:-1]
            yield number, section, "", ""
            continue
        key, sep, value = line.partition("=")
        key = key.strip(WHITESPACE)
        if not sep or not key:
            yield number, section, "", f"not KEY=VALUE: {line[:40]!r}"
        elif not section:
            yield number, "", key, "an assignment before any [section]"
        else:
            yield number, section, key, value.strip(WHITESPACE)


# --- the allow-list --------------------------------------------------------------------

TRUE = ("1", "yes", "y", "true", "t", "on")  # systemd's parse_boolean, case-insensitive
FALSE = ("0", "no", "n", "false", "f", "off")
SAFE_TARGETS = frozenset(
    f"{t}.target"
    for t in ("network", "network-online", "network-pre", "nss-lookup", "nss-user-lookup",
              "remote-fs", "local-fs", "time-set", "time-sync", "sockets", "timers",
              "paths", "basic", "sysinit", "multi-user", "default")
)  # fmt: skip


@dataclass(frozen=True)
class Context:
    name: str  # the package
    own: frozenset[str]  # its unit names
    suffix: str  # the unit's type, e.g. ".socket"
    key: str = ""


Rule = Callable[[str, Context], str]  # value -> why it is refused ("" when allowed)


def anything(value: str, ctx: Context) -> str:
    return ""


RELAXED = {
    "DynamicUser": "would run the service as root or a host user, not as its own dynamic user",
    "PrivateUsers": "would map the host's users into the service",
    "NoNewPrivileges": "would let the service gain privileges through setuid programs",
}


def true_only(value: str, ctx: Context) -> str:
    """A sandboxing switch a unit may turn on (the profile may too), never off."""
    if value == "" or value.lower() in TRUE:
        return ""
    why = RELAXED.get(ctx.key, "would relax the sandbox")
    return f"={value} {why}; only yes is accepted"


def one_of(*choices: str) -> Rule:
    def rule(value: str, ctx: Context) -> str:
        if value == "" or value in choices or (value.lower() in TRUE and "yes" in choices):
            return ""
        if value.lower() in FALSE:
            return f"={value} would relax the sandbox; one of {', '.join(choices)} is accepted"
        return f"={value} is not accepted here; one of: {', '.join(choices)}"

    return rule


def _own(unit: str, ctx: Context) -> bool:
    if unit in ctx.own:
        return True
    prefix, at, rest = unit.partition("@")  # an instance of one of its templates
    template = f"{prefix}@{rest[rest.rfind('.') :]}"
    return bool(at) and "%" not in prefix and template in ctx.own and "/" not in rest


def own_units(value: str, ctx: Context) -> str:
    bad = [u for u in value.split() if not _own(u, ctx)]
    return f"{', '.join(bad)}: only units of this package may be named here" if bad else ""


def dependencies(value: str, ctx: Context) -> str:
    bad = [u for u in value.split() if not _own(u, ctx) and u not in SAFE_TARGETS]
    if not bad:
        return ""
    return (
        f"{', '.join(bad)}: a unit of the host, which this would start or hold up; only "
        f"this package's units and the targets {', '.join(sorted(SAFE_TARGETS))} may be "
        f"named"
    )


def aliases(value: str, ctx: Context) -> str:
    """An alias is a link `systemctl enable` makes in /etc/systemd/system: a plain unit
    name (systemd 252 still reads a path as a legacy X.wants/ link) of the package."""
    bad = [
        a
        for a in value.split()
        if not PLAIN_UNIT_RE.match(a) or not matches(a, ctx.name) or not a.endswith(ctx.suffix)
    ]
    return (
        f"{', '.join(bad)}: an alias must be a plain unit name starting with the package name"
        if bad
        else ""
    )


def exec_line(value: str, ctx: Context) -> str:
    """systemd runs a '+', '!' or '!!' command with full privileges, outside User=,
    DynamicUser=, capabilities and namespaces; '@', '-' and ':' change nothing of that.
    One line may hold several commands, separated by a lone ';', each with its prefixes,
    and systemd unquotes and unescapes a command's first word before it reads them."""
    words = value.split()  # a superset of systemd's separators: never fewer commands
    # A quoted or escaped ';' is an argument to systemd; taken as a separator here too.
    starts = [0] + [i + 1 for i, w in enumerate(words) if w in (";", "';'", '";"', "\\;")]
    for i in starts:
        if i >= len(words):
            continue
        word = words[i]
        if any(c in word for c in "\"'\\"):
            return (
                f"{word!r}: a quoted or escaped command, which systemd unquotes before it "
                "reads the prefixes; write the command's path plainly"
            )
        rest = word.lstrip("@-:")
        if rest[:1] in ("+", "!"):
            return (
                f"a '{rest[0]}' prefix would run the command outside the service's profile, "
                f"with full privileges"
            )
        if rest.startswith("%"):
            return f"{word!r}: a specifier as the command; write the command's path plainly"
    return ""


def package_dirs(value: str, ctx: Context) -> str:
    """StateDirectory=NAME makes /var/lib/NAME the service's (moved to private/ and chowned
    to its dynamic user): a host directory of another name must never be. One component
    only: for NAME/sub systemd (root) makes NAME and follows whatever NAME/sub is then,
    and NAME is the service's to change."""
    bad = []
    for word in value.split():
        # ':' names a link systemd makes (SOURCE:LINK): a host path of any name; '/'
        # a second level; '%', '\\' and quotes are expanded by systemd first.
        plain = FILE_NAME_RE.match(word) and (word == ctx.name or matches(word, ctx.name))
        if not plain or ":" in word:
            bad.append(word)
    if bad:
        return (
            f"{', '.join(bad)}: systemd would make and hand this host directory to the "
            f"service; it must be one directory named after the package ({ctx.name} or "
            f"{ctx.name}-x), no path"
        )
    return ""


FILE_NAME_RE = re.compile(r"\A[A-Za-z0-9_][A-Za-z0-9_.@+-]*\Z")  # no '/', '.', '..', '%', '\\'
SUN_PATH_MAX = 107  # sockaddr_un.sun_path, its NUL excluded


def socket_path(value: str, ctx: Context) -> str:
    """A listening socket is made by systemd as root on the host, outside the profile
    (network included), and systemd first makes every missing directory above it: only
    a file right in /run/<name>/, a directory systemd makes in root's own /run. A
    second level would be a directory in /run/<name>, which the service (or, with a
    loose DirectoryMode=, anyone) could swap for a link that root then follows."""
    parts = value.split("/")
    if (
        len(parts) == 4
        and parts[:3] == ["", "run", ctx.name]
        and FILE_NAME_RE.match(parts[3])
        and len(value) <= SUN_PATH_MAX
    ):
        return ""
    return (
        f"{value!r}: systemd makes this socket, and the directories above it, as root "
        f"outside the profile; only a unix socket file right in /run/{ctx.name}/ "
        f"(/run/{ctx.name}/FILE) is accepted"
    )


MODE_RE = re.compile(r"\A[0-7]{1,5}\Z")


def mode_at_most(limit: int, what: str) -> Rule:
    """An octal mode (systemd's parse_mode) with no bit outside `limit`: no group or
    other write, no setuid, setgid or sticky bit."""

    def rule(value: str, ctx: Context) -> str:
        if value == "":
            return ""  # back to systemd's default, within the limit
        if MODE_RE.match(value) and int(value, 8) <= 0o7777 and not int(value, 8) & ~limit:
            return ""
        return (
            f"={value}: systemd makes the {what} as root with this mode; only modes "
            f"within {limit:04o} are accepted (no group/other write, no special bits)"
        )

    return rule


def false_only(why: str) -> Rule:
    """A switch that makes systemd act on host paths as root: only off."""

    def rule(value: str, ctx: Context) -> str:
        if value == "" or value.lower() in FALSE:
            return ""
        return f"={value} {why}; only no is accepted"

    return rule


def unit_names(value: str, ctx: Context) -> str:
    """`systemctl enable` makes a link in /etc/systemd/system per name (X.wants/NAME):
    plain unit names only, no path, specifier, escape or quote."""
    bad = [u for u in value.split() if not PLAIN_UNIT_RE.match(u) or len(u) > 255]
    return f"{', '.join(bad)}: not a plain unit name" if bad else ""


def instance(value: str, ctx: Context) -> str:
    if value == "" or FILE_NAME_RE.match(value):
        return ""
    return f"{value!r}: not a plain instance name"


def nice(value: str, ctx: Context) -> str:
    return "" if value == "" or value.isdigit() else "a negative Nice= would raise its priority"


def std_output(value: str, ctx: Context) -> str:
    if value in ("", "journal", "null", "inherit", "kmsg"):
        return ""
    return f"{value!r}: systemd would open it as root on the host; use journal or null"


UNIT_KEYS: dict[str, Rule] = {
    # After=, PartOf=, ReloadPropagatedFrom=, StopPropagatedFrom= name host units, but
    # act on this unit only (it waits for them, stops or reloads with them).
    **{k: anything for k in (
        "Description", "Documentation", "After", "PartOf", "ReloadPropagatedFrom",
        "StopPropagatedFrom", "IgnoreOnIsolate", "StopWhenUnneeded",
        "RefuseManualStart", "RefuseManualStop", "DefaultDependencies", "CollectMode",
        "JobTimeoutSec", "JobRunningTimeoutSec", "StartLimitIntervalSec", "StartLimitBurst",
        "SourcePath")},
    # Before=sshd.service with a oneshot that never ends would hold sshd's start at boot.
    **{k: dependencies for k in ("Wants", "Requires", "Requisite", "BindsTo", "Before")},
    # flush would cancel every queued job of the host; isolate stop all other units.
    "OnFailureJobMode": one_of("fail", "replace", "replace-irreversibly"),
    **{k: own_units for k in ("Conflicts", "OnFailure", "OnSuccess", "Upholds",
                              "PropagatesReloadTo", "PropagatesStopTo")},
}  # fmt: skip
INSTALL_KEYS: dict[str, Rule] = {
    "WantedBy": unit_names,  # X.wants/ in /etc/systemd/system: makes X want this unit
    "DefaultInstance": instance,
    "RequiredBy": own_units,  # a host unit requiring the package fails with it
    "UpheldBy": own_units,
    "Also": own_units,  # `systemctl enable` would enable those too
    "Alias": aliases,
}
SERVICE_KEYS: dict[str, Rule] = {
    "Type": one_of("simple", "exec", "forking", "oneshot", "notify", "idle"),
    **{k: exec_line for k in ("ExecStart", "ExecStartPre", "ExecStartPost", "ExecCondition",
                              "ExecReload", "ExecStop", "ExecStopPost")},
    **{k: anything for k in (
        "Restart", "RestartSec", "RestartPreventExitStatus", "RestartForceExitStatus",
        "SuccessExitStatus", "RemainAfterExit", "GuessMainPID", "TimeoutSec",
        "TimeoutStartSec", "TimeoutStopSec", "TimeoutAbortSec", "TimeoutStartFailureMode",
        "TimeoutStopFailureMode", "RuntimeMaxSec", "RuntimeRandomizedExtraSec", "WatchdogSec",
        "NotifyAccess", "KillSignal", "RestartKillSignal", "FinalKillSignal",
        "WatchdogSignal", "SendSIGKILL", "SendSIGHUP", "Environment", "UnsetEnvironment",
        "WorkingDirectory", "UMask", "SyslogIdentifier", "SyslogFacility", "SyslogLevel",
        "SyslogLevelPrefix", "LogLevelMax", "LogRateLimitIntervalSec", "LogRateLimitBurst",
        "FileDescriptorStoreMax", "OOMPolicy", "LimitNOFILE", "MemoryMax", "MemoryHigh",
        "MemorySwapMax", "CPUQuota", "TasksMax", "ReadOnlyPaths", "InaccessiblePaths")},
    **{k: mode_at_most(0o755, "directory") for k in (
        "StateDirectoryMode", "CacheDirectoryMode", "LogsDirectoryMode",
        "RuntimeDirectoryMode")},
    # A preserved /run/NAME outlives the dynamic user, whose uid a later service gets.
    "RuntimeDirectoryPreserve": false_only(
        "would keep /run/NAME after the service, owned by a dynamic uid systemd reuses"),
    "KillMode": one_of("control-group", "mixed", "process"),
    "Nice": nice,
    "StandardOutput": std_output,
    "StandardError": std_output,
    "StandardInput": one_of("null"),
    "Sockets": own_units,
    **{k: package_dirs for k in ("StateDirectory", "CacheDirectory", "LogsDirectory",
                                 "RuntimeDirectory")},
    **{k: true_only for k in (
        "DynamicUser", "PrivateUsers", "PrivateTmp", "PrivateDevices", "PrivateNetwork",
        "PrivateIPC", "PrivateMounts", "NoNewPrivileges", "RestrictSUIDSGID",
        "LockPersonality", "MemoryDenyWriteExecute", "RestrictRealtime", "RemoveIPC",
        "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs",
        "ProtectControlGroups", "ProtectClock", "ProtectHostname", "RestrictNamespaces",
        "MountAPIVFS")},
    "ProtectSystem": one_of("yes", "full", "strict"),
    "ProtectHome": one_of("yes", "read-only", "tmpfs"),
    "ProtectProc": one_of("invisible", "ptraceable", "noaccess"),
    "ProcSubset": one_of("pid"),
}  # fmt: skip
SOCKET_KEYS: dict[str, Rule] = {
    **{k: socket_path for k in ("ListenStream", "ListenDatagram", "ListenSequentialPacket")},
    **{k: anything for k in (
        "Accept", "MaxConnections", "MaxConnectionsPerSource", "Backlog",
        "FileDescriptorName", "PassCredentials", "PassSecurity", "PassPacketInfo",
        "KeepAlive", "NoDelay", "ReceiveBuffer", "SendBuffer", "TriggerLimitIntervalSec",
        "TriggerLimitBurst", "Timestamping")},
    # /run/NAME: root's, not writable by others. The socket: any local user may connect
    # (what a socket is for; the service decides what to answer), but no x or special bit.
    "DirectoryMode": mode_at_most(0o755, "socket's directory /run/NAME"),
    "SocketMode": mode_at_most(0o666, "socket"),
    "RemoveOnStop": false_only(
        "would make systemd remove the socket's paths as root when it stops"),
    "Service": own_units,
}  # fmt: skip
TIMER_KEYS: dict[str, Rule] = {
    **{k: anything for k in (
        "OnActiveSec", "OnBootSec", "OnStartupSec", "OnUnitActiveSec", "OnUnitInactiveSec",
        "OnCalendar", "AccuracySec", "RandomizedDelaySec", "FixedRandomDelay",
        "OnClockChange", "OnTimezoneChange", "Persistent", "RemainAfterElapse")},
    "Unit": own_units,
}  # fmt: skip
SECTIONS: dict[str, dict[str, dict[str, Rule]]] = {
    ".service": {"Unit": UNIT_KEYS, "Service": SERVICE_KEYS, "Install": INSTALL_KEYS},
    ".socket": {"Unit": UNIT_KEYS, "Socket": SOCKET_KEYS, "Install": INSTALL_KEYS},
    ".timer": {"Unit": UNIT_KEYS, "Timer": TIMER_KEYS, "Install": INSTALL_KEYS},
    ".target": {"Unit": UNIT_KEYS, "Install": INSTALL_KEYS},
}

# Why the keys people reach for are refused: the message names the escape.
REFUSED: Mapping[str, str] = {
    **{k: "would choose the service's user or groups; the profile runs it as its own "
          "dynamic user" for k in ("User", "Group", "SupplementaryGroups")},
    **{k: "would bind host paths into the service: list settings add to the profile's"
       for k in ("BindPaths", "BindReadOnlyPaths", "TemporaryFileSystem", "ReadWritePaths",
                 "MountImages", "ExtensionImages", "ExtensionDirectories")},
    **{k: "would replace the image portablectl attaches" for k in (
        "RootDirectory", "RootImage", "RootImageOptions", "RootHash", "RootHashSignature",
        "RootVerity")},
    **{k: "would give the service capabilities the profile does not"
       for k in ("CapabilityBoundingSet", "AmbientCapabilities", "SecureBits")},
    **{k: "adds to the profile's allow-list, widening it" for k in (
        "SystemCallFilter", "SystemCallArchitectures", "SystemCallErrorNumber",
        "RestrictAddressFamilies", "IPAddressAllow", "IPAddressDeny", "DeviceAllow",
        "DevicePolicy", "RestrictFileSystems", "SocketBindAllow", "SocketBindDeny")},
    "PermissionsStartOnly": "would run the Exec lines other than ExecStart= with full "
    "privileges, outside the profile",
    **{k: "systemd would read this host file as root for the service" for k in (
        "EnvironmentFile", "LoadCredential", "LoadCredentialEncrypted", "SetCredential",
        "SetCredentialEncrypted", "ImportCredential", "PIDFile", "TTYPath", "PAMName",
        "ListenSpecial", "ListenFIFO", "ListenMessageQueue", "ListenUSBFunction",
        "USBFunctionDescriptors", "USBFunctionStrings")},
    **{k: "systemd would make, chown or remove this host path as root" for k in (
        "Symlinks", "SocketUser", "SocketGroup", "ConfigurationDirectory",
        "ConfigurationDirectoryMode")},
    **{k: "could reboot or power off the host" for k in (
        "FailureAction", "SuccessAction", "StartLimitAction", "JobTimeoutAction",
        "RebootArgument", "JobTimeoutRebootArgument", "FailureActionExitStatus",
        "SuccessActionExitStatus", "AllowIsolate", "WakeSystem")},
    **{k: "reaches outside the service's own unit, namespace or cgroup" for k in (
        "JoinsNamespaceOf", "Slice", "Delegate", "RequiresMountsFor", "OOMScoreAdjust",
        "Personality", "KeyringMode", "IOSchedulingClass", "CPUSchedulingPolicy",
        "CPUSchedulingPriority", "BindToDevice",
        "Transparent", "FreeBind", "Mark", "ListenNetlink", "BusName", "NetworkNamespacePath",
        "IPCNamespacePath")},
}  # fmt: skip


def _refusal(key: str, suffix: str, section: str) -> tuple[str, str]:
    if key.startswith("Exec") and suffix != ".service":
        return (
            f"in a {suffix} unit this would run outside the profile, as host root "
            f"(systemd adds the profile to .service units only)",
            "move the command to the package's .service unit",
        )
    if key in REFUSED:
        return REFUSED[key], "remove it; the profile decides"
    return (
        f"not a key layershell can sandbox in [{section}] of a {suffix} unit",
        "see docs/exposure.md for the keys accepted",
    )


def _text_problem(data: bytes) -> tuple[int, str] | str:
    """The text of a unit, or (line, why) when systemd might read it otherwise."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return data[: exc.start].count(b"\n") + 1, "not valid UTF-8"
    bad = BAD_BYTES_RE.search(text)
    if bad:
        return text[: bad.start()].count("\n") + 1, f"a control character ({bad.group()!r})"
    return text


def check_unit(
    unit: str, data: bytes, file: str, name: str, own: set[str] | frozenset[str]
) -> list[UnitProblem]:
    """Every problem with one unit file of package `name` (whose units are `own`)."""
    suffix = unit[unit.rfind(".") :]
    sections = SECTIONS.get(suffix)
    if sections is None:
        return [UnitProblem(file, 0, "type", f"{suffix} units are not attached")]
    if len(data) > MAX_UNIT_BYTES:
        return [UnitProblem(file, 0, "size", f"larger than {MAX_UNIT_BYTES // 1024} KiB")]
    text = _text_problem(data)
    if not isinstance(text, str):
        return [UnitProblem(file, text[0], "text", text[1], "systemd may read it otherwise")]
    ctx = Context(name, frozenset(own), suffix)
    problems: list[UnitProblem] = []
    ignored = False  # inside an X- section, which systemd ignores
    for line, section, key, value in parse(text):
        if not key:
            if value:  # a line systemd rejects or ignores
                problems.append(UnitProblem(file, line, "syntax", value))
                ignored = False
            elif section.startswith("X-"):
                ignored = True
            elif section not in sections:
                problems.append(
                    UnitProblem(
                        file,
                        line,
                        f"[{section}]",
                        f"not a section of a {suffix} unit layershell accepts",
                        f"sections: {', '.join(sections)}",
                    )
                )
                ignored = True
            else:
                ignored = False
            continue
        if not section:
            problems.append(UnitProblem(file, line, key, value))
            continue
        if ignored or key.startswith("X-"):
            continue
        keys = sections[section]
        rule = keys.get(key)
        if rule is None and section == "Unit" and key.startswith(("Condition", "Assert")):
            rule = anything  # read-only checks of the host
        if rule is None:
            message, hint = _refusal(key, suffix, section)
            problems.append(UnitProblem(file, line, key, message, hint))
            continue
        why = rule(value, Context(ctx.name, ctx.own, suffix, key))
        if why:
            problems.append(UnitProblem(file, line, key, why))
    return problems


def texts(report: Report) -> dict[str, bytes]:
    return {u.name: u.data for u in report.units}
