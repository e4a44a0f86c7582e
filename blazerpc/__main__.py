"""`python -m blazerpc` is the `blaze` command; worker processes are started this way."""

from blazerpc.cli import main

main()
