"""``python -m dcopt`` runs the CLI."""

from dcopt.cli import main

main()
