"""`python -m aime_core`: the library's commands (collect, data, train, evaluate, checks, sweep)."""

import sys

from aime_core.cli import main

sys.exit(main())
