"""``python -m mcicl``: the same entry point as the ``mcicl`` console script."""

import sys

from mcicl.analysis.cli import main

sys.exit(main())
