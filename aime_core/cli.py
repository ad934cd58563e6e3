"""The library's command line (`python -m aime_core`): collect, data, train, evaluate, checks, sweep. Each
subcommand lives in aime_core/commands/<name>.py and imports heavy libraries (torch, dm_control) only when it
runs, so `aime --help` stays instant. The installed `aime` command (worker/cli.py) adds the service's
`aime up` and `aime worker`."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# Modules that each define `register(subparsers)`; the order is the order in `aime --help`.
COMMAND_MODULES = (
    "aime_core.commands.collect",
    "aime_core.commands.data",
    "aime_core.commands.train",
    "aime_core.commands.evaluate",
    "aime_core.commands.checks",
    "aime_core.commands.sweep",
)


def build_parser(modules: tuple[str, ...] = COMMAND_MODULES) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aime",
        description="AIME world model on DeepMind Control, in three tiers: collect data, train, run the dashboard.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # a command module not written yet; its siblings still work
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None, modules: tuple[str, ...] = COMMAND_MODULES) -> int:
    parser = build_parser(modules)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:
        # `aime data info X | head`: the reader went away. Quiet exit like coreutils; silence the final flush.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        print("aime: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
