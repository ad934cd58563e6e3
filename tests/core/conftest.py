"""Tiny real datasets shared by the core tests (collection, data, model, trainer)."""

from __future__ import annotations

import pytest

from aime_core.collect import collect
from aime_core.config import resolve_collect


def collect_tiny(path, **overrides):
    """Collect a dataset with the debug preset (32 px, 24 steps, 6 episodes) plus `overrides`; returns the config."""
    cfg = resolve_collect(1, "debug", overrides={"data_path": str(path), "workers": 1, **overrides}, env={})
    collect(cfg)
    return cfg


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory) -> str:
    """Path of a synthetic bouncing-ball dataset: 6 episodes x 24 steps at 32x32, action dim 2."""
    path = tmp_path_factory.mktemp("data") / "synthetic.hdf5"
    collect_tiny(path, synthetic=True)
    return str(path)


@pytest.fixture(scope="session")
def cartpole_dataset(tmp_path_factory) -> str:
    """Path of a real cartpole-swingup dataset: 2 episodes x 12 steps at 32x32, action dim 1."""
    path = tmp_path_factory.mktemp("data") / "cartpole.hdf5"
    collect_tiny(path, num_episodes=2, max_steps=12)
    return str(path)
