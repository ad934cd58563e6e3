"""Real DeepMind Control collection: layout, alignment, determinism across workers, every recommended task."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest

from aime_core.collect import CollectError, collect, part_path
from aime_core.config import RECOMMENDED_TASKS, resolve_collect
from aime_core.envs import DmcEnv
from aime_core.h5io import FORMAT_VERSION, read_info

pytestmark = pytest.mark.slow

ACTION_DIMS = {
    "pendulum": 1,
    "cartpole": 1,
    "reacher": 2,
    "ball_in_cup": 2,
    "finger": 2,
    "cheetah": 6,
    "walker": 6,
    "humanoid": 21,
}


def _cfg(path, **overrides):
    return resolve_collect(1, "debug", overrides={"data_path": str(path), "workers": 1, **overrides}, env={})


def _arrays(path):
    with h5py.File(path) as f:
        return {
            f"{name}/{k}": f[f"{name}/{k}"][()]
            for name in f
            for k in ("observations", "actions", "rewards", "dones", "first_observation")
        }


def test_cartpole_layout_dtypes_and_dones(cartpole_dataset):
    with h5py.File(cartpole_dataset) as f:
        a = f.attrs
        assert a["format_version"] == FORMAT_VERSION
        assert (a["domain"], a["task"], a["seed"], a["img_size"], a["camera_id"]) == (
            "cartpole",
            "swingup",
            0,
            32,
            0,
        )
        assert (a["num_episodes"], a["frames"], a["tier"], a["max_steps"], a["action_repeat"]) == (
            2,
            24,
            1,
            12,
            4,  # the tier-1 preset's action repeat: frames that move
        )
        assert (
            list(a["action_shape"]) == [1]
            and list(a["action_minimum"]) == [-1]
            and list(a["action_maximum"]) == [1]
        )
        assert (
            not a["fast_render"]
            and a["render_backend"] == "egl"
            and a["created_at"]
            and a["collector_version"]
        )
        assert sorted(f) == ["episode_0", "episode_1"]
        for name in f:
            g = f[name]
            assert g["observations"].dtype == np.uint8 and g["observations"].shape == (12, 32, 32, 3)
            assert g["observations"].chunks == (1, 32, 32, 3) and g["observations"].compression == "lzf"
            assert g["actions"].dtype == np.float32 and g["actions"].shape == (12, 1)
            assert g["rewards"].dtype == np.float32 and g["rewards"].shape == (12,)
            assert g["dones"].dtype == np.bool_ and g["dones"][()].tolist() == [False] * 11 + [True]
            assert g["first_observation"].dtype == np.uint8 and g["first_observation"].shape == (32, 32, 3)
            assert np.all(np.abs(g["actions"][()]) <= 1.0) and np.all(
                (g["rewards"][()] >= 0) & (g["rewards"][()] <= 1)
            )
        # Episode i is seeded with seed + i: different episodes, different actions.
        assert not np.array_equal(f["episode_0/actions"][()], f["episode_1/actions"][()])


def test_observations_align_with_the_action_that_produced_them(cartpole_dataset):
    arrays = _arrays(cartpole_dataset)
    with h5py.File(cartpole_dataset) as f:
        repeat = int(f.attrs["action_repeat"])
        states = {i: f[f"episode_{i}/states"][()] for i in range(2)}
    env = DmcEnv("cartpole", "swingup", 32, 0, repeat, fast_render=False)
    assert math.isinf(env.env._step_limit)  # episodes may run past the task's own time limit
    try:
        for i in range(2):
            # cart position, cos/sin of the pole angle, cart and pole velocity
            assert states[i].dtype == np.float32 and states[i].shape == (12, 5)
            assert np.array_equal(env.reset(seed=i), arrays[f"episode_{i}/first_observation"])
            for t in range(12):
                frame, reward, last = env.step(arrays[f"episode_{i}/actions"][t])
                assert np.array_equal(frame, arrays[f"episode_{i}/observations"][t]), (i, t)
                # states[t] is the physics state the frame shows: after actions[t], repeated `repeat` times
                assert np.array_equal(env.state(), states[i][t]), (i, t)
                assert reward == pytest.approx(arrays[f"episode_{i}/rewards"][t], rel=1e-6)
                assert not last
    finally:
        env.close()
    obs = arrays["episode_0/observations"]
    assert len({obs[t].tobytes() for t in range(12)}) > 6  # the cart moves: frames differ


def test_same_seed_same_arrays_whatever_the_worker_count(tmp_path):
    one = collect(_cfg(tmp_path / "w1.hdf5", num_episodes=3, max_steps=10, workers=1))
    two = collect(_cfg(tmp_path / "w2.hdf5", num_episodes=3, max_steps=10, workers=2))
    a, b = _arrays(one.path), _arrays(two.path)
    assert a.keys() == b.keys() and len(a) == 15
    for key in a:
        assert np.array_equal(a[key], b[key]), key
    other = _arrays(collect(_cfg(tmp_path / "s1.hdf5", num_episodes=3, max_steps=10, seed=1)).path)
    # Seed 1's episode 0 is seed 0's episode 1 (episode i uses seed + i); its episode 0 is new.
    assert np.array_equal(other["episode_0/actions"], a["episode_1/actions"])
    assert not np.array_equal(other["episode_0/actions"], a["episode_0/actions"])


def test_fast_render_is_recorded_and_changes_only_the_look(tmp_path):
    fast = collect(_cfg(tmp_path / "fast.hdf5", num_episodes=1, max_steps=4, fast_render=True))
    slow = collect(_cfg(tmp_path / "slow.hdf5", num_episodes=1, max_steps=4))
    assert read_info(fast.path)["fast_render"] is True and read_info(slow.path)["fast_render"] is False
    a, b = _arrays(fast.path), _arrays(slow.path)
    assert np.array_equal(a["episode_0/actions"], b["episode_0/actions"])
    assert np.array_equal(a["episode_0/rewards"], b["episode_0/rewards"])
    diff = np.abs(a["episode_0/observations"].astype(int) - b["episode_0/observations"]).mean()
    assert 0.5 < diff < 40  # same scene, without shadows/reflections/anti-aliasing


def test_existing_final_file_is_kept(tmp_path, cartpole_dataset):
    cfg = _cfg(cartpole_dataset, num_episodes=2, max_steps=12)
    before = _arrays(cartpole_dataset)
    result = collect(cfg)  # the same command again: nothing to do
    assert (result.episodes, result.frames, result.resumed_episodes) == (2, 24, 2)
    assert all(np.array_equal(before[k], v) for k, v in _arrays(cartpole_dataset).items())
    with pytest.raises(
        CollectError, match="already exists with other settings .*img_size: file=32, command=40"
    ):
        collect(_cfg(cartpole_dataset, num_episodes=2, max_steps=12, img_size=40))
    assert not part_path(cartpole_dataset).exists()


@pytest.mark.parametrize("domain,task", RECOMMENDED_TASKS, ids=[f"{d}-{t}" for d, t in RECOMMENDED_TASKS])
def test_every_recommended_task_collects(tmp_path, domain, task):
    result = collect(_cfg(tmp_path / "d.hdf5", domain=domain, task=task, num_episodes=1, max_steps=5))
    info = read_info(result.path)
    assert (info["domain"], info["task"], info["episodes"], info["frames"]) == (domain, task, 1, 5)
    assert info["action_dim"] == ACTION_DIMS[domain]
    with h5py.File(result.path) as f:
        obs = f["episode_0/observations"][()]
        first = f["episode_0/first_observation"][()]
    assert obs.shape == (5, 32, 32, 3) and obs.std() > 5  # a real picture, not a blank frame
    assert not np.array_equal(obs[-1], first)  # random actions move something in 5 steps


@pytest.mark.parametrize("domain,task", [("cartpole", "swingup"), ("walker", "walk"), ("reacher", "easy")])
@pytest.mark.parametrize("fast", [False, True])
def test_collector_frames_equal_plain_physics_render(domain, task, fast):
    """The collector's rendering shortcuts (reused camera, frame-sized buffer) leave every pixel unchanged."""
    from dm_control import suite

    ours = DmcEnv(domain, task, 48, 0, 1, fast_render=fast)
    plain = suite.load(domain, task, task_kwargs={"random": 0, "time_limit": float("inf")})
    flags = None
    if fast:
        plain.physics.model.vis.quality.offsamples = 0
        flags = {"shadow": False, "reflection": False}
    try:
        plain.task._random = np.random.RandomState(5)
        plain.reset()
        assert np.array_equal(
            ours.reset(5), plain.physics.render(48, 48, camera_id=0, render_flag_overrides=flags)
        )
        rng = np.random.RandomState(0)
        for _ in range(4):
            action = rng.uniform(ours.action_minimum, ours.action_maximum).astype(np.float32)
            frame, reward, _ = ours.step(action)
            ts = plain.step(action)
            assert np.array_equal(
                frame, plain.physics.render(48, 48, camera_id=0, render_flag_overrides=flags)
            )
            assert reward == ts.reward
    finally:
        ours.close()
        plain.close()


def test_action_repeat_steps_the_physics_n_times_per_frame_and_sums_rewards(tmp_path):
    from dm_control import suite

    result = collect(_cfg(tmp_path / "ar.hdf5", num_episodes=1, max_steps=5, action_repeat=3))
    arrays = _arrays(result.path)
    assert read_info(result.path)["action_repeat"] == 3
    plain = suite.load("cartpole", "swingup", task_kwargs={"random": 0, "time_limit": float("inf")})
    plain.task._random = np.random.RandomState(0)
    plain.reset()
    for t in range(5):
        rewards = [plain.step(arrays["episode_0/actions"][t]).reward for _ in range(3)]
        assert arrays["episode_0/rewards"][t] == pytest.approx(sum(rewards), rel=1e-6)
        frame = plain.physics.render(32, 32, camera_id=0)
        assert np.array_equal(frame, arrays["episode_0/observations"][t])
    plain.close()
