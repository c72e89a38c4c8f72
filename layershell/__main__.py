"""`python -m layershell` is `core`."""

from layershell.cli import main

main()
