"""`aime data info PATH`: validate a dataset file and print its summary."""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser("data", help="inspect HDF5 datasets", description="Inspect HDF5 datasets.")
    sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    info = sub.add_parser("info", help="validate a dataset and print its summary")
    info.add_argument("path", help="HDF5 file written by `aime collect`")
    info.add_argument("--json", action="store_true", help="print the summary as JSON")
    info.set_defaults(func=run_info)


def run_info(args: argparse.Namespace) -> int:
    from aime_core.h5io import DataError, format_info, read_info

    try:
        info = read_info(args.path)
    except DataError as exc:
        print(f"aime: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0
