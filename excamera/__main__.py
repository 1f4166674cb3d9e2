"""``python -m excamera ...``: the same as the ``excamera`` console script."""

import sys

from excamera.cli import main

sys.exit(main())
