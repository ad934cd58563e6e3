"""The AIME model on the debug sizes: shapes, causality, extrapolation, KL terms, generation consistency."""

import math

import pytest
import torch

from aime_core.commands.checks import check_generation
from aime_core.config import resolve_train
from aime_core.model import AIME
from aime_core.model.dpgmm import (
    kl_gamma,
    kl_kumaraswamy_beta,
    kumaraswamy_log_sample,
    mixture_log_prob,
    stick_log_weights,
)
from aime_core.trainer import Trainer

B, T, A, S = 2, 6, 2, 32
VARIANTS = [(False, False), (True, False), (False, True), (True, True)]


def debug_model(use_3d=False, down=False, seed=0) -> AIME:
    torch.manual_seed(seed)
    cfg = resolve_train(1, "debug", overrides={"use_3d_conv": use_3d, "temporal_downsample": down}, env={})
    return AIME.from_config(cfg, A)


def clip(seed=0, length=T):
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (B, length, 3, S, S), dtype=torch.uint8, generator=g)
    return frames, torch.rand(B, length, A, generator=g) * 2 - 1


@pytest.mark.parametrize("use_3d, down", VARIANTS)
def test_shapes_and_finite_loss(use_3d, down):
    model = debug_model(use_3d, down)
    frames, actions = clip()
    tokens, emb = model.encoder(frames.float() / 255)
    assert tokens.shape == (B, T, 8 * 8, model.encoder.out_channels) and emb.shape == (B, T, 32)
    assert model.context(tokens).shape == (B, T, 16)  # one context per step, also when downsampled
    loss, terms, log_pi = model(frames, actions)
    assert set(terms) == {"recon", "kl_z", "kl_sticks", "kl_alpha", "context_pred", "overshoot"}
    assert torch.isfinite(loss) and all(torch.isfinite(v) for v in terms.values())
    assert log_pi.shape == (B, T, 3)
    assert torch.allclose(log_pi.exp().sum(-1), torch.ones(B, T), atol=1e-5)
    loss.backward()
    for name in ("encoder", "context", "posterior", "prior", "dynamics", "decoder"):
        grads = [p.grad for p in getattr(model, name).parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads), name
    assert model.generate(frames[:, :2], actions, 2).shape == (B, T, 3, S, S)


@pytest.mark.parametrize("use_3d, down", VARIANTS)
def test_context_is_causal_and_extrapolates(use_3d, down):
    model = debug_model(use_3d, down)
    frames, _ = clip(length=3 * T)  # three times the training clip length
    x = frames.float() / 255
    ctx = model.context(model.encoder(x)[0])
    assert ctx.shape == (B, 3 * T, 16) and torch.isfinite(ctx).all()
    for t in (0, 3, 7):
        changed = x.clone()
        changed[:, t + 1 :] = torch.rand_like(changed[:, t + 1 :])
        ctx2 = model.context(model.encoder(changed)[0])
        assert torch.allclose(ctx[:, : t + 1], ctx2[:, : t + 1], atol=1e-6), f"c_<={t} saw frame {t + 1}"
        assert not torch.allclose(ctx[:, t + 2 :], ctx2[:, t + 2 :]), "later contexts must see the change"


def test_generation_matches_teacher_forcing_and_runs_past_training_length():
    model = debug_model()
    frames, actions = clip(length=12)
    assert check_generation(model, frames, actions, context=3, lengths=(3, 10, 20), train_len=T) == []
    gen = model.generate(frames[:, :3], torch.cat([actions, actions], 1), 3)  # 24 steps = 4x training length
    assert gen.shape == (B, 24, 3, S, S) and torch.isfinite(gen).all()
    assert gen.min() >= 0 and gen.max() <= 1


def test_kumaraswamy_beta_kl_is_nonnegative_and_matches_monte_carlo():
    a = torch.tensor([0.5, 1.0, 2.0, 5.0, 0.8])
    b = torch.tensor([0.7, 1.0, 3.0, 2.0, 4.0])
    alpha = 1.5
    closed = kl_kumaraswamy_beta(a, b, torch.tensor(alpha), torch.tensor(math.log(alpha)))
    assert (closed >= -1e-4).all()
    # Monte Carlo: E_q[log q(v) - log Beta(v; 1, alpha)] with many samples.
    torch.manual_seed(0)
    u = torch.rand(400_000, 5, dtype=torch.float64).clamp(1e-9, 1 - 1e-9)
    a64, b64 = a.double(), b.double()
    log_v, log_1mv = kumaraswamy_log_sample(a64, b64, u)
    log_q = torch.log(a64 * b64) + (a64 - 1) * log_v + (b64 - 1) * torch.log1p(-torch.exp(a64 * log_v))
    log_p = math.log(alpha) + (alpha - 1) * log_1mv
    mc = (log_q - log_p).mean(0).float()
    assert torch.allclose(closed, mc, atol=0.05, rtol=0.05), (closed, mc)


def test_gamma_kl_zero_at_equality_positive_elsewhere():
    assert abs(float(kl_gamma(torch.tensor(2.0), torch.tensor(3.0), 2.0, 3.0))) < 1e-6
    for aq, bq in [(0.5, 1.0), (3.0, 0.5), (1.2, 2.0)]:
        assert float(kl_gamma(torch.tensor(aq), torch.tensor(bq), 1.0, 1.0)) > 0


def test_stick_weights_sum_to_one_and_mixture_kl_is_nonnegative_on_average():
    torch.manual_seed(0)
    u = torch.rand(1000, 4)
    log_pi = stick_log_weights(*kumaraswamy_log_sample(torch.full((4,), 1.0), torch.full((4,), 2.0), u))
    assert torch.allclose(log_pi.exp().sum(-1), torch.ones(1000), atol=1e-5)
    # KL(q || mixture) >= 0 in expectation; the one-sample estimator averages to it.
    mu_q, std_q = torch.tensor([0.3, -0.2]), torch.tensor([0.5, 0.8])
    z = mu_q + std_q * torch.randn(200_000, 2)
    comp_mu, comp_std = torch.randn(3, 2), torch.rand(3, 2) + 0.5
    lp = torch.log(torch.tensor([0.5, 0.3, 0.2]))
    log_q = (-0.5 * ((z - mu_q) / std_q) ** 2 - torch.log(std_q) - 0.5 * math.log(2 * math.pi)).sum(-1)
    kl = (log_q - mixture_log_prob(z, lp, comp_mu, comp_std)).mean()
    assert kl > 0
    # ... and is ~0 when the mixture is the posterior itself.
    same = mixture_log_prob(
        z,
        torch.log(torch.tensor([1.0 - 2e-6, 1e-6, 1e-6])),
        torch.stack([mu_q] * 3),
        torch.stack([std_q] * 3),
    )
    assert abs(float((log_q - same).mean())) < 1e-3


def test_bf16_autocast_step_runs_on_cpu():
    cfg = resolve_train(1, "debug", overrides={"amp": True, "device": "cpu"}, env={})
    model = debug_model()
    trainer = Trainer(model, cfg, torch.device("cpu"))
    assert trainer.dtype == torch.bfloat16 and not trainer.scaler.is_enabled()
    before = [p.detach().clone() for p in model.parameters()]
    res = trainer.train_step([clip()])
    assert res.nonfinite is None and math.isfinite(res.loss)
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))
    assert {"loss/recon", "grad_norm/decoder", "dpgmm/effective_components", "perf/clips_per_s"} <= set(
        res.values
    )
