"""``python -m ctloop.cli``: the ``ctloop`` command, e.g. from another environment's python."""

import sys

from ctloop.cli import main

sys.exit(main())
