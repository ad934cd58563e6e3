"""Overshooting past the clip (overshoot_past_clip, #9): clips served with the frames that follow them, the open
loop of a few start frames continued into those frames, masked at the episode's end, and the config's errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_quality import Metrics  # tests/core is on the path (pytest's default import mode)

from aime_core.config import ConfigError, resolve_train
from aime_core.data import ClipDataset, EpisodeStore, GpuClipSampler, dataset_split, read_info
from aime_core.model import AIME
from aime_core.model.aime import as_float
from aime_core.train import train

T, PAST = 6, 9  # the debug preset's clips, and 9 frames after each


def store_of(path) -> EpisodeStore:
    info = read_info(path)
    train_ids, _ = dataset_split(info, 0.2)
    return EpisodeStore.load(path, train_ids)


def test_clips_come_with_the_frames_after_them_and_a_mask_at_the_episode_end(synthetic_dataset):
    store = store_of(synthetic_dataset)
    cpu = ClipDataset(store, T, past=PAST)
    dev = GpuClipSampler(store, T, "cpu", past=PAST)
    plain = ClipDataset(store, T)
    assert len(cpu) == len(dev) == len(plain)  # the same clips: only what comes with them changes
    frames, actions, valid = next(dev.batches(len(dev), shuffle=False))
    for i, (k, s) in enumerate(cpu.grid):
        obs, act = store.observations[k], store.actions[k]
        idx = np.minimum(np.arange(s, s + T + PAST), len(obs) - 1)  # past the end: the last frame, repeated
        expect_valid = np.arange(s, s + T + PAST) < len(obs)
        np.testing.assert_array_equal(frames[i].permute(0, 2, 3, 1).numpy(), obs[idx])
        np.testing.assert_array_equal(actions[i].numpy(), act[idx])
        np.testing.assert_array_equal(valid[i].numpy(), expect_valid)
        f_cpu, a_cpu, v_cpu = cpu[i]  # the DataLoader path serves the same
        assert (
            torch.equal(f_cpu, frames[i]) and torch.equal(a_cpu, actions[i]) and torch.equal(v_cpu, valid[i])
        )
        assert torch.equal(plain[i][0], frames[i, :T])  # the clip itself is unchanged
    assert valid[:, :T].all() and not valid.all()  # 24-frame episodes: the last clips run past the end


def debug_model(**overrides) -> AIME:
    torch.manual_seed(0)
    cfg = resolve_train(1, "debug", overrides={"overshoot_past_clip": PAST, **overrides}, env={})
    model = AIME.from_config(cfg, 2)
    model.stochastic = False  # posterior means, median sticks: the direct computation sees the same z
    return model


def direct_overshoot(model: AIME, frames, actions, valid, steps: int) -> torch.Tensor:
    """The term from its definition, one start frame and one depth at a time: every (t, d) with t + d inside
    the clip, plus (all starts past it) every valid target in the frames after the clip."""
    x = as_float(frames)
    tokens, emb = model.encoder(x[:, :T], model.decoder.mean_image)
    obs, _ = model.observe(emb, model.context(tokens), actions[:, :T], sample=False)
    total, count = 0.0, 0.0
    for t in range(T):
        h, cell, z, c = obs["h"][:, t], obs["cell"][:, t], obs["z"][:, t], obs["c_hat"][:, t]
        for d in range(1, steps + 1):
            if t + d >= x.shape[1]:
                break
            h, cell = model.dynamics.step(z, c, actions[:, t + d], (h, cell))
            z = model.prior_latent(h, c)
            c = model.dynamics.predict_context(h, z)
            weight = valid[:, t + d].float()
            err = ((model.decoder(z, h) - x[:, t + d]) ** 2).sum((-3, -2, -1))
            total = total + (err * weight).sum()
            count += float(weight.sum())
    return model.recon_scale * total / count


def test_overshooting_past_the_clip_matches_its_definition_and_masks_the_episode_end():
    g = torch.Generator().manual_seed(3)
    frames = torch.randint(0, 256, (3, T + PAST, 3, 32, 32), dtype=torch.uint8, generator=g)
    actions = torch.rand(3, T + PAST, 2, generator=g) * 2 - 1
    valid = torch.ones(3, T + PAST, dtype=torch.bool)
    valid[1, T + 4 :] = False  # clip 1's episode ends 4 frames after it
    steps = T - 1 + PAST
    # Every start continued past the clip, every prediction decoded: the term is its definition.
    model = debug_model(overshoot_steps=steps, overshoot_past_starts=T, overshoot_past_fraction=1.0)
    model.overshoot_fraction = 1.0
    _, terms, _ = model(frames, actions, observed=T, valid=valid)
    direct = direct_overshoot(model, frames, actions, valid, steps)
    torch.testing.assert_close(terms["overshoot"], direct, rtol=1e-5, atol=1e-5)
    # What lies past an episode's end is not scored: changing those frames changes nothing.
    garbage = frames.clone()
    garbage[1, T + 4 :] = 255 - garbage[1, T + 4 :]
    torch.testing.assert_close(
        model(garbage, actions, observed=T, valid=valid)[1]["overshoot"], terms["overshoot"]
    )
    # The other terms see only the clip: the same as the clip alone.
    _, clip_terms, _ = model(frames[:, :T], actions[:, :T])
    for key in ("recon", "kl_z", "context_pred"):
        torch.testing.assert_close(terms[key], clip_terms[key])
    # Without past starts the term is the within-clip overshooting exactly.
    model.overshoot_past_starts = 0
    inside = model(frames, actions, observed=T, valid=valid)[1]["overshoot"]
    torch.testing.assert_close(inside, clip_terms["overshoot"])
    assert not torch.isclose(inside, terms["overshoot"])


def test_overshooting_past_the_clip_trains_the_open_loop_with_a_few_random_starts():
    g = torch.Generator().manual_seed(4)
    frames = torch.randint(0, 256, (4, T + PAST, 3, 32, 32), dtype=torch.uint8, generator=g)
    actions = torch.rand(4, T + PAST, 2, generator=g) * 2 - 1
    valid = torch.ones(4, T + PAST, dtype=torch.bool)
    model = debug_model(overshoot_steps=T - 1 + PAST, overshoot_past_starts=2, overshoot_past_fraction=0.5)
    torch.manual_seed(0)
    draws = torch.stack(
        [model(frames, actions, observed=T, valid=valid)[1]["overshoot"].detach() for _ in range(8)]
    )
    assert torch.isfinite(draws).all() and draws.std() > 0  # different starts and predictions each step
    loss = model(frames, actions, observed=T, valid=valid)[1]["overshoot"]
    loss.backward()
    # The open loop trains the dynamics, the prior (all but its concentration, which only kl_alpha sees) and
    # the decoder.
    for name, module in (("dynamics", model.dynamics), ("prior", model.prior), ("decoder", model.decoder)):
        for pname, p in module.named_parameters():
            if not pname.startswith("alpha"):
                assert p.grad is not None and torch.isfinite(p.grad).all(), (name, pname)


def test_past_starts_whose_open_loop_never_leaves_the_clip_score_nothing_extra():
    """overshoot_steps short of the clip's end: a start early in the clip never reaches past it, so that step
    scores only the within-clip pairs (and never divides by zero)."""
    g = torch.Generator().manual_seed(5)
    frames = torch.randint(0, 256, (2, T + PAST, 3, 32, 32), dtype=torch.uint8, generator=g)
    actions = torch.rand(2, T + PAST, 2, generator=g) * 2 - 1
    valid = torch.ones(2, T + PAST, dtype=torch.bool)
    model = debug_model(overshoot_steps=2, overshoot_past_starts=1, overshoot_past_fraction=1.0)
    model.overshoot_fraction = 1.0
    inside = model(frames[:, :T], actions[:, :T])[1]["overshoot"]
    values = []
    for seed in range(12):  # the one start is drawn at random: some draws stay inside the clip
        torch.manual_seed(seed)
        values.append(model(frames, actions, observed=T, valid=valid)[1]["overshoot"].detach())
    assert all(torch.isfinite(v) for v in values)
    assert any(torch.isclose(v, inside) for v in values) and not all(torch.isclose(v, inside) for v in values)


def test_a_run_overshooting_past_its_clips_trains_and_resumes_exactly(synthetic_dataset, tmp_path):
    over = {"data_path": synthetic_dataset, "synthetic": True, "device": "cpu", "video_clips": 0,
            "overshoot_past_clip": 8, "overshoot_steps": 12, "overshoot_past_fraction": 0.5,
            "num_epochs": 4, "eval_every": 4, "save_every": 2}  # fmt: skip
    sink = Metrics()  # the quality tests' sink: the rows with loss/overshoot, and the evaluations
    cfg = resolve_train(1, "debug", overrides=over | {"checkpoint_dir": str(tmp_path / "a")}, env={})
    assert train(cfg, sink).status == "succeeded"
    trace = [r["loss/overshoot"] for r in sink.rows]
    assert trace and all(np.isfinite(trace)), trace
    assert sink.evals and np.isfinite(sink.evals[-1]["ratio"]).all()
    # Stopped mid-run and resumed, the run ends exactly where the uninterrupted one did (the random starts
    # and the random share of decoded predictions included).
    part = resolve_train(1, "debug", overrides=over | {"checkpoint_dir": str(tmp_path / "b")}, env={})
    calls = iter(range(100))
    assert train(part, should_stop=lambda: next(calls) >= 7).status == "cancelled"
    rest = resolve_train(1, "debug", env={}, overrides=over | {
        "checkpoint_dir": str(tmp_path / "b"), "resume": str(tmp_path / "b" / "last.pt")})  # fmt: skip
    assert train(rest).status == "succeeded"
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_overshooting_past_the_clip_config_errors_say_what_is_allowed():
    with pytest.raises(
        ConfigError,
        match=r"overshoot_steps: must be below video_length \(6\) \+ overshoot_past_clip 4: 0 to 9, got 10",
    ):
        resolve_train(1, "debug", overrides={"overshoot_past_clip": 4, "overshoot_steps": 10}, env={})
    with pytest.raises(
        ConfigError, match=r"overshoot_steps: .*0 to 5, got 6 \(overshoot_past_clip scores frames past"
    ):
        resolve_train(1, "debug", overrides={"overshoot_steps": 6}, env={})
    with pytest.raises(ConfigError, match="overshoot_past_clip: must be >= 0"):
        resolve_train(1, "debug", overrides={"overshoot_past_clip": -1}, env={})
    with pytest.raises(ConfigError, match="overshoot_past_starts: must be >= 0"):
        resolve_train(1, "debug", overrides={"overshoot_past_starts": -2}, env={})
    with pytest.raises(ConfigError, match=r"overshoot_past_fraction: must be in \(0, 1\]"):
        resolve_train(1, "debug", overrides={"overshoot_past_fraction": 0}, env={})
