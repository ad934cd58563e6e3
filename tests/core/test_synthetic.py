"""The procedural bouncing ball: action-driven, bounded, deterministic, and drawn where it is."""

from __future__ import annotations

import h5py
import numpy as np

from aime_core.synthetic import BALL_COLOR, BALL_RADIUS, TARGET, BouncingBall


def _ball_centre(frame: np.ndarray) -> np.ndarray:
    """Centroid (x, y) in pixels of the ball-coloured pixels."""
    mask = np.all(np.abs(frame.astype(int) - BALL_COLOR.astype(int)) < 20, axis=-1)
    ys, xs = np.nonzero(mask)
    assert len(xs) > 5
    return np.array([xs.mean(), ys.mean()])


def test_actions_push_the_ball():
    right, left = BouncingBall(64), BouncingBall(64)
    right.reset(0), left.reset(0)
    start = right.pos.copy()
    for _ in range(5):
        right.step(np.array([1.0, 0.0]))
        left.step(np.array([-1.0, 0.0]))
    assert right.pos[0] > left.pos[0] + 0.1
    assert abs(right.pos[1] - left.pos[1]) < 1e-9  # x actions do not move y
    assert not np.allclose(right.pos, start)


def test_ball_bounces_and_stays_inside():
    env = BouncingBall(32)
    env.reset(1)
    xs = []
    for _ in range(200):
        env.step(np.array([1.0, 0.3]))  # keep pushing into the right wall
        assert np.all(env.pos >= BALL_RADIUS - 1e-9) and np.all(env.pos <= 1 - BALL_RADIUS + 1e-9)
        xs.append(env.pos[0])
    assert max(xs) > 1 - BALL_RADIUS - 0.02  # it reached the wall
    assert np.any(np.diff(xs) < 0)  # and came back off it


def test_frames_show_the_ball_where_it_is_and_reward_peaks_on_target():
    env = BouncingBall(64)
    frame = env.reset(3)
    assert frame.dtype == np.uint8 and frame.shape == (64, 64, 3)
    for _ in range(10):
        frame, _ = env.step(np.array([0.5, -0.5]))
        wall = 64 // 16
        expected = env.pos * (64 - 2 * wall) + wall - 0.5  # box units -> pixel centre
        assert np.abs(_ball_centre(frame) - expected).max() < 1.0
    env.pos, env.vel = TARGET.copy(), np.zeros(2)
    _, on_target = env.step(np.zeros(2))
    env.pos, env.vel = np.array([0.15, 0.85]), np.zeros(2)
    _, far = env.step(np.zeros(2))
    assert on_target > 0.99 and far < 0.1


def test_same_seed_same_episode():
    a, b = BouncingBall(32), BouncingBall(32)
    assert np.array_equal(a.reset(7), b.reset(7))
    assert not np.array_equal(a.reset(7), BouncingBall(32).reset(8))
    for t in range(20):
        act = np.array([np.sin(t), np.cos(t)])
        fa, ra = a.step(act)
        fb, rb = b.step(act)
        assert np.array_equal(fa, fb) and ra == rb


def test_synthetic_dataset_moves_and_matches_its_actions(synthetic_dataset):
    with h5py.File(synthetic_dataset) as f:
        assert f.attrs["synthetic"] and f.attrs["domain"] == "synthetic"
        obs, act = f["episode_0/observations"][()], f["episode_0/actions"][()]
        first = f["episode_0/first_observation"][()]
    centres = np.array([_ball_centre(o) for o in obs])
    assert np.abs(np.diff(centres, axis=0)).sum(axis=1).mean() > 0.3  # the ball moves frame to frame
    # Replaying the stored actions from the episode's seed reproduces every stored frame.
    env = BouncingBall(32)
    assert np.array_equal(env.reset(0), first)
    for t in range(len(obs)):
        assert np.array_equal(env.step(act[t])[0], obs[t])
