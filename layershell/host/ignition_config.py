"""The Ignition config `core ignition` renders, independent of its format (ignition.py
writes it as Ignition JSON or as Butane): the files, links, directories, users and units
a provisioned host gets, the packages and the system extension image among them, and
how a file's contents reach the host (a URL Ignition fetches, or a data: URL)."""

from __future__ import annotations

import base64
import os
import urllib.parse
from dataclasses import dataclass

from layershell.errors import LayershellError
from layershell.paths import Paths

# Where things go on the provisioned host (system mode, root "/").
HOST = Paths.system("/")
LAYER_SHELL = os.path.join(HOST.bin_dir, "layer-shell")
INBOX_USER_MODE = 0o750  # root writes (Ignition, `core inbox`), the account's group reads
FILE_MODE = 0o644
DIR_MODE = 0o755
# Ignition fetches these itself; a file from anywhere else is embedded as a data: URL.
FETCHED_BY_IGNITION = ("http", "https")


class RenderError(LayershellError):
    """The manifest is valid, but it cannot become an Ignition config as it is."""

    exit_code = 1


@dataclass(frozen=True)
class File:
    path: str
    source: str  # an http(s) URL or a data: URL
    mode: int = FILE_MODE
    owner: str | None = None  # account and group name; None = root
    sha256: str | None = None


@dataclass(frozen=True)
class Link:
    path: str
    target: str


@dataclass(frozen=True)
class Directory:
    path: str
    mode: int = DIR_MODE
    owner: str | None = None
    group: str | None = None


@dataclass(frozen=True)
class User:
    name: str
    home: str
    shell: str = LAYER_SHELL


@dataclass(frozen=True)
class Unit:
    name: str
    contents: str | None  # None: a unit the host already has (systemd's, the extension's)
    enabled: bool | None = None
    dropins: tuple[tuple[str, str], ...] = ()  # (name, contents)


@dataclass(frozen=True)
class Package:
    """One package as rendered: what was resolved and how the host gets it."""

    name: str
    version: str
    url: str
    sha256: str
    inbox_path: str
    embedded: bool
    size: int | None


@dataclass(frozen=True)
class Extension:
    """layershell's system extension image, as rendered (docs/boot.md)."""

    name: str  # layershell-<version>-<arch>.raw
    version: str
    source: str  # the URL Ignition fetches, or the local file embedded
    sha256: str
    embedded: bool
    path: str  # where the host keeps it; ignition_sysext.EXTENSION_LINK points here


@dataclass(frozen=True)
class Config:
    """Everything the host gets, in a stable order (paths sorted, users in stack order)."""

    files: tuple[File, ...]
    directories: tuple[Directory, ...]
    users: tuple[User, ...]
    units: tuple[Unit, ...]
    packages: tuple[Package, ...]
    links: tuple[Link, ...] = ()
    extension: Extension | None = None


def scheme(url: str) -> str:
    return urllib.parse.urlsplit(url).scheme.lower()


def data_url(data: bytes) -> str:
    """RFC 2397, base64: for tarballs."""
    return "data:;base64," + base64.b64encode(data).decode("ascii")


def text_data_url(data: bytes) -> str:
    """RFC 2397, percent-encoded: for text, which stays readable in the config."""
    return "data:," + urllib.parse.quote_from_bytes(data, safe="/")
