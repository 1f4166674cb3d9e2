"""``python -m excamera ...``: the same as the ``excamera`` console script."""

from excamera.cli import run

run()
