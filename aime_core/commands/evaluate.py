"""`aime evaluate CHECKPOINT`: open-loop rollouts of a saved model against copy-last-frame, at any horizon."""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="Score a checkpoint's open-loop rollouts against copy-last and mean frame on its held-out episodes.",
        description="Rebuild the checkpoint run's validation split, observe --context frames, roll out "
        "--horizon steps open loop on the recorded actions, and print the MSE per horizon step next to the "
        "copy-last-frame and mean-training-frame baselines (all and moving pixels, and states through a linear "
        "probe when the dataset has them). Horizons past the training clip length test generation beyond it.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("checkpoint", help="a .pt file written by aime train (best.pt, last.pt, ckpt_epoch_N.pt)")
    p.add_argument("--horizon", type=int, default=0, help="open-loop steps (0: the run's eval_horizon)")
    p.add_argument("--context", type=int, default=0, help="observed frames k (0: the run's rollout_context)")
    p.add_argument(
        "--clips", type=int, default=0, help="held-out clips to average over (0: the run's eval_clips)"
    )
    p.add_argument("--data", default=None, help="dataset (default: the one the run trained on)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument(
        "--sample", action="store_true", help="one rollout sampling the prior instead of its mean or mode"
    )
    p.add_argument(
        "--samples",
        type=int,
        default=0,
        metavar="N",
        help="predict the average of N rollouts that sample the prior (0: the run's rollout_samples)",
    )
    p.add_argument(
        "--shrinkage",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="calibrate the rollout toward the mean training frame per horizon, fitted on training clips, and "
        "score the raw rollout alongside (default: the run's rollout_shrinkage)",
    )
    p.add_argument(
        "--raw-weights",
        action="store_true",
        help="score the trained weights, not their moving average (runs with ema_decay keep both)",
    )
    p.add_argument("--video", default=None, metavar="MP4", help="also write truth | prediction | error")
    p.add_argument(
        "--states",
        action="store_true",
        help="fail unless the dataset has physics states to score in state space",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from aime_core.checkpoint_eval import evaluate_checkpoint  # noqa: PLC0415 (torch: only when used)
    from aime_core.train import TrainError  # noqa: PLC0415

    try:
        res = evaluate_checkpoint(
            args.checkpoint,
            horizon=args.horizon,
            context=args.context,
            clips=args.clips,
            data=args.data,
            device=args.device,
            sample=args.sample,
            samples=args.samples,
            shrinkage=args.shrinkage,
            raw_weights=args.raw_weights,
            video=args.video,
            states=args.states,
        )
    except TrainError as exc:
        print(f"aime evaluate: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(res, indent=1))
        return 0
    print(format_result(res))
    return 0


def format_result(res: dict) -> str:
    k, L = res["context_frames"], res["video_length"]
    states = "state_ratio" in res
    calibrated = "shrinkage" in res
    lines = [
        f"{res['checkpoint']} (epoch {res['epoch']}, step {res['step']}"
        f"{', moving-average weights' if res.get('weights') == 'ema' else ''}) on {res['clips']} held-out clips of "
        f"{res['val_episodes']} episodes in {res['data']}",
        f"reconstruction: MSE {res['recon_mse']:.5f}, PSNR {res['psnr']:.2f} dB, SSIM {res['ssim']:.3f}",
        f"open loop after {k} observed frames (training clips: {L} frames; * = past that length); ratio = model / "
        "the better of copy-last and mean frame; moving = pixels whose training std > 0.02"
        + ("; state = linear probe on the physics state" if states else ""),
        "     h   model MSE  copy-last   mean frame   ratio  moving ratio"
        + ("  state ratio" if states else "")
        + ("  raw ratio  a_h" if calibrated else ""),
    ]
    for i, h in enumerate(res["horizon"]):
        mark = "*" if k + h > L else " "
        line = (
            f"  {h:3d}{mark}  {res['rollout_mse'][i]:9.5f}  {res['copy_last_mse'][i]:9.5f}  "
            f"{res['mean_frame_mse'][i]:10.5f}  {res['ratio'][i]:6.2f}  {res['ratio_moving'][i]:12.2f}"
        )
        line += f"  {res['state_ratio'][i]:11.2f}" if states else ""
        line += f"  {res['ratio_raw'][i]:9.2f}  {res['shrinkage'][i]:.2f}" if calibrated else ""
        lines.append(line)
    n = len(res["horizon"])
    wins = sum(r < 1 for r in res["ratio"])
    lines.append(
        f"mean ratio {sum(res['ratio']) / n:.2f} (moving pixels {sum(res['ratio_moving']) / n:.2f}"
        + (f", state {sum(res['state_ratio']) / n:.2f}" if states else "")
        + f"); model better than both baselines at {wins} of {n} horizon steps"
    )
    if calibrated:
        raw_wins = sum(r < 1 for r in res["ratio_raw"])
        lines.append(
            f"calibrated rollout (a_h fitted on training clips; ratio_raw = the rollout as the model made it): "
            f"mean raw ratio {sum(res['ratio_raw']) / n:.2f}, raw better than both at {raw_wins} of {n} steps"
        )
    if res.get("video"):
        lines.append(f"video: {res['video']}")
    return "\n".join(lines)
