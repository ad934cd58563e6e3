"""One optimiser step: AMP, gradient accumulation, clipping, the NaN guard and the step's metrics."""

from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from dataclasses import dataclass

import torch

from aime_core.model import LOSS_TERMS, MODULES
from aime_core.nan_guard import NonFinite, bad_terms, module_grad_norms


def amp_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    """bf16 where the device supports it (CPU, recent CUDA), fp16 (with a grad scaler) otherwise."""
    if not enabled:
        return None
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Mixed precision in `dtype` on `device`, or nothing when dtype is None (AMP off)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def count_syncs(fn) -> int:
    """Synchronising CUDA calls made by fn(), as torch.cuda.set_sync_debug_mode('warn') reports them."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message).lower() for w in caught)


@dataclass
class StepResult:
    loss: float  # NaN on an unlogged step (reading it would cost a device sync)
    values: dict[str, float]  # metric key -> value, as sent to the sinks; empty on an unlogged step
    nonfinite: NonFinite | None = None
    overflow: bool = False  # fp16 scaler skipped the step (expected now and then; not an error)


def lr_factor(warmup: int, total: int | None, final_ratio: float):
    """The schedule as a factor of lr at step s: a linear warm-up from 10 % over `warmup` steps, then constant, or
    (final_ratio < 1 and a known total) a cosine from 1 down to final_ratio at the run's last step.

    A pure function of the step: a resumed run continues exactly where it stopped (the scheduler's state is only
    the step count); extending num_epochs stretches what is left of the decay over the new total.
    """

    def factor(s: int) -> float:
        warm = min(1.0, 0.1 + 0.9 * s / max(1, warmup))
        if total is None or final_ratio >= 1.0 or s <= warmup:
            return warm
        progress = min(1.0, (s - warmup) / max(1, total - warmup))
        return final_ratio + (1.0 - final_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def channels_last_convs(model: torch.nn.Module) -> None:
    """2D convolution weights in channels-last layout: oneDNN's CPU convolutions then skip a reorder per call
    (measured on the cpu benchmark profile, 2 cores: 300 -> 240 ms per step; activations in channels-last too
    were no faster). Values are unchanged; 3D convolutions keep their layout (channels-last is 4D only)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            module.to(memory_format=torch.channels_last)


class Trainer:
    """Holds the optimiser state and does one step from a list of micro-batches (gradient accumulation)."""

    def __init__(
        self,
        model: torch.nn.Module,
        cfg,
        device: torch.device,
        lr_warmup_steps: int = 20,
        total_steps: int | None = None,
    ):
        self.raw_model = model
        if device.type == "cpu":
            channels_last_convs(model)
        # AIME_COMPILE_MODE (e.g. reduce-overhead: CUDA graphs) picks torch.compile's mode; measured by
        # benchmarks/gpu_check.py before any default changes.
        mode = os.environ.get("AIME_COMPILE_MODE") or None
        self.model = torch.compile(model, mode=mode) if cfg.compile else model
        self.cfg, self.device = cfg, device
        self.dtype = amp_dtype(device, cfg.amp)
        self.opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lr_factor(lr_warmup_steps, total_steps, cfg.lr_final_ratio)
        )
        use_scaler = self.dtype == torch.float16
        self.scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
        self.step = 0  # optimiser steps attempted (skipped NaN steps count: the schedule stays on the clock)
        self.epoch = 0  # epochs completed
        self.batch_in_epoch = 0
        self.nan_skips = 0
        self.best_val_loss: float | None = None
        # The moving average of the weights (ema_decay > 0), by parameter name; what evaluations use.
        self.ema: dict[str, torch.Tensor] | None = None
        if cfg.ema_decay > 0:
            self.ema = {n: p.detach().clone() for n, p in model.named_parameters()}

    def update_ema(self) -> None:
        """One step of the average. The decay warms up with the step count (as TensorFlow's moving average with
        num_updates): an average over the first few hundred steps would otherwise remember the random init."""
        if self.ema is None:
            return
        decay = min(self.cfg.ema_decay, (1.0 + self.step) / (10.0 + self.step))
        params = dict(self.raw_model.named_parameters())
        with torch.no_grad():
            for name, average in self.ema.items():
                average.lerp_(params[name], 1.0 - decay)

    @contextlib.contextmanager
    def eval_weights(self):
        """Inside: the model holds the averaged weights when there are any (evaluations, validation, videos,
        checkpoints' `ema`); the raw ones are put back on leaving, bit for bit."""
        if self.ema is None:
            yield
            return
        params = dict(self.raw_model.named_parameters())
        with torch.no_grad():
            raw = {n: params[n].detach().clone() for n in self.ema}
            for n, v in self.ema.items():
                params[n].copy_(v)
        try:
            yield
        finally:
            with torch.no_grad():
                for n, v in raw.items():
                    params[n].copy_(v)

    def autocast(self):
        return autocast(self.device, self.dtype)

    def past_clip(self, batch: tuple[torch.Tensor, ...]) -> dict:
        """The model's arguments for a batch that runs past its clips (frames, actions, valid): the clip is the
        first video_length frames, the rest overshooting's targets."""
        if len(batch) < 3:
            return {}
        return {"observed": self.cfg.video_length, "valid": batch[2]}

    def beta(self, step: int | None = None) -> float:
        step = self.step if step is None else step
        warm = self.cfg.beta_warmup_steps
        return self.cfg.kl_beta * (1.0 if warm == 0 else min(1.0, step / warm))

    def train_step(
        self,
        micro_batches: list[tuple[torch.Tensor, ...]],
        inject_nan: str | None = None,
        log: bool = True,
    ):
        """Accumulate gradients over the micro-batches (each loss / n), check them, clip, step. -> StepResult.

        Lean on purpose: an unlogged step (`log=False`) reads one flag from the device (are the loss terms and the
        gradient norm finite?) and nothing else; loss terms, per-module gradient norms and DPGMM diagnostics stay
        tensors and are only materialised on logged steps. A non-finite step is still caught at the step it
        happens, and only then are the terms and modules named (a few more syncs, once).
        """
        t0 = time.perf_counter()
        self.model.train()
        self.opt.zero_grad(set_to_none=True)
        n = len(micro_batches)
        beta = self.beta()
        sums = {k: torch.zeros((), device=self.device) for k in LOSS_TERMS}
        total = torch.zeros((), device=self.device)
        log_pis = []
        for i, batch in enumerate(micro_batches):
            frames, actions = batch[:2]
            with self.autocast():
                loss, terms, log_pi = self.model(
                    frames,
                    actions,
                    **self.past_clip(batch),
                    beta=beta,
                    context_weight=self.cfg.context_pred_weight,
                    free_nats=self.cfg.free_nats,
                    kl_balance=self.cfg.kl_balance,
                    overshoot_weight=self.cfg.overshoot_weight,
                    inject_nan=inject_nan if i == 0 else None,
                )
            # Backward even when a term is NaN: the report names the modules whose gradients it poisons.
            # Gradients are taken of the loss per pixel (a fixed scale, so Adam's steps are unchanged): the
            # summed reconstruction otherwise makes gradient norms ~1e4 at 32 px and grad_clip=100 starved the
            # encoder (measured: no learning in 360 steps); per pixel, grad_clip means the same at every size.
            pixels = frames.shape[-3] * frames.shape[-2] * frames.shape[-1]
            self.scaler.scale(loss / (n * pixels)).backward()
            for k in LOSS_TERMS:
                sums[k] = sums[k] + terms[k].detach().float() / n
            total = total + loss.detach().float() / n
            if log:
                log_pis.append(log_pi.detach())
        self.scaler.unscale_(self.opt)
        params = [p for p in self.raw_model.parameters() if p.grad is not None]
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params])  # NaN/Inf if any gradient is
        finite = torch.isfinite(torch.stack([total, *sums.values()])).all() & torch.isfinite(grad_norm)
        self.step += 1
        if not bool(finite):  # the one host sync of an unlogged step
            bad = bad_terms({**sums, "loss": total})
            bad_modules = [
                m for m, v in module_grad_norms(self.raw_model, MODULES).items() if not math.isfinite(v)
            ]
            # fp16: inf gradients with finite terms are an overflow the scaler handles by skipping the step.
            if bad or not self.scaler.is_enabled():
                self.opt.zero_grad(set_to_none=True)
                report = NonFinite(
                    self.step, self.epoch + 1, {k: v for k, v in bad.items() if k != "loss"}, bad_modules
                )
                if not report.terms and "loss" in bad:
                    report.terms = {"loss": bad["loss"]}
                return StepResult(float("nan"), {}, nonfinite=report)
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grads_with_norm_(params, self.cfg.grad_clip, grad_norm)
        scale_before = self.scaler.get_scale() if self.scaler.is_enabled() else None  # fp16 only
        lr = self.opt.param_groups[0]["lr"]
        self.scaler.step(self.opt)  # with fp16, skipped when the scaled gradients overflowed
        self.scaler.update()
        overflow = scale_before is not None and self.scaler.get_scale() < scale_before
        self.sched.step()
        self.update_ema()
        if not log:
            return StepResult(float("nan"), {}, overflow=overflow)
        if self.device.type == "cuda":  # timing a logged step: wait for the device to finish it
            torch.cuda.synchronize(self.device)
        step_time = time.perf_counter() - t0
        clips = sum(len(batch[0]) for batch in micro_batches)
        loss_values = torch.stack([total, *sums.values(), grad_norm]).tolist()
        values = {
            "loss": loss_values[0],
            **{f"loss/{k}": v for k, v in zip(LOSS_TERMS, loss_values[1:], strict=False)},
        }
        values |= {"beta": beta, "lr": lr, "grad_norm": loss_values[-1]}
        values |= {f"grad_norm/{m}": v for m, v in module_grad_norms(self.raw_model, MODULES).items()}
        values |= self.raw_model.diagnostics(torch.cat([lp.reshape(-1, lp.shape[-1]) for lp in log_pis]))
        values |= {
            "perf/step_time": step_time,
            "perf/clips_per_s": clips / step_time,
            "nan_skips": self.nan_skips,
        }
        if self.device.type == "cuda":
            values["perf/gpu_mem_gb"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        return StepResult(values["loss"], values, overflow=overflow)

    @torch.no_grad()
    def val_loss(self, batches) -> float | None:
        """Mean loss (full beta) over held-out batches; None when there are none. The mean of each loss term is
        left in `self.val_terms` (logged as val/loss/<term>)."""
        self.model.eval()
        total, count = 0.0, 0
        self.val_terms = {k: 0.0 for k in LOSS_TERMS}
        for batch in batches:
            frames, actions = batch[:2]
            with self.autocast():
                loss, terms, _ = self.model(
                    frames,
                    actions,
                    **self.past_clip(batch),
                    beta=self.cfg.kl_beta,
                    context_weight=self.cfg.context_pred_weight,
                    free_nats=self.cfg.free_nats,
                    kl_balance=self.cfg.kl_balance,
                    overshoot_weight=self.cfg.overshoot_weight,
                )
            total += float(loss) * len(frames)
            count += len(frames)
            for k in LOSS_TERMS:
                self.val_terms[k] += float(terms[k]) * len(frames)
        self.model.train()
        self.val_terms = {k: v / count for k, v in self.val_terms.items()} if count else {}
        return total / count if count else None
