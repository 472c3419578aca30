"""``python -m uar`` runs the ``uar`` command line."""

import sys

from uar.cli import main

sys.exit(main())
