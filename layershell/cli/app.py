"""The object every `core` command receives in ctx.obj."""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Console

from layershell import paths as paths_mod
from layershell.paths import Paths


@dataclass(frozen=True)
class App:
    paths: Paths
    out: Console
    err: Console


def make_app(root: str | None, rootless: bool | None) -> App:
    from layershell import ui

    return App(paths_mod.detect(root=root, rootless=rootless), ui.console(), ui.console(True))
