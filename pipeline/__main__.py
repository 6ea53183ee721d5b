"""`python -m pipeline` is the `colorize` command."""

import sys

from pipeline.cli import main

sys.exit(main())
