"""How much the frames move per action repeat: the table behind each tier's `action_repeat`.

For each task (the tiers' environments and the seed's recommended list) and action repeat, collect a few episodes
with the collector's own environment and random actions, then print the trivial predictors' errors:
copy-last-frame MSE at h = 1 / 5 / 10 frames ahead, the mean-frame MSE (predicting the episodes' mean frame), and
the share of pixels that change from one frame to the next. A world model has something to learn only where
copy-last is clearly worse than its reconstruction error at h = 1 and approaches the mean frame by h = 10.

    .venv/bin/python benchmarks/motion_table.py                      # every recommended task, repeats 1 2 4 8
    .venv/bin/python benchmarks/motion_table.py --tasks cartpole-swingup --repeats 1 4 --episodes 8
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from aime_core.config import DMC_STEP_LIMIT, RECOMMENDED_TASKS, resolve_collect


def motion(frames: list[np.ndarray], horizons=(1, 5, 10)) -> dict[str, float]:
    """Trivial-predictor errors over episodes of uint8 frames [T,H,W,3] (pixel values scaled to [0, 1])."""
    eps = [f.astype(np.float32) / 255 for f in frames]
    out = {}
    for h in horizons:
        errs = [((e[h:] - e[:-h]) ** 2).mean() for e in eps if len(e) > h]
        out[f"copy_last_h{h}"] = float(np.mean(errs))
    allf = np.concatenate(eps)
    out["mean_frame"] = float(((allf - allf.mean(0)) ** 2).mean())
    out["changed_pixels_h1"] = float(np.mean([(np.abs(e[1:] - e[:-1]).max(-1) > 0).mean() for e in eps]))
    return out


def collect_frames(domain: str, task: str, repeat: int, episodes: int, steps: int, size: int) -> list:
    from aime_core.envs import make_env, run_episode

    cfg = resolve_collect(
        1, overrides={"domain": domain, "task": task, "action_repeat": 1, "img_size": size}, env={}
    )
    cfg.action_repeat = repeat  # measured past the time limit too: the table shows why the limit matters
    env = make_env(cfg)
    try:
        return [run_episode(env, i, 1000 + i, steps).observations for i in range(episodes)]
    finally:
        env.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_tasks = [f"{d}-{t}" for d, t in RECOMMENDED_TASKS]
    ap.add_argument("--tasks", nargs="+", default=default_tasks, help="domain-task names")
    ap.add_argument("--repeats", nargs="+", type=int, default=[1, 2, 4, 8])
    ap.add_argument("--episodes", type=int, default=3)
    ap.add_argument("--steps", type=int, default=80, help="frames per episode")
    ap.add_argument("--img_size", type=int, default=64)
    ap.add_argument("--json", default=None, help="also write the rows to this file")
    args = ap.parse_args()
    os.environ.setdefault("MUJOCO_GL", "egl")
    print(
        f"{args.episodes} episodes x {args.steps} frames at {args.img_size} px, uniform random actions; "
        f"MSE of pixels in [0, 1]. 'limit' = longest episode (frames) within the {DMC_STEP_LIMIT}-step time limit"
    )
    head = f"{'task':<22}{'repeat':>6}{'copy h1':>10}{'copy h5':>10}{'copy h10':>10}{'mean fr':>10}"
    print(head + f"{'h10/mean':>9}{'moving px':>10}{'limit':>7}{'s':>6}")
    rows = []
    for name in args.tasks:
        domain, task = name.split("-", 1)
        for r in args.repeats:
            t0 = time.perf_counter()
            m = motion(collect_frames(domain, task, r, args.episodes, args.steps, args.img_size))
            row = {"task": name, "action_repeat": r, **m, "max_frames": DMC_STEP_LIMIT // r}
            rows.append(row)
            print(
                f"{name:<22}{r:>6}{m['copy_last_h1']:>10.2e}{m['copy_last_h5']:>10.2e}{m['copy_last_h10']:>10.2e}"
                f"{m['mean_frame']:>10.2e}{m['copy_last_h10'] / m['mean_frame']:>9.2f}"
                f"{100 * m['changed_pixels_h1']:>9.1f}%{DMC_STEP_LIMIT // r:>7}{time.perf_counter() - t0:>6.0f}",
                flush=True,
            )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
