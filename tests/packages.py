"""Build packages and repositories for tests: real tarballs, real index files."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from layershell.packages import repo

if TYPE_CHECKING:
    from tests.signing import Key

ARCH = repo.host_arch()


def tarball(
    path: Path,
    files: dict[str, bytes | str],
    *,
    modes: dict[str, int] | None = None,
) -> Path:
    """A .tar.gz at `path` holding `files` (name -> content); bin/* are executable."""
    modes = modes or {}
    with tarfile.open(path, "w:gz") as tar:
        dirs: set[str] = set()
        for name, content in sorted(files.items()):
            parts = name.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d not in dirs:
                    dirs.add(d)
                    info = tarfile.TarInfo(d)
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o755
                    tar.addfile(info)
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = modes.get(name, 0o755 if name.startswith("bin/") else 0o644)
            tar.addfile(info, io.BytesIO(data))
    os.chmod(path, 0o644)
    return path


def program(name: str, version: str) -> dict[str, bytes | str]:
    return {f"bin/{name}": f'#!/bin/sh\necho "{name} {version}"\n'}


class Repository:
    """<root>/<arch>/<name>_<version>.tar.gz plus index.json, readable by everyone."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.arch_dir = root / ARCH
        self.arch_dir.mkdir(parents=True, exist_ok=True)
        for p in (root, self.arch_dir):
            p.chmod(0o755)

    def add(
        self,
        name: str,
        version: str,
        files: dict[str, bytes | str] | None = None,
        modes: dict[str, int] | None = None,
    ) -> Path:
        path = self.arch_dir / f"{name}_{version}.tar.gz"
        return tarball(path, files or program(name, version), modes=modes)

    def streams(self, text: str) -> None:
        (self.arch_dir / "streams.yaml").write_text(text)

    def index(self, *, sign: Key | bool | None = True, **options: Any) -> None:
        """index.json and SHA256SUMS, signed by the suite's key (tests/signing.py) unless
        `sign` is False or another key."""
        from tests import signing

        streams = self.arch_dir / "streams.yaml"
        by = signing.key() if sign is True else sign or None
        repo.write_index(
            str(self.arch_dir),
            ARCH,
            str(streams) if streams.exists() else None,
            sign=by.fingerprint if by else None,
            gnupg_home=by.home if by else None,
            **options,
        )
        for p in self.arch_dir.iterdir():
            p.chmod(0o644)

    @property
    def file_url(self) -> str:
        return f"file://{self.root}"
