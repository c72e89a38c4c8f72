"""What of a package composable.yaml lets onto the host through its shims: which of its
executables go on PATH (`expose:`), which of them may take a name a host program has
(`expose_over:`), and which paths in the caller's home its shims may write
(`writable:`); docs/exposure.md. A package's `env:` is checked in manifest.py, with the
EnvSettings it becomes."""

from __future__ import annotations

from typing import Any

from layershell import names as rules
from layershell.load import KeyPath
from layershell.packages.checker import Checker

EXECUTABLE_RE = rules.EXECUTABLE
MAX_WRITABLE = 16
# Never writable through `writable:`: layershell's own trees in a (rootless) home.
PROTECTED_HOME_PATHS = (
    ".local/share/layershell", ".config/layershell", ".local/bin",
    ".local/share/layershell-programs",
)  # fmt: skip


def executables(check: Checker, path: KeyPath, value: object) -> tuple[str, ...] | None:
    names = check.names(path, value, "goss")
    if names is None:
        return None
    ok = True
    for index, name in enumerate(names):
        if "/" in name:
            check.report(
                (*path, index),
                f"{name!r} is a path, not a file name",
                "name the executable in the package's bin/, as in goss",
            )
            ok = False
        elif not EXECUTABLE_RE.match(name):
            check.report(
                (*path, index),
                f"invalid executable name {name!r}",
                rules.EXECUTABLE_HINT,
            )
            ok = False
    return names if ok else None


def expose_over(
    check: Checker, path: KeyPath, raw: dict[str, Any], expose: tuple[str, ...] | None
) -> tuple[str, ...] | None:
    """The host's word that these shims may take a name a host program already has on
    PATH (ls, python3): each must be one of the package's `expose`."""
    where = (*path, "expose_over")
    names = executables(check, where, raw["expose_over"])
    if names is None:
        return None
    if "expose" not in raw:
        check.report(
            where,
            "needs an expose: list naming those programs",
            f"add expose: [{', '.join(names) or 'PROG'}] to the package",
        )
        return None
    if expose is None:
        return None  # expose itself is wrong, and says so
    ok = True
    for index, name in enumerate(names):
        if rules.sensitive(name):
            check.report(
                (*where, index),
                f"{name!r} asks for passwords or changes identity: never put on PATH",
                "remove it; a package's program can run under another name",
            )
            ok = False
        elif name not in expose:
            check.report(
                (*where, index),
                f"{name!r} is not in the package's expose: list",
                f"add it to expose: too, or remove it here (expose: [{', '.join(expose)}])",
            )
            ok = False
    return names if ok else None


def _meets(a: str, b: str) -> bool:
    """One of two relative paths is, or lies below, the other."""
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


def writable(check: Checker, where: KeyPath, value: object) -> tuple[str, ...]:
    """`writable: [~/.htoprc, ~/.config/htop]`: paths below the caller's home."""
    names = check.names(where, value, "~/.config/NAME")
    if names is None:
        return ()
    if len(names) > MAX_WRITABLE:
        check.report(where, f"more than {MAX_WRITABLE} paths", "name fewer paths")
        return ()
    out = []
    for index, text in enumerate(names):
        at = (*where, index)
        rel = text[2:] if text.startswith("~/") else ""
        parts = rel.split("/")
        if not rel or len(text) > 255 or not text.isprintable() or "@LAYERSHELL_" in text:
            check.report(
                at,
                f"{text[:100]!r} is not a path below the home",
                "write it as ~/PATH, for example ~/.config/htop",
            )
        elif any(p in ("", ".", "..") for p in parts):
            check.report(
                at, f"{text!r} has an empty, '.' or '..' part", "write it as ~/PATH, plainly"
            )
        elif any(_meets(rel, p) for p in PROTECTED_HOME_PATHS):
            check.report(
                at,
                f"{text!r} is or holds one of layershell's own trees",
                "name the program's own file or directory instead",
            )
        else:
            out.append(text)
    return tuple(out)
