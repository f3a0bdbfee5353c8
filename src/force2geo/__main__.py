"""``python -m force2geo ...``: the ``force2geo`` command, where no entry point is installed."""

import sys

from force2geo.cli.main import main

sys.exit(main())
