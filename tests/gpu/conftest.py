"""Fixtures of the CUDA tests. Nothing here imports dm_control or mujoco: the GPU machine may lack them."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory) -> str:
    """A synthetic bouncing-ball dataset (no MuJoCo): 6 episodes x 24 steps at 32x32, action dim 2."""
    from aime_core.collect import collect
    from aime_core.config import resolve_collect

    path = tmp_path_factory.mktemp("data") / "synthetic.hdf5"
    over = {"data_path": str(path), "workers": 1, "synthetic": True}
    collect(resolve_collect(1, "debug", overrides=over, env={}))
    return str(path)
