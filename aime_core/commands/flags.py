"""Turn config dataclass fields into command-line flags, and flags back into config overrides."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, get_type_hints

from aime_core.config import ConfigError


def add_config_flags(
    parser: argparse.ArgumentParser,
    cls: type,
    names: list[str] | None = None,
    renames: dict[str, str] | None = None,
) -> None:
    """Add `--name` (and `--name-with-hyphens`) for each field of `cls`; help comes from the field's docs.

    `renames` maps a field to its flag name when the command uses another one (e.g. data_path -> out).
    Every flag defaults to None, meaning "not given", so presets and environment variables still apply.
    """
    renames = renames or {}
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if names is not None and f.name not in names:
            continue
        flag = renames.get(f.name, f.name)
        spellings = [f"--{flag}"]
        if "_" in flag:
            spellings.append(f"--{flag.replace('_', '-')}")
        hint = hints[f.name]
        base = next((a for a in getattr(hint, "__args__", (hint,)) if a is not type(None)), hint)
        help_text = f.metadata.get("help", "")
        if base is bool:
            parser.add_argument(
                *spellings, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        else:
            metavar = flag.upper() if base is str else base.__name__.upper()
            parser.add_argument(*spellings, dest=f.name, default=None, metavar=metavar, help=help_text)


def overrides_from(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The flags the user actually gave, as config overrides."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in vars(args).items() if k in names and v is not None}


def config_error_exit(exc: ConfigError) -> int:
    import sys

    print(f"aime: error: {exc}", file=sys.stderr)
    return 2
