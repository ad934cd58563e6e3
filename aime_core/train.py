"""`train(cfg, sinks, should_stop)`: the whole training run, reporting only through sinks (no Celery/HTTP/DB)."""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from aime_core import checkpoint as ckpt
from aime_core import paths
from aime_core.config import TrainConfig, collect_command, collect_config_for, run_name, to_dict
from aime_core.data import DataError, EpisodeStore, dataset_split, read_info
from aime_core.evaluate import HeldOut, eval_metrics
from aime_core.loaders import ClipFeeder, first_clips
from aime_core.model import AIME
from aime_core.nan_guard import NonFinite, dump
from aime_core.sinks import JsonlSink, MultiSink, ShouldStop, Sink, maybe_wandb, never_stop
from aime_core.trainer import Trainer
from aime_core.video import panel_frames, write_mp4


@dataclass
class TrainResult:
    status: str  # succeeded | failed | cancelled
    error: str | None
    epochs_done: int
    steps: int
    best_val_loss: float | None
    last_checkpoint: str | None
    run_dir: str


class TrainError(RuntimeError):
    """The run cannot start; the message says what to do."""


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainError(f"--device {name}: CUDA is not available on this machine; use --device cpu or auto")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise TrainError(f"--device {name}: MPS is not available on this machine; use --device cpu or auto")
    return device


def ensure_data(cfg: TrainConfig, sinks: Sink) -> dict:
    """The dataset's info; a missing synthetic set is collected on the spot, a missing DMC set is an error."""
    path = Path(cfg.data_path)
    if not path.exists():
        if not cfg.synthetic:
            raise TrainError(
                f"dataset {path} does not exist. Collect it first with:\n  {collect_command(collect_config_for(cfg))}"
            )
        from aime_core.collect import collect  # noqa: PLC0415 - only needed here

        sinks.event("log", {"level": "info", "message": f"collecting the synthetic dataset {path} first"})
        # One process: the set takes seconds, and spawned workers would re-import the caller's __main__.
        collect(dataclasses.replace(collect_config_for(cfg), workers=1), sinks)
    try:
        info = read_info(path)
    except DataError as exc:
        raise TrainError(str(exc)) from exc
    if int(info["img_size"]) != cfg.img_size:
        raise TrainError(
            f"dataset {path} has {info['img_size']} px frames but img_size is {cfg.img_size}; pass "
            f"--img_size {info['img_size']} or collect at {cfg.img_size} px: {collect_command(collect_config_for(cfg))}"
        )
    return info


def setup_debug(cfg: TrainConfig) -> None:
    if cfg.debug:  # must precede the first CUDA call to take effect; the CLI sets them at start-up too
        os.environ["CUDA_LAUNCH_BLOCKING"] = "1"
        os.environ["TORCH_USE_CUDA_DSA"] = "1"
    torch.autograd.set_detect_anomaly(bool(cfg.debug))


def train(cfg: TrainConfig, sinks: Sink | None = None, should_stop: ShouldStop = never_stop) -> TrainResult:
    """Train one model. Adds a JSONL sink (and wandb when configured); closes only the sinks it made."""
    run_dir = paths.run_dir(cfg.checkpoint_dir, run_name(cfg))
    run_dir.mkdir(parents=True, exist_ok=True)
    own = [JsonlSink(run_dir / "metrics.jsonl")]
    wandb = maybe_wandb(cfg.wandb_project, run_name(cfg), to_dict(cfg))
    own += [wandb] if wandb else []
    out = MultiSink(([sinks] if sinks else []) + own)
    run = _Run(cfg, run_dir, out, should_stop)
    try:
        result = run.execute()
    except TrainError as exc:
        out.event("log", {"level": "error", "message": str(exc)})
        result = run.result("failed", str(exc))
    except torch.OutOfMemoryError:
        accum = cfg.gradient_accumulation_steps
        msg = (
            f"CUDA out of memory at batch_size {cfg.batch_size} (gradient_accumulation_steps {accum}). "
            f"Use a smaller batch with accumulation to keep the effective batch: --batch_size "
            f"{max(1, cfg.batch_size // 2)} --gradient_accumulation_steps {accum * 2}. Checkpoints are kept."
        )
        out.event(
            "alert",
            {
                "kind": "oom",
                "key": "loss",
                "step": run.trainer_step(),
                "epoch": run.epoch(),
                "message": msg,
                "terms": [],
                "modules": [],
            },
        )
        result = run.result("failed", msg)
    finally:
        torch.autograd.set_detect_anomaly(False)
    out.event("status", {"status": result.status, "message": result.error or ""})
    out.artifact("log", str(run_dir / "metrics.jsonl"), result.steps, {})
    for sink in own:
        sink.close()
    return result


class _Run:
    """The state of one run between setup and the end; one method per phase."""

    def __init__(self, cfg, run_dir: Path, sinks: MultiSink, should_stop: ShouldStop):
        self.cfg, self.run_dir, self.sinks, self.should_stop = cfg, run_dir, sinks, should_stop
        self.trainer: Trainer | None = None
        self.last_path: str | None = None

    def trainer_step(self) -> int:
        return self.trainer.step if self.trainer else 0

    def epoch(self) -> int:
        return self.trainer.epoch if self.trainer else 0

    def result(self, status: str, error: str | None = None) -> TrainResult:
        t = self.trainer
        return TrainResult(
            status,
            error,
            t.epoch if t else 0,
            t.step if t else 0,
            t.best_val_loss if t else None,
            self.last_path,
            str(self.run_dir),
        )

    # --------------------------------------------------------------------------------------------------
    def setup(self) -> None:
        cfg = self.cfg
        setup_debug(cfg)
        self.device = pick_device(cfg.device)
        info = ensure_data(cfg, self.sinks)
        ckpt.seed_everything(cfg.seed)
        train_ids, val_ids = dataset_split(info, cfg.val_fraction)
        train_store = EpisodeStore.load(cfg.data_path, train_ids)
        val_store = EpisodeStore.load(cfg.data_path, val_ids or train_ids[:1])
        try:
            # With overshoot_past_clip each clip comes with the frames after it (overshooting's targets).
            past = cfg.overshoot_past_clip if cfg.overshoot_steps else 0
            self.train_data = ClipFeeder(
                train_store, cfg.video_length, self.device, cfg.data_on_gpu, cfg.num_workers, past=past
            )
            self.val_data = ClipFeeder(val_store, cfg.video_length, self.device, "always", 0, past=past)
        except DataError as exc:
            raise TrainError(str(exc)) from exc
        k = cfg.rollout_context or cfg.video_length // 2
        if not 1 <= k < cfg.video_length:
            raise TrainError(
                f"rollout_context must be between 1 and video_length - 1 ({cfg.video_length - 1}), got {k}"
            )
        self.context_frames = k
        horizon = cfg.eval_horizon or cfg.video_length - k
        shortest = min(len(o) for o in val_store.observations)
        if k + horizon > shortest:
            raise TrainError(
                f"eval_horizon {horizon} after {k} observed frames needs clips of {k + horizon} frames, but the "
                f"shortest held-out episode has {shortest}; allowed: eval_horizon <= {shortest - k}"
            )
        # Scored clips: k + horizon frames from every start frame (256 clips also in a small split).
        mean, std = train_store.frame_stats()
        try:
            self.held_out = HeldOut(
                train_store,
                val_store,
                (mean, std),
                k,
                horizon,
                cfg.video_length,
                self.device,
                shrinkage=cfg.rollout_shrinkage,
            )
        except DataError as exc:
            raise TrainError(str(exc)) from exc
        # Video clips run to twice the training length (or the eval horizon) where the episodes allow.
        self.video_len = min(max(2 * cfg.video_length, k + horizon), shortest)
        self.video_data = ClipFeeder(val_store, self.video_len, self.device, "always", 0)
        model = AIME.from_config(cfg, int(info["action_dim"])).to(self.device)
        accum = cfg.gradient_accumulation_steps
        self.steps_per_epoch = max(1, self.train_data.steps_per_epoch(cfg.batch_size) // accum)
        self.trainer = Trainer(model, cfg, self.device, total_steps=self.steps_per_epoch * cfg.num_epochs)
        if cfg.resume:
            self.resume(cfg.resume)
        else:
            model.set_pixel_stats(*(torch.from_numpy(v).permute(2, 0, 1) for v in (mean, std)))
        repeat = int(info.get("action_repeat", 1))
        if repeat != cfg.action_repeat:
            self.sinks.event(
                "log",
                {
                    "level": "warning",
                    "message": f"{cfg.data_path} was collected with action_repeat {repeat} (the config says "
                    f"{cfg.action_repeat}); training on the file as it is",
                },
            )
        (self.run_dir / "config.json").write_text(json.dumps(to_dict(cfg), indent=2))
        self.sinks.event("status", {"status": "running", "message": f"training on {self.device}"})
        self.sinks.event(
            "log",
            {
                "level": "info",
                "message": f"{run_name(cfg)}: {sum(p.numel() for p in model.parameters()):,} parameters, "
                f"{self.train_data.num_clips} train clips ({self.train_data.kind}), {self.val_data.num_clips} "
                f"val clips, device {self.device}, amp {self.trainer.dtype}, action_repeat {repeat}, "
                f"states {'yes' if info.get('state_dim') else 'no'}",
            },
        )

    def resume(self, path: str) -> None:
        try:
            state = ckpt.load(path, map_location=self.device)  # weights only: nothing in the file runs
        except (FileNotFoundError, ckpt.CheckpointError) as exc:
            raise TrainError(f"--resume: {exc}") from exc
        want, have = self.trainer.raw_model.hparams, state.get("model_hparams", {})
        # A field added to the model since the checkpoint was written counts at its default.
        defaults = {k: p.default for k, p in inspect.signature(AIME.__init__).parameters.items()}
        diff = {
            k: (have.get(k, defaults.get(k)), v) for k, v in want.items() if have.get(k, defaults.get(k)) != v
        }
        if diff:
            text = ", ".join(f"{k}: checkpoint {a} vs config {b}" for k, (a, b) in diff.items())
            raise TrainError(f"--resume {path}: the model differs from the checkpoint ({text})")
        ckpt.restore(self.trainer, state)
        self.sinks.event(
            "log",
            {
                "level": "info",
                "message": f"resumed from {path} at epoch {state['epoch']}, step {state['step']}",
            },
        )

    def save(self, tag: str) -> str:
        name = {"last": "last.pt", "best": "best.pt"}.get(tag, f"ckpt_{tag}.pt")
        path = ckpt.save(self.run_dir / name, self.trainer, to_dict(self.cfg))
        self.sinks.artifact("checkpoint", path, self.trainer.step, {"tag": tag})
        if tag == "last":
            self.last_path = path
        return path

    # --------------------------------------------------------------------------------------------------
    def execute(self) -> TrainResult:
        self.setup()
        cfg, t = self.cfg, self.trainer
        accum = cfg.gradient_accumulation_steps
        steps_per_epoch = self.steps_per_epoch
        total = steps_per_epoch * cfg.num_epochs
        inject_step = int(os.environ.get("AIME_INJECT_NAN_STEP", 0) or cfg.inject_nan_step)
        inject_term = os.environ.get("AIME_INJECT_NAN_TERM") or cfg.inject_nan_term
        shown_loss = float("nan")  # the progress bar shows the last logged loss
        while t.epoch < cfg.num_epochs:
            epoch_start = time.perf_counter()
            batches = self.train_data.batches(cfg.batch_size, cfg.seed, t.epoch)
            for g in range(steps_per_epoch):
                group = [next(batches) for _ in range(accum)]
                if g < t.batch_in_epoch:  # resuming mid-epoch: replay the order, skip what was done
                    continue
                if self.should_stop():
                    self.save("last")
                    return self.result("cancelled", "stopped on request")
                inject = inject_term if inject_step and t.step + 1 == inject_step else None
                try:
                    res = t.train_step(group, inject, log=(t.step + 1) % cfg.log_every == 0)
                except RuntimeError as exc:  # anomaly detection (--debug) raises on the NaN itself
                    if not cfg.debug or "nan" not in str(exc).lower():
                        raise
                    res = None
                    t.step += 1  # the step that raised
                    report = NonFinite(t.step, t.epoch + 1, {inject or "loss": float("nan")}, [])
                    return self.on_nonfinite(report, group, detail=str(exc).splitlines()[0])
                t.batch_in_epoch = g + 1
                if res.nonfinite:
                    if cfg.nan_policy == "stop":
                        return self.on_nonfinite(res.nonfinite, group)
                    t.nan_skips += 1
                    self.sinks.event(
                        "alert", res.nonfinite.alert() | {"message": res.nonfinite.message() + " (skipped)"}
                    )
                    continue
                if res.values:  # a logged step (every log_every): the only one whose numbers left the device
                    self.sinks.metrics(t.step, res.values, t.epoch + (g + 1) / steps_per_epoch)
                    shown_loss = res.loss
                post = {"epoch": t.epoch + 1, "num_epochs": cfg.num_epochs, "loss": shown_loss}
                self.sinks.progress(t.step, total, "step", post)
            self.end_epoch(time.perf_counter() - epoch_start)
        return self.result("succeeded")

    def on_nonfinite(self, report: NonFinite, group, detail: str = "") -> TrainResult:
        """nan_policy=stop: alert, dump the batch and model for replay, keep the last good checkpoint, fail."""
        msg = report.message() + (f" ({detail})" if detail else "")
        self.sinks.event("alert", report.alert() | {"message": msg})
        path = dump(self.run_dir / f"nan_dump_step_{report.step}.pt", report, group, self.trainer.raw_model)
        self.sinks.artifact("batch_dump", path, report.step, {"epoch": report.epoch})
        if (self.run_dir / "last.pt").exists():
            self.last_path = str(self.run_dir / "last.pt")
        return self.result("failed", msg)

    def end_epoch(self, epoch_time: float) -> None:
        cfg, t = self.cfg, self.trainer
        t.epoch += 1
        t.batch_in_epoch = 0
        with t.eval_weights():
            val = t.val_loss(first_clips(self.val_data, cfg.eval_clips, cfg.batch_size))
        val_terms = {f"val/loss/{k}": v for k, v in t.val_terms.items()}  # the per-term breakdown
        self.sinks.metrics(
            t.step, {"epoch": t.epoch, "perf/epoch_time": epoch_time, "val/loss": val, **val_terms}, t.epoch
        )
        if t.epoch % cfg.eval_every == 0 or t.epoch == cfg.num_epochs:
            with t.eval_weights():
                self.run_eval()
        if t.epoch % cfg.save_every == 0:
            self.save(f"epoch_{t.epoch:04d}")
        improved = val is not None and (t.best_val_loss is None or val < t.best_val_loss)
        if improved:
            t.best_val_loss = val
        self.save("last")  # after best_val_loss is updated, so a resumed run knows the best so far
        if improved:
            self.save("best")

    def run_eval(self) -> dict:
        cfg, t = self.cfg, self.trainer
        result = self.held_out.score(
            t.raw_model, cfg.eval_clips, cfg.batch_size, cfg.rollout_sample, t.autocast
        )
        video = None
        if cfg.video_clips > 0:
            frames, actions = next(first_clips(self.video_data, cfg.video_clips, cfg.video_clips))
            with torch.no_grad(), t.autocast():
                pred = t.raw_model.generate(
                    frames[:, : self.context_frames], actions, self.context_frames, sample=cfg.rollout_sample
                )
            pred = self.held_out.calibrated(pred, self.context_frames)  # the video shows what was scored
            grid = panel_frames(frames.float() / 255, pred.float(), self.context_frames, cfg.video_length)
            video = write_mp4(self.run_dir / "videos" / f"eval_epoch_{t.epoch:04d}.mp4", grid)
            self.sinks.artifact("video", video, t.step, {"epoch": t.epoch})
        self.sinks.metrics(t.step, eval_metrics(result), t.epoch)
        self.sinks.event("eval", {"epoch": t.epoch, "step": t.step, **result, "video": video})
        return result


def replace(cfg: TrainConfig, **changes) -> TrainConfig:
    """A copy of cfg with some fields changed (used by the checks and benchmarks)."""
    return dataclasses.replace(cfg, **changes)
