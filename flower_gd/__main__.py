"""`python -m flower_gd` runs the CLI."""

from flower_gd.cli import main

main()
