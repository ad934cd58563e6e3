"""The installed `aime` command: the library's subcommands (aime_core/cli.py) plus the service's `aime up` and
`aime worker` (worker/commands.py), in one parser. `python -m worker.cli` is the same command."""

from __future__ import annotations

import sys

from aime_core import cli as core

# The service's commands sit before `sweep` in `aime --help`, where they always were.
MODULES = (*core.COMMAND_MODULES[:-1], "worker.commands", core.COMMAND_MODULES[-1])
assert core.COMMAND_MODULES[-1] == "aime_core.commands.sweep"


def main(argv: list[str] | None = None) -> int:
    return core.main(argv, MODULES)


if __name__ == "__main__":
    sys.exit(main())
