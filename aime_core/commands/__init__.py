"""Subcommands of `aime`; see aime_core/cli.py."""
