"""Where a run writes: the one function the command line, the API and the worker all ask."""

from __future__ import annotations

from pathlib import Path


def run_dir(
    checkpoint_dir: str | None, name: str, run_id: int | None = None, root: str | Path = "checkpoints"
) -> Path:
    """A run's directory.

    From the command line (no `run_id`): `checkpoint_dir` as given, else `checkpoints/<name>`. For a run of the
    service (`run_id` given): an absolute `checkpoint_dir` as given, else `<root>/<run_id>-<name>` (`root` is
    the data directory's runs/), so nothing lands relative to a server's or worker's working directory."""
    if run_id is None:
        return Path(checkpoint_dir) if checkpoint_dir else Path(root) / name
    chosen = Path(checkpoint_dir) if checkpoint_dir else None
    return chosen if chosen is not None and chosen.is_absolute() else Path(root) / f"{run_id}-{name}"
