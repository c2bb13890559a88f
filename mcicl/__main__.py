"""``python -m mcicl``: the same entry point as the ``mcicl`` console script."""

import sys

from mcicl.app.cli import main

sys.exit(main())
