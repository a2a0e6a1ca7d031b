"""``python -m blockmask.cli``: the ``blockmask`` command."""

import sys

from blockmask.cli.main import main

sys.exit(main())
