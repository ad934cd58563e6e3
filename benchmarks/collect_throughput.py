"""Frames/s of `aime collect` against a straightforward single-process loop, on the same task, size and frames.

The baseline is what one writes first (and what the seed's collector does): one environment, `physics.render()`
every step, all episodes written to HDF5 at the end. It seeds episode i exactly as `aime collect` does, so both
must produce identical pixels; the script checks that and says so. Both run as fresh processes and are timed
end to end (imports, GL set-up, workers, writing). Run with and without --fast-render:

    .venv/bin/python benchmarks/collect_throughput.py [--domain cartpole --task swingup --episodes 16 --max-steps 200]

The load average is printed with each line: other work on the machine takes cores from both sides.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def baseline(args: argparse.Namespace) -> None:
    """The straightforward loop (runs in its own process)."""
    import h5py
    import numpy as np
    from dm_control import suite

    env = suite.load(args.domain, args.task, task_kwargs={"random": 0, "time_limit": float("inf")})
    physics = env.physics
    flags = None
    if args.fast_render:  # the same look as `aime collect --fast-render`
        physics.model.vis.quality.offsamples = 0
        flags = {"shadow": False, "reflection": False}
    spec = env.action_spec()
    episodes = []
    for i in range(args.episodes):
        env.task._random = np.random.RandomState(args.seed + i)
        env.reset()
        rng = np.random.RandomState(args.seed + i)
        first = physics.render(args.img_size, args.img_size, camera_id=0, render_flag_overrides=flags)
        obs, acts, rews = [], [], []
        for _ in range(args.max_steps):
            action = rng.uniform(spec.minimum, spec.maximum).astype(np.float32)
            ts = env.step(action)
            obs.append(physics.render(args.img_size, args.img_size, camera_id=0, render_flag_overrides=flags))
            acts.append(action)
            rews.append(ts.reward or 0.0)
        episodes.append((first, np.stack(obs), np.stack(acts), np.asarray(rews, np.float32)))
    with h5py.File(args.out, "w") as f:
        for i, (first, obs, acts, rews) in enumerate(episodes):
            g = f.create_group(f"episode_{i}")
            g.create_dataset("observations", data=obs, chunks=(1, *obs.shape[1:]), compression="lzf")
            g.create_dataset("actions", data=acts)
            g.create_dataset("rewards", data=rews)
            g.create_dataset("first_observation", data=first)


def timed(cmd: list[str]) -> float:
    env = dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
    env = {k: v for k, v in env.items() if not k.startswith("AIME_")}
    t = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if out.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{out.stderr[-3000:]}")
    return seconds


def identical(a: str, b: str, episodes: int) -> tuple[bool, str]:
    import h5py
    import numpy as np

    with h5py.File(a) as fa, h5py.File(b) as fb:
        for i in range(episodes):
            for key in ("observations", "first_observation", "actions", "rewards"):
                x, y = fa[f"episode_{i}/{key}"][()], fb[f"episode_{i}/{key}"][()]
                if x.shape != y.shape or not np.array_equal(x, y):
                    return False, f"episode_{i}/{key} differs"
    return True, "all observations, first frames, actions and rewards identical"


def compare(args: argparse.Namespace, fast: bool, tmp: Path) -> float:
    frames = args.episodes * args.max_steps
    common = ["--domain", args.domain, "--task", args.task, "--episodes", str(args.episodes)]
    common += ["--max-steps", str(args.max_steps), "--img-size", str(args.img_size), "--seed", str(args.seed)]
    fast_flag = ["--fast-render"] if fast else []
    tag = "fast" if fast else "standard"
    base_out, ours_out = tmp / f"baseline-{tag}.hdf5", tmp / f"aime-{tag}.hdf5"
    cmd = [sys.executable, "-m", "aime_core.cli", "collect", "--tier", "1", *common, *fast_flag]
    cmd += ["--out", str(ours_out)] + (["--workers", str(args.workers)] if args.workers else [])
    t_base = t_ours = float("inf")
    for _ in range(
        args.repeats
    ):  # alternate the two and keep each one's best: load from others comes and goes
        ours_out.unlink(missing_ok=True)
        t_base = min(
            t_base,
            timed([sys.executable, __file__, "--baseline", "--out", str(base_out), *common, *fast_flag]),
        )
        t_ours = min(t_ours, timed(cmd))
    same, why = identical(str(base_out), str(ours_out), args.episodes)
    ratio = t_base / t_ours
    print(
        f"{tag:>8} render: baseline {frames / t_base:7.1f} frames/s ({t_base:5.1f} s) | "
        f"aime collect {frames / t_ours:7.1f} frames/s ({t_ours:5.1f} s) | ratio {ratio:.2f}x | "
        f"pixels {'IDENTICAL' if same else 'DIFFERENT'}: {why} | load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    return ratio if same else 0.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--domain", default="cartpole")
    p.add_argument("--task", default="swingup")
    p.add_argument("--episodes", type=int, default=16)
    p.add_argument("--max-steps", type=int, default=200)
    p.add_argument("--img-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=0, help="aime collect --workers (0 = number of cores)")
    p.add_argument("--repeats", type=int, default=1, help="alternate runs of each side, keep the best")
    p.add_argument("--only", choices=("standard", "fast"), help="run one of the two comparisons")
    p.add_argument("--target", type=float, default=1.8, help="ratio to meet (exit status 1 if missed)")
    p.add_argument("--baseline", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--fast-render", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.baseline:
        baseline(args)
        return
    frames = args.episodes * args.max_steps
    print(
        f"{args.domain}-{args.task}, {args.episodes} episodes x {args.max_steps} steps = {frames} frames at "
        f"{args.img_size}x{args.img_size}, {os.cpu_count()} cores, MUJOCO_GL={os.environ.get('MUJOCO_GL', 'egl')}",
        flush=True,
    )
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        for fast in (False, True):
            if args.only in (None, "fast" if fast else "standard"):
                ratios.append(compare(args, fast, Path(tmp)))
    ok = all(r >= args.target for r in ratios)
    print(f"target ratio >= {args.target} with identical pixels: {'met' if ok else 'NOT met'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
