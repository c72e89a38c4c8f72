"""Click commands: thin modules that parse, call the library, and print."""


def main() -> None:
    """`core`: a plain `core list` answered at once (quick.py), anything else by click."""
    import sys

    from layershell.cli import quick

    quick.main(sys.argv[1:])
    from layershell.cli.core import main as click_main

    click_main()
