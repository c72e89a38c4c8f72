"""Every rule for a name layershell reads, writes or builds a path from, in one table:
packages, versions, architectures, digests, executables, URL schemes and streams.

Each module that checks a name imports its rule from here, so a package name the
manifest accepts is one the repository, the record and the shims accept too (they
disagreed: `node_exporter` installed by reference but was refused in a manifest, and an
executable `_helper` was accepted by the manifest and dropped by the shims). It needs
re, so the `layer-shell` hot path (docs/design.md) does not import it.
"""

from __future__ import annotations

import re

# A package: letters, digits, '.', '_', '+', '-', starting with a letter or digit. The
# last '_' of `<name>_<version>` separates the two, which is why a version has none.
PACKAGE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._+-]*\Z")
PACKAGE_HINT = "use letters, digits, '.', '_', '+' or '-', starting with a letter or digit"
VERSION = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9.+~-]*\Z")
VERSION_HINT = "use letters, digits, '.', '+', '~' and '-' (for example v0.0.1)"
ARCH = re.compile(r"\A[a-z0-9][a-z0-9_]*\Z")  # as `uname -m` prints it
SHA256 = re.compile(r"\A[0-9a-f]{64}\Z")  # lower-case hex, as written
# A program in a package's bin/ that gets a shim: a file name that is not hidden and is
# not an option, nor `_name` (bash-completion and zsh treat `_name` as a function).
EXECUTABLE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._+@-]*\Z")
EXECUTABLE_HINT = "use letters, digits, '.', '_', '+', '@' or '-', starting with a letter or digit"
SCHEMES = ("file", "http", "https", "ftp")  # where a repository can be
STREAMS = ("stable", "next", "testing")  # in the order a version reaches them, last first
# In every file layershell writes where others write too (shims, units, completions,
# launcher, PAM file): what it may rewrite or remove; a file without it is someone else's.
MARKER = "# Managed by layershell"
