"""``python -m pugfast``: the same command line as ``pugfast``."""

import sys

from .cli import main

sys.exit(main())
