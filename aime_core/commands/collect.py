"""`aime collect`: pixel episodes of a DeepMind Control task (or the synthetic ball) into one HDF5 file."""

from __future__ import annotations

import argparse
import sys

from aime_core.commands.flags import add_config_flags, config_error_exit, overrides_from
from aime_core.config import CollectConfig, ConfigError, resolve_collect, run_name

RENAMES = {"num_episodes": "episodes", "data_path": "out"}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "collect",
        help="collect pixel episodes with random actions into an HDF5 dataset",
        description="Collect episodes with uniform random actions into data/{domain}-{task}-tier{N}-seed{S}.hdf5 "
        "(AIME_DOMAIN, AIME_TASK, AIME_NUM_EPISODES, AIME_SEED, AIME_DATA_PATH are honoured). "
        "Parallel, deterministic and resumable: re-run the same command after an interruption. "
        "Defaults come from the tier preset (see README).",
    )
    add_config_flags(p, CollectConfig, renames=RENAMES)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        cfg = resolve_collect(overrides=overrides_from(args, CollectConfig))
    except ConfigError as exc:
        return config_error_exit(exc)

    from aime_core.collect import CollectError, collect, part_path
    from aime_core.envs import RenderError
    from aime_core.h5io import DataError, format_info, read_info
    from aime_core.sinks import TerminalSink

    sink = TerminalSink(desc=run_name(cfg))
    try:
        result = collect(cfg, sink)
    except (CollectError, RenderError, DataError) as exc:
        sink.close()
        print(f"aime: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        sink.close()
        print(
            f"\ninterrupted: finished episodes are kept in {part_path(cfg.data_path)}; "
            "run the same command again to resume",
            file=sys.stderr,
        )
        return 130
    sink.close()
    if result.resumed_episodes:
        print(f"resumed from {result.resumed_episodes} finished episode(s)")
    print(format_info(read_info(result.path)))
    print(f"collected {result.frames} frames in {result.seconds:.1f} s; saved to {result.path}")
    return 0
