"""`python -m pipeline` is the `colorize` command."""

import sys

from .cli import main

sys.exit(main())
