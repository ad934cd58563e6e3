"""Training throughput per tier config: clips/s and estimated epoch time, eager vs torch.compile, fp32 vs AMP.

Random uint8 clips of each tier's shape (no dataset needed). On CPU use a small batch and few steps:
    .venv/bin/python benchmarks/train_throughput.py --device cpu --quick
On a GPU run it unchanged with --device cuda (add --compile to include torch.compile).
"""

from __future__ import annotations

import argparse
import time

import torch

from aime_core.config import PRESETS, resolve_train
from aime_core.model import AIME, count_parameters
from aime_core.trainer import Trainer


def measure(cfg, device, steps: int, warmup: int) -> float:
    """Clips per second of full training steps (forward, backward, optimiser) after `warmup` steps."""
    torch.manual_seed(0)
    model = AIME.from_config(cfg, action_dim=2).to(device)
    trainer = Trainer(model, cfg, device)
    B, T, S = cfg.batch_size, cfg.video_length, cfg.img_size
    frames = torch.randint(0, 256, (B, T, 3, S, S), dtype=torch.uint8, device=device)
    actions = torch.rand(B, T, 2, device=device) * 2 - 1
    group = [(frames, actions)] * cfg.gradient_accumulation_steps
    for _ in range(warmup):
        trainer.train_step(group)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(group)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * B * cfg.gradient_accumulation_steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiers", default="1,2,3")
    ap.add_argument("--steps", type=int, default=20, help="Timed steps per setting.")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch_size", type=int, default=None, help="Override the tier's batch size.")
    ap.add_argument("--quick", action="store_true", help="CPU smoke: batch 2, 2 timed steps, 1 warm-up.")
    ap.add_argument("--compile", action="store_true", help="Also time torch.compile (slow to start).")
    args = ap.parse_args()
    if args.quick:
        args.steps, args.warmup, args.batch_size = 2, 1, args.batch_size or 2
    device = torch.device(args.device)
    print(
        f"device {device}; {args.steps} timed steps after {args.warmup} warm-up; clips/s of full train steps"
    )
    for tier in (int(t) for t in args.tiers.split(",")):
        over = {"device": args.device} | ({"batch_size": args.batch_size} if args.batch_size else {})
        base = resolve_train(tier, overrides=over, env={})
        p = PRESETS[f"tier{tier}"]
        clips_per_epoch = round(p["num_episodes"] * 0.9) * (p["max_steps"] // base.video_length)
        n_params = count_parameters(AIME.from_config(base, 2))
        print(
            f"tier {tier}: {base.video_length} x {base.img_size} px, batch {base.batch_size} x accum "
            f"{base.gradient_accumulation_steps}, {n_params / 1e6:.1f} M params, {clips_per_epoch} clips/epoch"
        )
        results = {}
        settings = [("eager fp32", False, False), ("eager amp", True, False)]
        if args.compile:
            settings += [("compiled fp32", False, True), ("compiled amp", True, True)]
        for name, amp, comp in settings:
            cfg = resolve_train(tier, overrides=over | {"amp": amp, "compile": comp}, env={})
            rate = measure(cfg, device, args.steps, args.warmup)
            results[name] = rate
            print(f"  {name:14s} {rate:8.2f} clips/s   epoch ~{clips_per_epoch / rate / 60:8.1f} min")
        ref = results["eager fp32"]
        print("  ratios vs eager fp32: " + ", ".join(f"{k} {v / ref:.2f}x" for k, v in results.items()))


if __name__ == "__main__":
    main()
