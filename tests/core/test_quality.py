"""Training for what generation does, and scoring it honestly (#9): overshooting, the likelihood scale, both
trivial baselines over all and moving pixels, the state probe, and their errors."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from aime_core.checkpoint_eval import evaluate_checkpoint
from aime_core.config import ConfigError, resolve_collect, resolve_train
from aime_core.data import DataError, EpisodeStore, dataset_split, file_frame_stats, read_info
from aime_core.evaluate import MOVING_STD, Baselines, evaluate
from aime_core.loaders import ClipFeeder, first_clips
from aime_core.model import AIME
from aime_core.model.aime import as_float
from aime_core.sinks import Sink
from aime_core.train import TrainError, train
from aime_core.trainer import autocast


def debug_model(**overrides) -> AIME:
    torch.manual_seed(0)
    cfg = resolve_train(1, "debug", overrides=overrides, env={})
    return AIME.from_config(cfg, 2)


def test_overshooting_one_step_is_the_one_step_prior_prediction_loss():
    model = debug_model(overshoot_steps=1)
    model.stochastic = False  # posterior means, median sticks: the two computations see the same z
    g = torch.Generator().manual_seed(1)
    frames = torch.randint(0, 256, (2, 6, 3, 32, 32), dtype=torch.uint8, generator=g)
    actions = torch.rand(2, 6, 2, generator=g) * 2 - 1
    _, terms, _ = model(frames, actions)
    # Direct: the teacher-forced h_{t+1} (it saw the posterior z_t), the prior's mixture mean there, decoded.
    x = as_float(frames)
    tokens, emb = model.encoder(x, model.decoder.mean_image)
    obs, _ = model.observe(emb, model.context(tokens), actions, sample=False)
    z = model.prior_latent(obs["h"][:, 1:], obs["c_hat"][:, :-1])  # p(z_{t+1} | h_{t+1}, c^_t)
    pred = model.decoder(z, obs["h"][:, 1:])
    direct = model.recon_scale * ((pred - x[:, 1:]) ** 2).sum((-3, -2, -1)).mean()
    torch.testing.assert_close(terms["overshoot"], direct, rtol=1e-5, atol=1e-6)
    # More steps add open-loop pairs: a different (and larger on an untrained model) value, still finite.
    model.overshoot_steps = 4
    _, terms4, _ = model(frames, actions)
    assert torch.isfinite(terms4["overshoot"]) and not torch.isclose(terms4["overshoot"], direct)


def test_overshoot_fraction_scores_a_random_share_with_the_same_mean():
    """Decoding a random share of the open-loop predictions is the full term in expectation (and its gradient
    reaches every module the full term reaches); 1 is every prediction; 0 or above 1 is refused."""
    model = debug_model(overshoot_steps=4)
    model.stochastic = False
    g = torch.Generator().manual_seed(2)
    frames = torch.randint(0, 256, (4, 6, 3, 32, 32), dtype=torch.uint8, generator=g)
    actions = torch.rand(4, 6, 2, generator=g) * 2 - 1
    full = model(frames, actions)[1]["overshoot"].detach()
    model.overshoot_fraction = 0.25
    torch.manual_seed(0)
    draws = torch.stack([model(frames, actions)[1]["overshoot"].detach() for _ in range(60)])
    assert torch.isfinite(draws).all() and draws.std() > 0  # a different share each step
    assert abs(draws.mean() - full) < 4 * draws.std() / 60**0.5 + 1e-3 * full  # unbiased: within the noise
    loss = model(frames, actions)[1]["overshoot"]
    loss.backward()
    assert all(p.grad is not None for p in model.dynamics.parameters())  # the open loop is still trained
    with pytest.raises(ConfigError, match=r"overshoot_fraction: must be in \(0, 1\]"):
        resolve_train(1, "debug", overrides={"overshoot_fraction": 0}, env={})
    with pytest.raises(ConfigError, match="overshoot_fraction"):
        resolve_train(1, "debug", overrides={"overshoot_fraction": 1.5}, env={})


def test_recon_std_sets_the_likelihood_weight():
    assert debug_model(recon_std=1.0).recon_scale == pytest.approx(0.5)
    assert debug_model(recon_std=0.1).recon_scale == pytest.approx(50.0)
    with pytest.raises(ConfigError, match="recon_std"):
        resolve_train(1, "debug", overrides={"recon_std": 0}, env={})
    with pytest.raises(ConfigError, match="overshoot_steps: must be below video_length"):
        resolve_train(1, "debug", overrides={"overshoot_steps": 6}, env={})
    with pytest.raises(ConfigError, match="rollout_latent: must be one of mean, mode"):
        resolve_train(1, "debug", overrides={"rollout_latent": "median"}, env={})


class Metrics(Sink):
    def __init__(self):
        self.rows, self.evals = [], []

    def metrics(self, step, values, epoch=None):
        if "loss/overshoot" in values:
            self.rows.append(values)

    def event(self, kind, payload):
        if kind == "eval":
            self.evals.append(dict(payload))


def test_new_loss_terms_are_finite_and_fall_on_synthetic_data(synthetic_dataset, tmp_path):
    over = {"data_path": synthetic_dataset, "synthetic": True, "checkpoint_dir": str(tmp_path), "device": "cpu",
            "num_epochs": 8, "overshoot_steps": 3, "video_clips": 0, "eval_every": 8}  # fmt: skip
    sink = Metrics()
    assert train(resolve_train(1, "debug", overrides=over, env={}), sink).status == "succeeded"
    for key in ("loss/overshoot", "loss/recon", "loss"):
        trace = [r[key] for r in sink.rows]
        assert len(trace) == 40 and all(np.isfinite(trace)), key
        assert np.mean(trace[-5:]) < 0.8 * np.mean(trace[:5]), (key, trace[:5], trace[-5:])
    ev = sink.evals[-1]
    assert len(ev["ratio"]) == len(ev["horizon"]) == len(ev["mean_frame_mse"]) == 3


def test_baselines_and_moving_pixels_match_numpy(synthetic_dataset):
    info = read_info(synthetic_dataset)
    train_ids, val_ids = dataset_split(info, 0.1)
    train_store, val_store = (
        EpisodeStore.load(synthetic_dataset, train_ids),
        EpisodeStore.load(synthetic_dataset, val_ids),
    )
    mean, std = train_store.frame_stats()
    # The streaming file reader gives the same statistics as the in-memory store, and both match numpy.
    np.testing.assert_array_equal(
        np.stack(file_frame_stats(synthetic_dataset, train_ids)), np.stack([mean, std])
    )
    every = np.concatenate(train_store.observations).astype(np.float64) / 255
    np.testing.assert_allclose(mean, every.mean(0), atol=1e-6)
    np.testing.assert_allclose(std, every.std(0), atol=1e-5)
    base = Baselines.from_stats(mean, std, "cpu")
    moving = every.std(0).max(-1) > MOVING_STD
    assert 0 < moving.mean() < 1 and np.array_equal(base.moving.numpy(), moving)

    model, k = debug_model(), 2
    clips = list(first_clips(ClipFeeder(val_store, 6, torch.device("cpu"), "always", 0, stride=1), 9, 4))
    res = evaluate(model, iter(clips), k, False, lambda: autocast(torch.device("cpu"), None), base)
    gt = np.concatenate([c[0].numpy() for c in clips]).astype(np.float64) / 255  # [N,T,3,H,W]
    fut = gt[:, k:]
    copy = ((gt[:, k - 1 : k] - fut) ** 2).reshape(*fut.shape[:2], -1).mean(-1).mean(0)
    mframe = ((mean.transpose(2, 0, 1)[None, None] - fut) ** 2).reshape(*fut.shape[:2], -1).mean(-1).mean(0)
    mframe_moving = ((mean.transpose(2, 0, 1)[None, None] - fut) ** 2).mean(2)[..., moving].mean(-1).mean(0)
    np.testing.assert_allclose(res["copy_last_mse"], copy, rtol=1e-5)
    np.testing.assert_allclose(res["mean_frame_mse"], mframe, rtol=1e-5)
    np.testing.assert_allclose(res["mean_frame_mse_moving"], mframe_moving, rtol=1e-5)
    with torch.no_grad():
        pred = torch.cat([model.generate(f[:, :k], a, k) for f, a in clips]).double().numpy()
    roll = ((pred[:, k:] - fut) ** 2).reshape(*fut.shape[:2], -1).mean(-1).mean(0)
    np.testing.assert_allclose(res["rollout_mse"], roll, rtol=1e-4)
    np.testing.assert_allclose(res["ratio"], roll / np.minimum(copy, mframe), rtol=1e-4)
    assert res["clips"] == 9


def test_validation_split_is_fixed_by_the_dataset_not_the_training_seed(synthetic_dataset):
    info = read_info(synthetic_dataset)
    assert dataset_split(info, 0.2) == dataset_split(dict(info), 0.2)
    splits = set()
    for seed in range(3):
        cfg = resolve_train(1, "debug", overrides={"seed": seed, "val_fraction": 0.2}, env={})
        splits.add(tuple(dataset_split(info, cfg.val_fraction)[1]))
    assert len(splits) == 1


def test_action_repeat_is_checked_against_the_time_limit_and_read_from_the_file(tmp_path):
    assert resolve_collect(1, env={}).action_repeat == 4
    assert resolve_collect(2, env={}).action_repeat == 2
    assert resolve_collect(3, env={}).action_repeat == 1
    assert resolve_collect(1, env={"AIME_ACTION_REPEAT": "2"}).action_repeat == 2
    with pytest.raises(ConfigError, match=r"action_repeat: 4 x max_steps 500 = 2000 control steps exceeds the "
                       r"1000-step time limit of reacher-easy; allowed: action_repeat <= 2"):  # fmt: skip
        resolve_collect(2, overrides={"action_repeat": 4}, env={})


def test_dm_control_time_limits_are_the_ones_the_config_assumes():
    from dm_control import suite

    from aime_core.config import DMC_STEP_LIMIT, DMC_TASKS, UNLIMITED_DOMAINS

    for domain, tasks in DMC_TASKS.items():
        env = suite.load(domain, tasks[0])
        expected = float("inf") if domain in UNLIMITED_DOMAINS else DMC_STEP_LIMIT
        assert env._step_limit == expected, domain


def test_states_are_scored_through_a_probe_and_their_absence_is_a_clear_error(cartpole_dataset, tmp_path):
    # A file without states (format 1 layout): the probe is skipped, or refused when asked for.
    bare = tmp_path / "bare.hdf5"
    with h5py.File(cartpole_dataset) as src, h5py.File(bare, "w") as dst:
        for key, value in src.attrs.items():
            dst.attrs[key] = value
        for name in src:
            src.copy(name, dst)
            del dst[name]["states"]
    assert read_info(bare)["state_dim"] == 0 and read_info(cartpole_dataset)["state_dim"] == 5
    feeder = ClipFeeder(EpisodeStore.load(bare, [0]), 6, torch.device("cpu"), "always", 0)
    with pytest.raises(DataError, match="has no physics states"):
        next(feeder.batches(2, 0, 0, with_states=True))

    over = {"data_path": cartpole_dataset, "checkpoint_dir": str(tmp_path / "run"), "device": "cpu",
            "num_epochs": 1, "video_clips": 0, "val_fraction": 0.5, "rollout_context": 2}  # fmt: skip
    sink = Metrics()
    assert train(resolve_train(1, "debug", overrides=over, env={}), sink).status == "succeeded"
    ev = sink.evals[-1]
    assert len(ev["state_ratio"]) == len(ev["horizon"]) == 4 and np.isfinite(ev["state_ratio"]).all()
    assert min(ev["mean_state_mse"]) > 0 and min(ev["copy_last_state_mse"]) > 0 and ev["state_probe_mse"] >= 0
    res = evaluate_checkpoint(tmp_path / "run" / "last.pt", device="cpu", states=True)
    np.testing.assert_allclose(res["state_mse"], ev["state_mse"], rtol=1e-5)
    with pytest.raises(TrainError, match=r"bare.hdf5 has no physics states .*recollect"):
        evaluate_checkpoint(tmp_path / "run" / "last.pt", device="cpu", data=str(bare), states=True)


def test_rollout_samples_average_sampled_rollouts_reproducibly_without_touching_the_training_rng():
    model = debug_model(rollout_samples=3).eval()
    g = torch.Generator().manual_seed(2)
    frames = torch.randint(0, 256, (2, 8, 3, 32, 32), dtype=torch.uint8, generator=g)
    actions = torch.rand(2, 8, 2, generator=g) * 2 - 1
    torch.manual_seed(7)
    before = torch.get_rng_state()
    avg = model.rollout(frames[:, :3], actions, 3)
    assert torch.equal(torch.get_rng_state(), before)  # the training stream did not move
    again = model.rollout(frames[:, :3], actions, 3)
    for key in ("frames", "h", "z"):
        torch.testing.assert_close(avg[key], again[key], rtol=0, atol=0)
    # Direct: three sampled rollouts from the same fixed stream, averaged.
    torch.manual_seed(0)
    runs = [model.rollout(frames[:, :3], actions, 3, sample=True) for _ in range(3)]
    torch.testing.assert_close(avg["frames"], sum(r["frames"] for r in runs) / 3)
    assert not torch.allclose(runs[0]["frames"][:, 3:], runs[1]["frames"][:, 3:])  # they do differ
    # Observed frames are reconstructions either way; one rollout of the mixture mean differs from the average.
    single = debug_model(rollout_samples=1).eval()
    single.load_state_dict(model.state_dict())
    one = single.rollout(frames[:, :3], actions, 3)
    torch.testing.assert_close(avg["frames"][:, :3], one["frames"][:, :3])
    assert not torch.allclose(avg["frames"][:, 3:], one["frames"][:, 3:])
    with pytest.raises(ConfigError, match="rollout_samples: must be a positive number"):
        resolve_train(1, "debug", overrides={"rollout_samples": 0}, env={})
