"""`python -m layershell.packages.unpack ARCHIVE TARGET [--max-...]`: the unpacker on its
own, every limit an option; it prints a JSON summary (docs/packages.md, "Limits")."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from layershell.errors import LayershellError
from layershell.packages.unpack.archive import unpack
from layershell.packages.unpack.limits import Limits

# --- command line: run as the layer's account in a subprocess ---------------------------


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    defaults = Limits()
    parser = argparse.ArgumentParser(
        prog="python -m layershell.packages.unpack",
        description="Unpack a package archive into a new directory, refusing unsafe entries.",
    )
    parser.add_argument("archive")
    parser.add_argument("target", help="the directory to create (its parent must exist)")
    parser.add_argument("--max-bytes", type=_positive, default=defaults.max_total_bytes)
    parser.add_argument("--max-files", type=_positive, default=defaults.max_files)
    parser.add_argument("--max-ratio", type=float, default=defaults.max_ratio)
    parser.add_argument("--max-path-length", type=_positive, default=defaults.max_path_length)
    parser.add_argument("--max-name-length", type=_positive, default=defaults.max_name_length)
    parser.add_argument("--max-depth", type=_positive, default=defaults.max_depth)
    args = parser.parse_args(argv)
    limits = Limits(
        max_total_bytes=args.max_bytes,
        max_files=args.max_files,
        max_ratio=args.max_ratio,
        max_path_length=args.max_path_length,
        max_name_length=args.max_name_length,
        max_depth=args.max_depth,
    )
    try:
        result = unpack(args.archive, args.target, limits)
    except LayershellError as exc:
        sys.stderr.write(f"{parser.prog}: error: {exc.message}\n")
        if exc.hint:
            sys.stderr.write(f"  hint: {exc.hint}\n")
        return exc.exit_code
    sys.stdout.write(json.dumps(asdict(result), sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
