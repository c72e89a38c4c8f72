"""A repository's layout: the file names of an <arch> directory, and where it is.

<repository>/<arch>/<name>_<version>.tar.gz    (or .tar, .tar.xz, .tar.zst)
<repository>/<arch>/index.json                 every artifact, its sha256 and streams
<repository>/<arch>/SHA256SUMS, SHA256SUMS.gpg what the publisher signed
"""

from __future__ import annotations

from layershell import names

INDEX_NAME = "index.json"
SUMS_NAME = "SHA256SUMS"  # what a signature covers: index.json and the tarballs
SIGNATURE_NAME = "SHA256SUMS.gpg"  # its detached OpenPGP signature

# Longest first, so "goss_1.tar.gz" is not read as version "1.tar" with extension ".gz".
TARBALL_EXTENSIONS = (".tar.gz", ".tar.xz", ".tar.zst", ".tar")

# Names may contain "_" (node_exporter), versions may not: the last "_" of
# `<name>_<version>` is the separator.
# The rules are names.py's, under the names the repo package has always used.
NAME_RE, VERSION_RE, ARCH_RE, SHA256_RE = names.PACKAGE, names.VERSION, names.ARCH, names.SHA256


def arch_url(repository: str, arch: str) -> str:
    """The URL of a repository's directory for one arch."""
    return f"{repository.rstrip('/')}/{arch}"


def index_url(repository: str, arch: str) -> str:
    return f"{arch_url(repository, arch)}/{INDEX_NAME}"


def split_artifact_name(file_name: str) -> tuple[str, str, str] | None:
    """(name, version, extension) of `<name>_<version>.tar[.gz|.xz|.zst]`, else None."""
    for ext in TARBALL_EXTENSIONS:
        if file_name.endswith(ext):
            stem = file_name[: -len(ext)]
            name, sep, version = stem.rpartition("_")
            if sep and NAME_RE.match(name) and VERSION_RE.match(version):
                return name, version, ext
            return None
    return None
