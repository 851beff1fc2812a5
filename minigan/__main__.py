"""``python -m minigan ...`` runs the command line (see :mod:`minigan.cli`)."""

import sys

from .cli import main

sys.exit(main())
