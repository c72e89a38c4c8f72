"""Where this layershell runs from: the system extension, a venv, or a checkout.

Three things depend on it (docs/boot.md, "Paths on the host"):

- the accounts' login shell: /usr/bin/layer-shell from the extension (it exists as soon
  as systemd-sysext merges the image), else the launcher core init writes into the bin
  directory (/usr/local/bin/layer-shell);
- where layershell's units come from: the extension ships them in /usr/lib/systemd/system
  (running /usr/bin/core); any other installation gets copies in /etc/systemd/system from
  core init (running /usr/local/bin/core);
- what `core --version` says.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from enum import Enum

# The extension's layout (layershell/host/sysext.py builds it): one frozen program under
# /usr/lib/layershell, linked as both commands from /usr/bin.
EXTENSION_APP = "/usr/lib/layershell"
EXTENSION_CORE = "/usr/bin/core"
EXTENSION_SHELL = "/usr/bin/layer-shell"
# What a pip or dev.sh installation's units run (dev.sh links it to the venv's core).
INSTALLED_CORE = "/usr/local/bin/core"
# layershell's own units (units/): name -> enabled (None: started only by another of
# them, e.g. a service its .path unit starts). core init enables them by preset, core
# ignition through Ignition, the extension through TARGET (sysext.py).
UNITS: dict[str, bool | None] = {
    "layershell-firstboot.service": True,
    "layershell-mounts.service": True,
    "layershell-inbox.path": True,
    "layershell-inbox.service": None,
    "layershell-update.timer": True,
    "layershell-update.service": None,
    "layershell-os-update.service": True,
    "layershell-repair.path": True,
    "layershell-repair.service": None,
}
ENABLED = tuple(name for name, enabled in UNITS.items() if enabled)
TARGET = "layershell.target"
# Installed on a host with the extension, outside the image (systemd must know it before
# the image is merged): it makes systemd 252 load the image's units (units/).
EXTENSION_UNIT = "layershell-extension.service"


# systemd's names (os-release ARCHITECTURE=) for uname -m.
ARCHITECTURES = {
    "x86_64": "x86-64",
    "aarch64": "arm64",
    "armv7l": "arm",
    "ppc64le": "ppc64-le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}


class Kind(str, Enum):
    extension = "extension"  # the frozen program of the system extension image
    venv = "venv"
    checkout = "checkout"  # imported from a source tree (PYTHONPATH, python -m)
    python = "python"  # an interpreter's own site-packages


@dataclass(frozen=True)
class Origin:
    kind: Kind
    where: str  # the application directory, the venv, the checkout or sys.prefix

    def describe(self) -> str:
        return f"{self.kind.value} {self.where}"


def detect() -> Origin:
    if getattr(sys, "frozen", False):
        return Origin(Kind.extension, os.path.dirname(os.path.realpath(sys.executable)))
    package = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
    top = os.path.dirname(package)
    if os.path.exists(os.path.join(top, "pyproject.toml")):
        return Origin(Kind.checkout, top)
    if sys.prefix != sys.base_prefix:
        return Origin(Kind.venv, sys.prefix)
    return Origin(Kind.python, sys.prefix)


EXTENSION_RELEASE = "/usr/lib/extension-release.d/extension-release.layershell"


def from_extension() -> bool:
    """core is the extension's program, merged into this host's /usr: frozen, started
    from /usr/lib/layershell, and the image's extension-release present. A frozen copy
    run from anywhere else (an image extracted for a test) does not count."""
    return (
        bool(getattr(sys, "frozen", False))
        and os.path.realpath(sys.executable) == os.path.join(EXTENSION_APP, "layershell")
        and os.path.exists(EXTENSION_RELEASE)
    )


def version_text(version: str) -> str:
    """`core --version`: the version, then what runs and from where."""
    return f"core, version {version}\nrunning from: {detect().describe()}"
