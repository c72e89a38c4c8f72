"""Validate layers.yaml (the layer stack) and turn it into a LayerStack.

Every problem is collected and reported at once as `FILE:LINE:COL: key: message`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

from layershell import load
from layershell.errors import ConfigError, Problem, closest
from layershell.layers.model import Layer, LayerStack
from layershell.load import Document, KeyPath

NAME_RE = re.compile(r"\A[a-z][a-z0-9_-]{0,31}\Z")
ACCOUNT_RE = re.compile(r"\A[a-z_][a-z0-9_-]{0,30}\$?\Z")
PLACEHOLDER_RE = re.compile(r"\{([^{}]*)\}")
PLACEHOLDERS = ("store", "pkgs", "state")
TEMPLATE_START_RE = re.compile(r"\A\{(store|pkgs|state)\}(/|\Z)")
TOP_KEYS = ("layers",)
LAYER_KEYS = ("name", "account", "parent", "home", "writable", "network", "shell", "limits")
# An installing layer's install limits (limits.InstallLimits; docs/packages.md, "Safe
# installs"): key -> (kind, smallest, largest). Sizes take K, M, G or T (powers of 1024).
LIMIT_KEYS: dict[str, tuple[str, float, float]] = {
    "disk_budget": ("size", 1 << 20, 1 << 50),
    "max_depth": ("count", 1, 256),  # one fd per level is held while a tree is walked
    "script_timeout": ("seconds", 1, 7 * 86400),
    "script_memory": ("size", 64 << 20, 1 << 50),  # layer-shell itself needs ~30 MiB
    "min_free": ("size-or-percent", 0, 1 << 50),
}
SIZE_RE = re.compile(r"\A\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*\Z", re.IGNORECASE)
PERCENT_RE = re.compile(r"\A\s*(\d+(?:\.\d+)?)\s*%\s*\Z")
UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
HOST_ONLY_KEYS = ("name", "account")
# Paths a layer may not claim as its own writable tree: they belong to the host view.
RESERVED = frozenset({"/", "/usr", "/etc", "/proc", "/dev", "/sys", "/tmp", "/run", "/var"})


def did_you_mean(word: str, choices: tuple[str, ...]) -> str:
    close = closest(word, choices)
    return f"did you mean {close!r}?" if close else f"known keys: {', '.join(choices)}"


def _check_keys(
    doc: Document, path: KeyPath, data: dict[str, Any], allowed: tuple[str, ...]
) -> list[Problem]:
    return [
        doc.problem((*path, key), "unknown key", did_you_mean(key, allowed), key=True)
        for key in data
        if key not in allowed
    ]


def _template(doc: Document, path: KeyPath, value: object, problems: list[Problem]) -> str:
    if not isinstance(value, str) or not value:
        problems.append(doc.problem(path, "must be a path (text)"))
        return ""
    for name in PLACEHOLDER_RE.findall(value):
        if name not in PLACEHOLDERS:
            problems.append(
                doc.problem(
                    path,
                    f"unknown placeholder {{{name}}}",
                    "use one of " + ", ".join("{" + p + "}" for p in PLACEHOLDERS),
                )
            )
            return ""
    if not (value.startswith("/") or TEMPLATE_START_RE.match(value)):
        problems.append(
            doc.problem(
                path,
                "must be an absolute path or start with a placeholder and a slash",
                "for example {store}/home",
            )
        )
        return ""
    if ".." in value.split("/"):
        problems.append(doc.problem(path, "must not contain '..'", "name the directory directly"))
        return ""
    return value


def parse_size(value: object) -> int | None:
    """20G, 512M, 1.5GiB, 4096 (bytes) -> bytes; None if it is not a size."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if not isinstance(value, str) or not (m := SIZE_RE.match(value)):
        return None
    return int(float(m.group(1)) * UNITS[m.group(2).upper()])


def _limit(
    doc: Document, path: KeyPath, key: str, value: object, problems: list[Problem]
) -> tuple[str, int | float] | None:
    kind, low, high = LIMIT_KEYS[key]
    number: int | float | None
    out = key
    if kind == "count":
        number = value if isinstance(value, int) and not isinstance(value, bool) else None
        shape = "a whole number"
    elif kind == "seconds":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        number = value if ok else None  # type: ignore[assignment]
        shape = "a number of seconds"
    else:
        number = parse_size(value)
        shape = "a size such as 20G, 512M or a number of bytes"
        if kind == "size-or-percent":
            shape = "a size such as 2G, or a percentage of the filesystem such as 5%"
            if number is None and isinstance(value, str) and (m := PERCENT_RE.match(value)):
                number, out, low, high = float(m.group(1)), "min_free_percent", 0, 50
    if number is None:
        problems.append(doc.problem(path, f"must be {shape}, not {value!r}"))
        return None
    if not low <= number <= high:
        shown = (lambda n: f"{n:g}%") if out == "min_free_percent" else _shown_limit(kind)
        problems.append(
            doc.problem(path, f"must be between {shown(low)} and {shown(high)}, not {value!r}")
        )
        return None
    return out, number


def _shown_limit(kind: str) -> Callable[[float], str]:
    if kind in ("size", "size-or-percent"):
        return lambda n: _size_words(int(n))
    return lambda n: f"{n:g}"


def _size_words(n: int) -> str:
    for unit in ("T", "G", "M", "K"):
        if n >= UNITS[unit] and n % UNITS[unit] == 0:
            return f"{n // UNITS[unit]}{unit}"
    return str(n)


def _limits(
    doc: Document, path: KeyPath, raw: object, level: int, problems: list[Problem]
) -> tuple[tuple[str, int | float], ...]:
    if level != 1:
        problems.append(
            doc.problem(
                path,
                "only a layer that installs packages (the one just above the host) has "
                "install limits",
                "move limits: to that layer",
                key=True,
            )
        )
        return ()
    if not isinstance(raw, dict):
        problems.append(
            doc.problem(path, "must be a mapping of limits", "for example  disk_budget: 20G")
        )
        return ()
    problems.extend(_check_keys(doc, path, raw, tuple(LIMIT_KEYS)))
    found = []
    for key, value in raw.items():
        if key in LIMIT_KEYS:
            pair = _limit(doc, (*path, key), key, value, problems)
            if pair is not None:
                found.append(pair)
    return tuple(found)


def _writable(
    doc: Document, path: KeyPath, raw_writable: object, problems: list[Problem]
) -> list[tuple[str, str]]:
    """A layer's writable: mapping as (path in the layer, host path template) pairs."""
    writable: list[tuple[str, str]] = []
    if not isinstance(raw_writable, dict):
        problems.append(
            doc.problem(
                (*path, "writable"),
                "must be a mapping of paths in the layer to host paths",
                'for example  /usr/local: "{store}/usr-local"',
            )
        )
    else:
        for inner, host in raw_writable.items():
            kpath = (*path, "writable", inner)
            # normpath keeps a leading "//" (POSIX), so check for it separately.
            if (
                not inner.startswith("/")
                or inner.startswith("//")
                or os.path.normpath(inner) != inner
            ):
                problems.append(
                    doc.problem(kpath, "must be an absolute, normalised path", key=True)
                )
                continue
            if inner in RESERVED:
                problems.append(
                    doc.problem(
                        kpath,
                        f"{inner} belongs to the host view and cannot be a layer's writable tree",
                        "use a directory below it, such as /usr/local",
                        key=True,
                    )
                )
                continue
            target = _template(doc, kpath, host, problems)
            if target:
                writable.append((inner, target))
    return writable


def _layer(
    doc: Document, index: int, raw: object, previous: Layer | None, problems: list[Problem]
) -> Layer | None:
    path: KeyPath = ("layers", index)
    if not isinstance(raw, dict):
        problems.append(doc.problem(path, "each layer must be a mapping (name:, account:, ...)"))
        return None
    problems.extend(_check_keys(doc, path, raw, LAYER_KEYS))
    before = len(problems)
    name = raw.get("name")
    if name is None:
        problems.append(doc.problem(path, "missing key 'name'"))
    elif not isinstance(name, str) or not NAME_RE.match(name):
        problems.append(
            doc.problem(
                (*path, "name"),
                f"invalid layer name {name!r}",
                "use lower-case letters, digits, '-' or '_', starting with a letter",
            )
        )
    account = raw.get("account")
    if account is None:
        problems.append(doc.problem(path, "missing key 'account'"))
    elif not isinstance(account, str) or not ACCOUNT_RE.match(account):
        problems.append(doc.problem((*path, "account"), f"invalid account name {account!r}"))
    parent = raw.get("parent")
    if previous is None:
        if parent is not None:
            problems.append(
                doc.problem(
                    (*path, "parent"),
                    "the first layer is the host (level 0) and has no parent",
                    "remove 'parent' or list the host layer first",
                )
            )
        extra = [k for k in raw if k not in (*HOST_ONLY_KEYS, "parent") and k in LAYER_KEYS]
        problems.extend(
            doc.problem(
                (*path, k),
                "the host layer (level 0) has no sandbox settings",
                "move it to a layer above the host",
                key=True,
            )
            for k in extra
        )
    elif parent is None:
        problems.append(
            doc.problem(
                path, "missing key 'parent'", f"layers stack in order: parent: {previous.name}"
            )
        )
    elif parent != previous.name:
        problems.append(
            doc.problem(
                (*path, "parent"),
                f"parent must be the layer listed just before it ({previous.name!r}), "
                f"not {parent!r}",
                "list the layers in stack order, host first",
            )
        )
    network = raw.get("network", True)
    if not isinstance(network, bool):
        problems.append(doc.problem((*path, "network"), "must be true or false"))
    shell = raw.get("shell", "/bin/bash")
    if not isinstance(shell, str) or not shell.startswith("/"):
        problems.append(doc.problem((*path, "shell"), "must be an absolute path to a shell"))
    home = ""
    if "home" in raw:
        home = _template(doc, (*path, "home"), raw["home"], problems)
    writable = _writable(doc, path, raw.get("writable", {}), problems)
    limits: tuple[tuple[str, int | float], ...] = ()
    if "limits" in raw and previous is not None:
        limits = _limits(doc, (*path, "limits"), raw["limits"], previous.level + 1, problems)
    if len(problems) > before:
        return None
    assert isinstance(name, str) and isinstance(account, str)
    return Layer(
        name=name,
        level=0 if previous is None else previous.level + 1,
        account=account,
        parent=parent or "",
        home=home,
        writable=tuple(writable),
        network=bool(network),
        shell=str(shell),
        limits=limits,
    )


def validate_stack(doc: Document) -> LayerStack:
    data = doc.data
    if not isinstance(data, dict):
        raise ConfigError([doc.problem((), "must be a mapping with a 'layers:' list")])
    problems = _check_keys(doc, (), data, TOP_KEYS)
    raw_layers = data.get("layers")
    if not isinstance(raw_layers, list) or len(raw_layers) < 2:
        problems.append(
            doc.problem(
                ("layers",),
                "must list at least two layers: the host, then a layer above it",
                "see profiles/layers.yaml for the shipped core -> arne -> otto stack",
            )
        )
        if not isinstance(raw_layers, list):
            raise ConfigError(problems)
    layers: list[Layer] = []
    seen_names: dict[str, int] = {}
    seen_accounts: dict[str, str] = {}
    previous: Layer | None = None
    for index, raw in enumerate(raw_layers):
        layer = _layer(doc, index, raw, previous, problems)
        if layer is None:
            # Keep checking later layers against a stand-in so their own problems show too.
            name = raw.get("name") if isinstance(raw, dict) else None
            previous = Layer(
                str(name) if name else f"#{index}", index, "", "", "", (), True, "/bin/sh"
            )
            continue
        if layer.name in seen_names:
            problems.append(
                doc.problem(
                    ("layers", index, "name"),
                    f"layer {layer.name!r} is already defined at layers.{seen_names[layer.name]}",
                )
            )
        elif layer.account in seen_accounts:
            problems.append(
                doc.problem(
                    ("layers", index, "account"),
                    f"account {layer.account!r} already belongs to layer "
                    f"{seen_accounts[layer.account]!r}",
                    "each layer needs its own account (rootless mode maps them all to you)",
                )
            )
        seen_names.setdefault(layer.name, index)
        seen_accounts.setdefault(layer.account, layer.name)
        layers.append(layer)
        previous = layer
    if problems:
        raise ConfigError(problems)
    return LayerStack(tuple(layers), doc.file)


def load_stack(path: str) -> LayerStack:
    return validate_stack(load.load_file(path))
