"""`python -m layershell` is `core`."""

from layershell.cli.core import main

main()
