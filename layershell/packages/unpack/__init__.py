"""Unpack a package archive into a new directory, refusing anything unsafe.

A package may only ever become files, directories and links inside its own directory.
Every entry is checked BEFORE anything is written for it, and any refusal or error
removes the partly unpacked directory, so the caller sees a whole package or nothing.

What is refused (UnsafeArchive):
- names that are absolute, empty, contain a `..` component or a NUL byte, or are longer
  than the limits; names that are not valid UTF-8: they cannot be shown, compared or
  typed reliably, and no real package needs them, so refusing is simpler to reason about
  than inventing an escaping scheme that every later stage would have to understand;
- device nodes, FIFOs, sparse files and every other type than file, directory, symbolic
  link and hard link;
- symbolic links to absolute paths or leading outside the package. A link target is
  checked lexically: its leading `..` components may climb at most to the package
  directory, and no `..` may follow a name (`a/../..`), because `a` could itself be a
  link and the kernel resolves `..` from where `a` points, not lexically. This is
  stricter than a plain lexical resolution and, unlike it, sound;
- hard links to anything but a regular file unpacked earlier from the same archive;
- an entry naming a path that an earlier entry already created (same name twice, a file
  where a directory was, a directory where a file was), or a path that goes through an
  earlier symbolic link or file: the classic escape is `link -> ../x`, then `link/file`;
- more entries, more bytes, or a higher expansion ratio than the Limits allow. The
  ratio is checked as the stream is decompressed, so a bomb stops after a few MiB;
- anything that is not a tar archive, plain or compressed with gzip, xz or zstd, and
  archives that are damaged or truncated.

What is neutralised, and reported in UnpackResult.stripped: setuid, setgid and sticky
bits, and group or world write permission (files and directories keep at most 0755).
Owners are never taken from the archive: everything belongs to the process that unpacks
(the layer's account). Directories always keep owner rwx so the package stays removable.

Writes go through directory file descriptors opened one component at a time with
O_NOFOLLOW, and files are created with O_EXCL|O_NOFOLLOW, so a symbolic link planted
concurrently cannot redirect a write outside the target.

One module per step: `archive` (scan() and unpack(), the target made or removed),
`reading` (format, metering, decompression), `tarstream` (strict tar headers, read
without tarfile), `writing` (each entry checked, then written), `limits`, `errors`;
`__main__` is the command line (`python -m layershell.packages.unpack`). The names
below are what the rest of layershell uses; the others live in their module.
"""

from __future__ import annotations

from layershell.packages.unpack.archive import scan, unpack
from layershell.packages.unpack.errors import show
from layershell.packages.unpack.limits import RATIO_FLOOR, Limits, depth_refusal

__all__ = ["RATIO_FLOOR", "Limits", "depth_refusal", "scan", "show", "unpack"]
