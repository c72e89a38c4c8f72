"""Who may enter which layer.

Privilege follows the stack: root (and, in rootless mode, the one user who owns the
whole stack) stands at level 0; every other account stands at the level of the layer it
owns. Nobody enters a layer more privileged than their own, and in system mode only
root hands over to another account's layer (`core shell`), through PAM.

On the `layer-shell` hot path: plain functions, no imports beyond the model.
"""

from __future__ import annotations

from layershell.errors import LayershellError, PermissionRefused
from layershell.layers.model import Layer, LayerStack
from layershell.paths import ROOTLESS


def caller_level(stack: LayerStack, mode: str, uid: int, account: str) -> int:
    """The most privileged level this caller holds; raises if they hold none."""
    if uid == 0 or mode == ROOTLESS:
        return 0
    levels = [layer.level for layer in stack.layers if layer.account == account]
    if not levels:
        raise PermissionRefused(
            f"account {account!r} has no layer in {stack.source}",
            "an administrator assigns accounts to layers in /etc/layershell/layers.yaml; "
            "without one, unset LAYERSHELL_ROOT/LAYERSHELL_MODE to use rootless mode",
        )
    return min(levels)


def default_layer(stack: LayerStack, mode: str, uid: int, account: str) -> Layer:
    """The layer `layer-shell` enters without --layer: the caller's own. Root's own
    layer is core (the host); in rootless mode it is level 1, the layer that installs."""
    if mode == ROOTLESS:
        return stack.layers[1]
    if uid == 0:
        return stack.layers[0]
    level = caller_level(stack, mode, uid, account)
    return stack.layers[level]


def find(stack: LayerStack, name: str) -> Layer:
    layer = stack.get(name)
    if layer is None:
        raise LayershellError(
            f"no layer named {name!r} in {stack.source}",
            "layers: " + ", ".join(stack.names),
            exit_code=2,
        )
    return layer


def check_entry(stack: LayerStack, mode: str, uid: int, account: str, target: Layer) -> None:
    """Refuse, saying why, when the caller may not enter `target` themselves."""
    level = caller_level(stack, mode, uid, account)
    if target.level < level:
        mine = stack.layers[level]
        raise PermissionRefused(
            f"{account} stands at layer {mine.name} (level {mine.level}); layer "
            f"{target.name} (level {target.level}) is more privileged",
            f"only root can enter it: sudo core shell --layer {target.name}",
        )
    if uid != 0 and mode != ROOTLESS and target.account != account:
        raise PermissionRefused(
            f"layer {target.name} belongs to account {target.account}, not {account}",
            f"an administrator can open it: sudo core shell --layer {target.name}",
        )
