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

This module finds a package's units and reads them, and checks each (check_unit) against
the allow-list, unit_keys.py, as parsed by unit_syntax.py.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from dataclasses import dataclass

from layershell.errors import Problem
from layershell.exposure.unit_keys import SECTIONS, Context, anything, matches, refusal
from layershell.exposure.unit_syntax import parse

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

UNIT_NAME_RE = re.compile(r"\A[A-Za-z0-9:_.\\-]+(@[A-Za-z0-9:_.\\-]*)?\.[a-z]+\Z")
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
            message, hint = refusal(key, suffix, section)
            problems.append(UnitProblem(file, line, key, message, hint))
            continue
        why = rule(value, Context(ctx.name, ctx.own, suffix, key))
        if why:
            problems.append(UnitProblem(file, line, key, why))
    return problems


def texts(report: Report) -> dict[str, bytes]:
    return {u.name: u.data for u in report.units}
