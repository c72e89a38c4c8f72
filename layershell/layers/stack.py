"""The layer stack as `layer-shell` reads it: the compiled cache of layers.yaml when it is
fresh, else the YAML, validated by config.py into the model (model.py).

The cache exists so that `layer-shell`, which runs on every call, never imports yaml
(docs/design.md, "The hot path"): config.py, and yaml with it, is imported only when the
cache is stale or missing. Nothing here imports config.py at module level, and config.py
never imports this module.
"""

from __future__ import annotations

import marshal
import os

from layershell.layers.model import Layer, LayerStack

TYPE_CHECKING = False  # typing costs ~7 ms on the hot path (docs/design.md)
if TYPE_CHECKING:
    from layershell.paths import Paths

CACHE_FORMAT = 2  # 2: Layer.limits


def data_dir() -> str:
    """profiles/ and units/: inside the wheel (layershell/_data) or the checkout."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    packaged = os.path.join(here, "_data")
    if os.path.isdir(packaged):
        return packaged
    return os.path.dirname(here)


def shipped_layers_file() -> str:
    return os.path.join(data_dir(), "profiles", "layers.yaml")


def stack_file(config_file: str) -> str:
    """The operator's layers.yaml if there is one, else the shipped default."""
    return config_file if os.path.exists(config_file) else shipped_layers_file()


def _fingerprint(path: str) -> tuple[str, int, int]:
    st = os.stat(path)
    return (os.path.abspath(path), st.st_mtime_ns, st.st_size)


def read_cache(cache_file: str, source: str) -> LayerStack | None:
    """The compiled stack if the cache exists and matches `source` exactly."""
    try:
        with open(cache_file, "rb") as f:
            data = marshal.load(f)
        if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
            return None
        if tuple(data.get("fingerprint", ())) != _fingerprint(source):
            return None
        return LayerStack(tuple(Layer(*row) for row in data["layers"]), source)
    except (OSError, EOFError, ValueError, TypeError, KeyError):
        return None


def write_cache(
    cache_file: str,
    stack: LayerStack,
    fingerprint: tuple[str, int, int] | None = None,
    *,
    make_dir: bool = True,
) -> bool:
    """Best effort: the cache only saves time, so a caller that cannot write it
    (otto in system mode) simply parses YAML next time. `fingerprint` is the source's,
    taken before it was parsed, so an edit during the parse leaves the cache stale.
    Without make_dir, only into a cache directory that exists."""
    data = {
        "format": CACHE_FORMAT,
        "fingerprint": fingerprint or _fingerprint(stack.source),
        "layers": [layer.as_tuple() for layer in stack.layers],
    }
    tmp = f"{cache_file}.{os.getpid()}.tmp"
    try:
        if make_dir and os.path.dirname(cache_file):
            os.makedirs(os.path.dirname(cache_file), exist_ok=True)
        with open(tmp, "wb") as f:
            marshal.dump(data, f)
        os.chmod(tmp, 0o644)
        os.replace(tmp, cache_file)
        return True
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        return False


def load(paths: Paths) -> LayerStack:
    """The layer stack: from the compiled cache when it is fresh, else from YAML
    (validated; raises ConfigError listing every problem). Compiling the cache again
    compiles the fast path's file too (fast.py), when this caller may write them."""
    cache_file = paths.stack_cache
    source = stack_file(paths.layers_file)
    # Taken before the stack is read, cached or parsed: the fast path's file records it,
    # so an edit while we read leaves that file stale too (the launcher then hands on).
    try:
        fingerprint: tuple[str, int, int] | None = _fingerprint(source)
    except OSError:
        fingerprint = None
    cached = read_cache(cache_file, source)
    if cached is not None:
        _refresh_fast(cached, paths, fingerprint)
        return cached
    # Only for a stale or missing cache: config.py imports yaml (docs/design.md, "The hot
    # path"). config.py does not import this module, so this is no cycle.
    from layershell.layers import config

    stack = config.load_stack(source)
    # Into the cache core init made, never a new one: `sudo core --root /typo list`
    # must leave /typo as it found it.
    if fingerprint is not None and write_cache(cache_file, stack, fingerprint, make_dir=False):
        _refresh_fast(stack, paths, fingerprint)
    return stack


def for_caller(paths: Paths) -> LayerStack:
    """The stack as `core` acts on it: in rootless mode every layer is the caller's."""
    layers = load(paths)
    if paths.mode == "rootless":
        import pwd

        layers = layers.with_account(pwd.getpwuid(os.getuid()).pw_name)
    return layers


def _refresh_fast(
    layers: LayerStack, paths: Paths, fingerprint: tuple[str, int, int] | None
) -> None:
    """The fast path's file (fast.py) follows the stack; only its writer pays for it."""
    if fingerprint is not None and os.access(paths.cache_dir, os.W_OK):
        from layershell.layers import fast

        fast.refresh(layers, paths, fingerprint)
