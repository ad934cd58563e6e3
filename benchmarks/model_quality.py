"""Model quality on real data: the tier-1 config trained on collected cartpole for a fixed step budget.

Prints the loss curve ends, open-loop rollout MSE per horizon step next to copy-last-frame, reconstruction
PSNR/SSIM and the DPGMM's effective components. Collects a small cartpole set first if --data is missing.
    .venv/bin/python benchmarks/model_quality.py --device cpu --steps 30 --batch_size 4 --episodes 6
On a GPU: .venv/bin/python benchmarks/model_quality.py --device cuda --steps 3000
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from aime_core.config import resolve_collect, resolve_train
from aime_core.sinks import Sink


class Keep(Sink):
    def __init__(self):
        self.losses, self.eval, self.diag = [], None, {}

    def metrics(self, step, values, epoch=None):
        if "loss" in values:
            self.losses.append(values["loss"])
            self.diag = {k: v for k, v in values.items() if k.startswith("dpgmm/")}

    def event(self, kind, payload):
        if kind == "eval":
            self.eval = dict(payload)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--steps", type=int, default=3000, help="Optimiser steps (rounded up to whole epochs).")
    ap.add_argument("--batch_size", type=int, default=None)
    ap.add_argument("--data", default="data/cartpole-swingup-tier1-seed0.hdf5")
    ap.add_argument("--episodes", type=int, default=50, help="Episodes to collect when --data is missing.")
    ap.add_argument("--max_steps", type=int, default=200, help="Steps per collected episode.")
    ap.add_argument("--out", default="checkpoints/bench-model-quality")
    ap.add_argument(
        "--long_horizon",
        type=int,
        default=25,
        help="Also score the final model this many open-loop steps ahead (past the training length; 0: skip).",
    )
    args = ap.parse_args()
    os.environ.setdefault("MUJOCO_GL", "egl")
    if not Path(args.data).exists():
        from aime_core.collect import collect

        print(f"collecting {args.episodes} cartpole episodes x {args.max_steps} steps into {args.data}")
        t0 = time.perf_counter()
        collect(
            resolve_collect(
                1,
                overrides={
                    "data_path": args.data,
                    "num_episodes": args.episodes,
                    "max_steps": args.max_steps,
                    "workers": 1,
                },
                env={},
            )
        )
        print(f"  collected in {time.perf_counter() - t0:.0f} s")
    from aime_core.data import read_info, split_episodes
    from aime_core.train import train

    over = {
        "data_path": args.data,
        "device": args.device,
        "checkpoint_dir": args.out,
        "log_every": 1,
        "video_clips": 2,
    }
    if args.batch_size:
        over["batch_size"] = args.batch_size
    cfg = resolve_train(1, overrides=over, env={})
    info = read_info(args.data)
    train_ids, _ = split_episodes(info["episodes"], cfg.val_fraction, cfg.seed)
    clips = sum(info["episode_lengths"][i] // cfg.video_length for i in train_ids)
    per_epoch = max(1, clips // cfg.batch_size)
    epochs = max(1, -(-args.steps // per_epoch))
    cfg = resolve_train(
        1, overrides=over | {"num_epochs": epochs, "eval_every": epochs, "save_every": epochs}, env={}
    )
    keep = Keep()
    t0 = time.perf_counter()
    result = train(cfg, keep)
    dt = time.perf_counter() - t0
    print(
        f"{result.status}: {result.steps} steps ({epochs} epochs x {per_epoch}) in {dt:.0f} s "
        f"({result.steps / dt:.2f} steps/s) on {cfg.device}, batch {cfg.batch_size}"
    )
    if result.error:
        print(result.error)
        return
    k = max(1, len(keep.losses) // 10)
    print(f"loss: first {k} {sum(keep.losses[:k]) / k:.1f} -> last {k} {sum(keep.losses[-k:]) / k:.1f}")
    ev = keep.eval
    print(f"reconstruction: MSE {ev['recon_mse']:.5f}, PSNR {ev['psnr']:.2f} dB, SSIM {ev['ssim']:.3f}")
    print(f"open loop after {ev['context_frames']} context frames ({ev['clips']} clips):")
    for h, m, b in zip(ev["horizon"], ev["rollout_mse"], ev["baseline_mse"], strict=True):
        print(f"  h={h:2d}  model {m:.5f}  copy-last {b:.5f}  ratio {m / b:.2f}")
    mean_m = sum(ev["rollout_mse"]) / len(ev["rollout_mse"])
    mean_b = sum(ev["baseline_mse"]) / len(ev["baseline_mse"])
    print(f"mean: model {mean_m:.5f} vs copy-last {mean_b:.5f} (ratio {mean_m / mean_b:.2f})")
    print("DPGMM: " + ", ".join(f"{k.split('/')[1]} {v:.3g}" for k, v in keep.diag.items()))
    print(f"video: {ev['video']}")
    if args.long_horizon:
        from aime_core.checkpoint_eval import evaluate_checkpoint
        from aime_core.commands.evaluate import format_result

        print(f"\nlong horizon ({args.long_horizon} open-loop steps) with aime evaluate:")
        long = evaluate_checkpoint(
            Path(args.out) / "last.pt", horizon=args.long_horizon, device=args.device, clips=64
        )
        print(format_result(long))


if __name__ == "__main__":
    main()
