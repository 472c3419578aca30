"""``python -m plugin.node run|status|echo`` (same as ``uar node ...``)."""

import sys

from plugin.node.cli import main

sys.exit(main())
