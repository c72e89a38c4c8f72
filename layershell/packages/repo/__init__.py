"""Repositories: references, version ordering, the host's arch and OS version, the index.

A repository is a directory tree, local or remote:

    <repository>/<arch>/<name>_<version>.tar.gz    (or .tar, .tar.xz, .tar.zst)
    <repository>/<arch>/<name>_latest              optional: a version, or a symlink
    <repository>/<arch>/index.json                 every artifact, its sha256 and streams

A reference names one package version in it: `<protocol>:<repository>/<arch>/<name>_<version>`.
This package parses and checks those names and reads and writes the index; choosing a
version is plan.py's job, fetching fetch's. docs/repository.md describes the formats.

One module per concern: `layout` (file names, URLs of an arch directory), `reference`
(references and repository URLs, passwords kept out of messages), `host` (the host's
arch and OS version), `versions` (their order), `index` (index.json and `<name>_latest`,
as clients read them), `publish` (indexing, SHA256SUMS and signing, as publishers write
them). The names below are what the rest of layershell uses; the others live in their
module.
"""

from __future__ import annotations

from layershell.packages.repo.layout import (
    INDEX_NAME,
    NAME_RE,
    SHA256_RE,
    SIGNATURE_NAME,
    SUMS_NAME,
    VERSION_RE,
    arch_url,
    index_url,
    split_artifact_name,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from layershell.packages.repo.host import host_arch, host_os_version
    from layershell.packages.repo.index import (
        LATEST,
        STREAMS,
        expiry_time,
        latest_version,
        parse_index,
        read_latest,
    )
    from layershell.packages.repo.publish import write_index
    from layershell.packages.repo.reference import (
        CREDENTIALS_HINT,
        check_repository,
        credentials_refusal,
        has_credentials,
        parse_reference,
        redact_url,
    )
    from layershell.packages.repo.versions import version_key

# The name rules (layout) are what most readers import this package for (core list reads
# records with them); the rest is imported on first use: the index (urllib, datetime),
# the host (ipaddress), references, version order, and publish (hashing, signing).
_LAZY = {
    "host": ("host_arch", "host_os_version"),
    "index": ("LATEST", "STREAMS", "expiry_time", "latest_version", "parse_index", "read_latest"),
    "publish": ("write_index",),
    "reference": (
        "CREDENTIALS_HINT", "check_repository", "credentials_refusal", "has_credentials",
        "parse_reference", "redact_url",
    ),
    "versions": ("version_key",),
}  # fmt: skip
_WHERE = {name: module for module, names in _LAZY.items() for name in names}


def __getattr__(name: str) -> object:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(name)
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # once: the next lookup is a plain global
    return value


__all__ = [
    "CREDENTIALS_HINT",
    "INDEX_NAME",
    "LATEST",
    "NAME_RE",
    "SHA256_RE",
    "SIGNATURE_NAME",
    "STREAMS",
    "SUMS_NAME",
    "VERSION_RE",
    "arch_url",
    "check_repository",
    "credentials_refusal",
    "expiry_time",
    "has_credentials",
    "host_arch",
    "host_os_version",
    "index_url",
    "latest_version",
    "parse_index",
    "parse_reference",
    "read_latest",
    "redact_url",
    "split_artifact_name",
    "version_key",
    "write_index",
]
