"""`aime train --tier N [...]`: the seed's training entry point, with every flag its scripts pass."""

from __future__ import annotations

import argparse
import os
import sys

from aime_core.commands.flags import add_config_flags, config_error_exit, overrides_from
from aime_core.config import ConfigError, TrainConfig, run_name


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="Train the AIME world model on a collected dataset (or --synthetic).",
        description="Train AIME. Resolution: defaults -> tier preset -> --preset debug -> AIME_* env -> flags. "
        "Test hook: AIME_INJECT_NAN_STEP=N (and AIME_INJECT_NAN_TERM=recon|kl_z|...) makes step N go NaN.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_config_flags(p, TrainConfig, renames={"data_path": "data"})
    p.add_argument(
        "--banner", action="store_true", help="Print the resolved settings (tier scripts) and exit."
    )
    p.set_defaults(func=run)


def banner(cfg: TrainConfig) -> str:
    """The tier scripts' banner: tier, environment, settings, data path (the seed guide's "Settings")."""
    eff = cfg.batch_size * cfg.gradient_accumulation_steps
    lines = [
        f" tier:        {cfg.tier}{' + ' + cfg.preset if cfg.preset else ''}   run {run_name(cfg)}",
        f" environment: {cfg.domain}-{cfg.task}   seed {cfg.seed}",
        f" video:       {cfg.video_length} frames x {cfg.img_size}x{cfg.img_size}",
        f" model:       latent_dim={cfg.latent_dim}, hidden_dim={cfg.hidden_dim}, context_dim={cfg.context_dim}, "
        f"max_components={cfg.max_components}, 3d_conv={cfg.use_3d_conv}, temporal_downsample={cfg.temporal_downsample}",
        f" training:    {cfg.num_epochs} epochs, batch_size={cfg.batch_size} x accumulation "
        f"{cfg.gradient_accumulation_steps} = {eff}, lr={cfg.lr}, amp={cfg.amp}, device={cfg.device}",
        f" data:        {cfg.data_path}{' (collected on demand)' if cfg.synthetic else ''}",
        f" checkpoints: {cfg.checkpoint_dir}   (save/eval/log every {cfg.save_every}/{cfg.eval_every}/"
        f"{cfg.log_every})",
    ]
    if cfg.resume:
        lines.append(f" resume:      {cfg.resume}")
    if cfg.debug:
        lines.append(" debug:       CUDA_LAUNCH_BLOCKING=1, TORCH_USE_CUDA_DSA=1, autograd anomaly detection")
    if cfg.wandb_project:
        lines.append(f" wandb:       {cfg.wandb_project}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from aime_core.config import resolve_train  # noqa: PLC0415

    try:
        cfg = resolve_train(overrides=overrides_from(args, TrainConfig))
    except ConfigError as exc:
        return config_error_exit(exc)
    if args.banner:
        print(banner(cfg))
        return 0
    if cfg.debug:  # before torch touches CUDA, so the settings take effect
        os.environ["CUDA_LAUNCH_BLOCKING"] = "1"
        os.environ["TORCH_USE_CUDA_DSA"] = "1"
    from aime_core.sinks import TerminalSink  # noqa: PLC0415
    from aime_core.train import train  # noqa: PLC0415 - torch loads only when training

    terminal = TerminalSink(desc=run_name(cfg))
    try:
        result = train(cfg, terminal)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        terminal.close()
    if result.status == "succeeded":
        best = "n/a" if result.best_val_loss is None else f"{result.best_val_loss:.4g}"
        print(
            f"done: {result.epochs_done} epochs, {result.steps} steps, best val loss {best}, run dir {result.run_dir}"
        )
        return 0
    print(f"aime train: {result.status}: {result.error}", file=sys.stderr)
    return 1
