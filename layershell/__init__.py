"""layershell: layered chroot user environments for image-based hosts.

Kept empty on purpose: `layer-shell` imports this package on every call, so nothing
here may cost time (see docs/design.md, "The hot path").
"""

__version__ = "0.1.0"
