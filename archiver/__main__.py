"""`python -m archiver` runs the CLI."""

from archiver.cli import console_main

console_main()
