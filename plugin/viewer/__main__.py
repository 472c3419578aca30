"""``python -m plugin.viewer``: the ``uar viewer`` command."""

import sys

from plugin.viewer.cli import main

sys.exit(main())
