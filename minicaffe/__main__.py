"""``python -m minicaffe`` runs the command line, as the ``minicaffe`` script does."""

from .cli import main

main()
