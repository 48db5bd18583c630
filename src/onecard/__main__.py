"""``python -m onecard``: the same as the ``onecard`` console script."""

from onecard.cli import main

main()
