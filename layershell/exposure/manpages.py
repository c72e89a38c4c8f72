"""A package's manual pages where `man` looks on the host (docs/exposure.md, "Manual
pages").

Whoever writes the shims copies, with them, each active package's
`share/man/man<S>/<page>.<S>[.gz]` into the host's manual directory (system mode
/usr/local/share/man, which man-db always searches; rootless ~/.local/share/man, which
man-db finds from ~/.local/bin on PATH). Copies, never links: root reads the layer's
tree through descriptors without following a link in it, takes only regular files of a
bounded size, and writes its own file, so what `man` (root's too) reads is data root
wrote. Which files are layershell's is recorded in <state>/manpages.json: a page that
is not there is never overwritten (a collision, reported) and a recorded one goes when
its package does.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field

from layershell.atomic import read_json_map, write_atomic, write_json
from layershell.packages.state import Installed
from layershell.paths import Paths

SECTION_RE = re.compile(r"\Aman[1-9n]\Z")
PAGE_RE = re.compile(r"\A[A-Za-z0-9_][A-Za-z0-9._+@-]{0,100}\.[1-9n][a-z]{0,8}(\.gz)?\Z")
MAX_PAGE = 1 << 20  # bytes; ripgrep's page is 30 kB
MAX_PAGES = 500  # per package
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class Report:
    written: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    collisions: list[str] = field(default_factory=list)


def _open(start: int, name: str) -> int | None:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=start)
    except OSError:
        return None


def _read(dir_fd: int, name: str) -> bytes | None:
    """A regular file's bytes, opened without following a link, or None."""
    try:
        fd = os.open(
            name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd
        )
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_PAGE:
            return None
        data = os.read(fd, MAX_PAGE + 1)
        return data if len(data) <= MAX_PAGE else None
    finally:
        os.close(fd)


def pages_of(paths: Paths, row: Installed) -> dict[str, bytes]:
    """`man<S>/<page>` -> bytes of an active package's pages, read without following a
    link anywhere in its tree (the layer account's)."""
    found: dict[str, bytes] = {}
    try:
        top = os.open(os.path.join(paths.pkgs_dir, f"{row.name}_{row.version}"), _DIR_FLAGS)
    except OSError:
        return found
    fds = [top]
    try:
        for part in ("share", "man"):
            nxt = _open(fds[-1], part)
            if nxt is None:
                return found
            fds.append(nxt)
        for section in sorted(os.listdir(fds[-1])):
            if not SECTION_RE.match(section):
                continue
            sec = _open(fds[-1], section)
            if sec is None:
                continue
            try:
                for page in sorted(os.listdir(sec)):
                    if len(found) >= MAX_PAGES or not PAGE_RE.match(page):
                        continue
                    data = _read(sec, page)
                    if data is not None:
                        found[f"{section}/{page}"] = data
            finally:
                os.close(sec)
    finally:
        for fd in fds:
            os.close(fd)
    return found


def sync(paths: Paths, rows: list[Installed], only: set[str] | None = None) -> Report:
    """Make the manual directory hold exactly the pages of the active packages (of
    `only`, if given, leaving the others' as they are)."""
    report = Report()
    recorded = {k: v for k, v in read_json_map(paths.manpages_file, strict=False).items()
                if isinstance(v, str)}  # fmt: skip
    wanted: dict[str, tuple[str, bytes]] = {}
    from layershell.exposure.shims import trusted_row

    for row in rows:
        if row.active and (only is None or row.name in only) and not trusted_row(paths, row):
            for rel, data in pages_of(paths, row).items():
                wanted.setdefault(rel, (row.name, data))
    for rel, owner in sorted(recorded.items()):
        if only is not None and owner not in only:
            continue
        if rel not in wanted or wanted[rel][0] != owner:
            dest = os.path.join(paths.man_dir, rel)
            try:
                if stat.S_ISREG(os.lstat(dest).st_mode):
                    os.unlink(dest)
                    report.removed.append(dest)
            except FileNotFoundError:
                pass
            del recorded[rel]
    for rel, (owner, data) in sorted(wanted.items()):
        dest = os.path.join(paths.man_dir, rel)
        if rel in recorded and recorded[rel] != owner:
            report.collisions.append(f"{dest} belongs to package {recorded[rel]}")
            continue
        if rel not in recorded and os.path.lexists(dest):
            report.collisions.append(f"{dest} exists and was not written by layershell: left alone")
            continue
        try:
            with open(dest, "rb") as f:
                same = f.read(MAX_PAGE + 1) == data
        except OSError:
            same = False
        if not same:
            try:
                os.makedirs(os.path.dirname(dest), mode=0o755, exist_ok=True)
                write_atomic(dest, data, mode=0o644)
            except OSError as exc:  # a manual page is not worth failing the install
                report.collisions.append(f"cannot write {dest}: {exc.strerror}")
                continue
            report.written.append(dest)
        recorded[rel] = owner
    write_json(paths.manpages_file, dict(sorted(recorded.items())))
    return report
