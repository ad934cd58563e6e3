"""Run configuration: dataclasses, tier presets and their resolution. Torch-free on purpose.

The API imports this module to validate launches and to show presets, so it must stay light: no torch,
no dm_control, no MuJoCo. Resolution order (later wins):

    built-in defaults  ->  tier preset (1, 2, 3)  ->  optional `debug` preset  ->  AIME_* environment  ->  explicit flags

Every field carries its documentation in ``metadata["help"]``; the CLI and the API read it from there.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

# ---------------------------------------------------------------------------------------------------------------
# Environments

# dm_control 1.0.50 `suite.ALL_TASKS`, copied so the API need not import dm_control (tests check they agree).
DMC_TASKS: dict[str, tuple[str, ...]] = {
    "acrobot": ("swingup", "swingup_sparse"),
    "ball_in_cup": ("catch",),
    "cartpole": ("balance", "balance_sparse", "swingup", "swingup_sparse", "two_poles", "three_poles"),
    "cheetah": ("run",),
    "dog": ("stand", "walk", "trot", "run", "fetch"),
    "finger": ("spin", "turn_easy", "turn_hard"),
    "fish": ("upright", "swim"),
    "hopper": ("stand", "hop"),
    "humanoid": ("stand", "walk", "run", "run_pure_state"),
    "humanoid_CMU": ("stand", "walk", "run"),
    "lqr": ("lqr_2_1", "lqr_6_2"),
    "manipulator": ("bring_ball", "bring_peg", "insert_ball", "insert_peg"),
    "pendulum": ("swingup",),
    "point_mass": ("easy", "hard"),
    "quadruped": ("walk", "run", "escape", "fetch"),
    "reacher": ("easy", "hard"),
    "stacker": ("stack_2", "stack_4"),
    "swimmer": ("swimmer6", "swimmer15"),
    "walker": ("stand", "walk", "run"),
}

# The procedural environment of `--synthetic` (no MuJoCo): a ball pushed by the actions, bouncing off walls.
SYNTHETIC_DOMAIN, SYNTHETIC_TASK = "synthetic", "bouncing_ball"

# The seed guide's "Recommended Tier 1 Environments" plus the tier-3 default, fastest first.
RECOMMENDED_TASKS: tuple[tuple[str, str], ...] = (
    ("pendulum", "swingup"),
    ("cartpole", "swingup"),
    ("cartpole", "balance"),
    ("reacher", "easy"),
    ("ball_in_cup", "catch"),
    ("finger", "spin"),
    ("cheetah", "run"),
    ("walker", "walk"),
    ("humanoid", "walk"),
)

# Control steps per episode of the dm_control tasks (time limit / control timestep): 1000 for every suite task
# but lqr's, which has no limit (tests check this against dm_control). Action repeat multiplies the physics steps
# an episode takes, so max_steps * action_repeat must stay within it.
DMC_STEP_LIMIT = 1000
UNLIMITED_DOMAINS = ("lqr",)

TIERS = (1, 2, 3)
DEFAULT_SEED = 0
IMG_SIZE_MIN, IMG_SIZE_MAX = 16, 256
NAN_POLICIES = ("stop", "skip")
ROLLOUT_LATENTS = ("mean", "mode")
DEVICES = ("auto", "cpu", "cuda", "mps")
DATA_ON_GPU = ("auto", "always", "never")


class ConfigError(ValueError):
    """A configuration value is wrong. `field` names it; the message says what is allowed."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _f(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field with its documentation attached (read by the CLI, the API and the README)."""
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


# ---------------------------------------------------------------------------------------------------------------
# Configs


@dataclass
class CollectConfig:
    """How to collect pixel episodes of one environment into one HDF5 file."""

    tier: int = _f(1, "Tier whose preset supplies the defaults: 1, 2 or 3.")
    preset: str | None = _f(None, "Extra preset stacked on the tier: `debug` (tiny, for tests) or none.")
    domain: str = _f("cartpole", "DeepMind Control domain, e.g. cartpole, reacher, humanoid.")
    task: str = _f("swingup", "Task of the domain, e.g. swingup, easy, walk.")
    seed: int = _f(DEFAULT_SEED, "Seed of the environments and of the random actions; episode i uses seed+i.")
    num_episodes: int = _f(50, "Number of episodes to collect.")
    max_steps: int = _f(200, "Environment steps per episode (the episode is cut there).")
    img_size: int = _f(64, "Side of the square rendered frames, in pixels.")
    camera_id: int = _f(0, "MuJoCo camera to render from.")
    action_repeat: int = _f(
        1,
        "Control steps per recorded frame (the same action repeated), so frames move: tier 1 uses 4, tier 2 "
        "uses 2, tier 3 uses 1. max_steps * action_repeat must stay within the task's 1000-step time limit.",
    )
    workers: int = _f(0, "Parallel collector processes; 0 means the number of CPU cores.")
    data_path: str | None = _f(None, "Output HDF5 file; default data/{domain}-{task}-tier{N}-seed{S}.hdf5.")
    fast_render: bool = _f(
        False, "Turn off shadows, reflections and multisampling (several times faster on a CPU renderer)."
    )
    synthetic: bool = _f(False, "Use the procedural bouncing-ball environment (no MuJoCo) instead of DMC.")
    compression: str = _f("lzf", "HDF5 compression of observations: lzf (fast) or gzip (smaller).")


@dataclass
class TrainConfig:
    """How to train one AIME world model. Field names are the seed scripts' flag names."""

    # --- what to train on
    tier: int = _f(1, "Tier whose preset supplies the defaults: 1, 2 or 3.")
    preset: str | None = _f(None, "Extra preset stacked on the tier: `debug` (tiny, for tests) or none.")
    domain: str = _f("cartpole", "DeepMind Control domain of the dataset.")
    task: str = _f("swingup", "Task of the domain.")
    seed: int = _f(DEFAULT_SEED, "Seed of the model initialisation, the data split and the batch order.")
    data_path: str | None = _f(
        None,
        "HDF5 dataset; default data/{domain}-{task}-tier{N}-seed{S}.hdf5, falling back to the seed-0 dataset.",
    )
    synthetic: bool = _f(False, "Train on the procedural bouncing-ball dataset (collected on demand).")
    action_repeat: int = _f(
        1,
        "Action repeat of the dataset collected when it is missing; training reads the value of an existing "
        "file from its attributes.",
    )
    val_fraction: float = _f(
        0.1,
        "Fraction of episodes held out for validation (split by episode, fixed by the dataset: the same split "
        "for every training seed).",
    )
    # --- model
    video_length: int = _f(10, "Frames per training clip.")
    img_size: int = _f(64, "Side of the square frames the model sees, in pixels.")
    latent_dim: int = _f(18, "Size of the stochastic latent z_t.")
    hidden_dim: int = _f(256, "Size of the recurrent state h_t and of most hidden layers.")
    context_dim: int = _f(128, "Size of the Perceiver context c_t (the seed uses hidden_dim / 2).")
    max_components: int = _f(8, "Truncation K of the stick-breaking Dirichlet-process mixture prior.")
    use_3d_conv: bool = _f(False, "Spatio-temporal (3D conv) frame encoder instead of a per-frame 2D one.")
    temporal_downsample: bool = _f(False, "Halve the time axis of the context path.")
    # --- optimisation
    num_epochs: int = _f(50, "Passes over the training clips.")
    batch_size: int = _f(16, "Clips per optimiser step (before gradient accumulation).")
    lr: float = _f(3e-4, "AdamW learning rate.")
    lr_final_ratio: float = _f(
        1.0,
        "Learning rate at the last step of the run as a share of lr, reached by a cosine decay over the run's "
        "steps (num_epochs x steps per epoch) after the warm-up; 1 = constant. A run extended with --resume "
        "--num_epochs stretches the decay over the new total from where it is.",
    )
    ema_decay: float = _f(
        0.0,
        "Keep an exponential moving average of the weights with this decay per step (e.g. 0.998; 0 = off) and "
        "evaluate, validate, video and `aime evaluate` with it; training steps the raw weights. The average "
        "warms up as min(decay, (1 + step) / (10 + step)), so early evaluations are not dragged toward the init.",
    )
    weight_decay: float = _f(1e-4, "AdamW weight decay.")
    amp: bool = _f(False, "Mixed precision: bf16 where supported, fp16 with a grad scaler otherwise.")
    gradient_accumulation_steps: int = _f(1, "Batches whose gradients are summed before one optimiser step.")
    grad_clip: float = _f(100.0, "Clip the global gradient norm to this value (0 disables).")
    kl_beta: float = _f(1.0, "Weight of the KL terms at the end of the warm-up.")
    beta_warmup_steps: int = _f(1000, "Optimiser steps over which beta rises linearly from 0 to kl_beta.")
    context_pred_weight: float = _f(0.1, "Weight of the context prediction term.")
    kl_balance: float = _f(
        0.8, "KL balancing: share of the latent KL gradient that trains the prior (0.5 = plain KL)."
    )
    free_nats: float = _f(
        1.0, "KL free bits: the mean KL(q(z)||prior) per step is not penalised below this many nats."
    )
    recon_std: float = _f(
        0.3,
        "Std of the Gaussian pixel likelihood (pixels in [0, 1]). Its weight per pixel is 1/(2 std^2): 0.1 made "
        "the reconstruction 100x the unit-variance decoders of PlaNet/Dreamer and left the KL and the prior no "
        "say, so z became a per-frame code the prior could not predict; 1.0 let the posterior collapse to the mean "
        "frame on cartpole (measured, see the README's ablation).",
    )
    overshoot_steps: int = _f(
        2,
        "Observation overshooting: from every step of a clip, run the prior and the dynamics open loop for up to "
        "this many steps and score the decoded frames against the true ones (trains what generation does; 0 "
        "= off, 1 = one-step prior prediction). Inside the clip at most video_length - 1; deeper with "
        "overshoot_past_clip.",
    )
    overshoot_past_clip: int = _f(
        0,
        "Frames after each training clip, from its episode, that overshooting also scores: the open-loop "
        "predictions started in the clip run on past its end (up to overshoot_steps deep, which may then reach "
        "video_length - 1 + this), so the model is trained for the horizons generation runs to. Targets only: the "
        "encoder, posterior and context still see video_length frames; frames past an episode's end are not "
        "scored. 0 = overshoot within the clip.",
    )
    overshoot_past_starts: int = _f(
        2,
        "Start frames per step (drawn at random, the same for the whole batch) whose open loop overshoot_past_clip "
        "runs past the clip; the dynamics run for each of them at every depth, so this sets the cost.",
    )
    overshoot_past_fraction: float = _f(
        0.5,
        "Share of the predictions past the clip (overshoot_past_clip) that are decoded and scored each step, "
        "drawn at random. Every scored prediction, inside the clip or past it, weighs the same in the "
        "overshooting term, so with overshoot_fraction this sets both the cost and each part's weight.",
    )
    overshoot_weight: float = _f(
        1.0, "Weight of the overshooting term relative to the one-step reconstruction term."
    )
    overshoot_fraction: float = _f(
        1.0,
        "Share of the open-loop predictions of overshooting that are decoded and scored each step, drawn at random "
        "(1 = all; the same term in expectation, each step cheaper: with 9 steps on 10-frame clips the decoder "
        "runs 45 times per clip for it, and it dominates the step time).",
    )
    rollout_latent: str = _f(
        "mean",
        "What the open-loop prior feeds forward in rollouts and overshooting: `mean` (the mixture's mean, "
        "sum_k pi_k mu_k) or `mode` (the mean of the most probable component).",
    )
    rollout_samples: int = _f(
        1,
        "Open-loop predictions (evaluations, videos, `aime evaluate`): 1 = one rollout feeding `rollout_latent`; "
        "N > 1 = the average of N rollouts that sample the prior, the model's expected frame (what minimises "
        "squared error: it blurs where the model is unsure instead of committing to one sharp guess). Costs N "
        "rollouts per evaluation; training is unchanged.",
    )
    rollout_shrinkage: bool = _f(
        False,
        "Calibrated rollouts (evaluations, videos, `aime evaluate`): each open-loop frame is pulled toward the mean "
        "training frame by a factor a_h per horizon, fitted by least squares on training clips at every "
        "evaluation (1 = the rollout as is, 0 = the mean frame); the squared-error-optimal blend where a sharp "
        "guess is often wrong. The uncalibrated rollout is scored alongside (ratio_raw); training is unchanged.",
    )
    # --- bookkeeping
    save_every: int = _f(10, "Save a numbered checkpoint every N epochs (plus `last` and `best` always).")
    eval_every: int = _f(5, "Evaluate (reconstruction, open-loop rollouts, video) every N epochs.")
    log_every: int = _f(10, "Send metrics to the sinks every N optimiser steps.")
    checkpoint_dir: str | None = _f(
        None, "Run directory; default checkpoints/{domain}-{task}-tier{N}-seed{S}."
    )
    resume: str | None = _f(None, "Checkpoint file to continue from, exactly where it stopped.")
    nan_policy: str = _f(
        "stop", "On a non-finite loss or gradient: `stop` (save the batch, fail) or `skip` the step."
    )
    debug: bool = _f(False, "CUDA_LAUNCH_BLOCKING=1, TORCH_USE_CUDA_DSA=1 and autograd anomaly detection.")
    device: str = _f("auto", "auto (cuda if present, else cpu), cpu, cuda, cuda:N or mps.")
    data_on_gpu: str = _f(
        "auto", "Hold the dataset on the GPU as uint8: auto (when it fits), always or never."
    )
    num_workers: int = _f(2, "DataLoader workers when the dataset is not held on the GPU.")
    wandb_project: str | None = _f(None, "Also log to this Weights & Biases project (needs wandb installed).")
    # --- model details and evaluation (added with the model; defaults suit every tier)
    perceiver_latents: int = _f(8, "Learned latents of the Perceiver-IO that read each frame's feature map.")
    perceiver_heads: int = _f(4, "Attention heads in the Perceiver context (must divide context_dim).")
    rollout_context: int = _f(0, "Frames k observed before open-loop rollouts; 0 means half of video_length.")
    eval_horizon: int = _f(
        0,
        "Open-loop steps scored at each evaluation after the k observed frames; 0 means video_length - k. "
        "Larger values score generation past the training length (eval/rollout_mse is their mean).",
    )
    rollout_sample: bool = _f(
        False,
        "Sample z from the DPGMM prior in eval rollouts (default: mean of the most probable component).",
    )
    eval_clips: int = _f(
        256, "Held-out clips scored at each evaluation (all of them when the split has fewer)."
    )
    video_clips: int = _f(3, "Clips shown in each evaluation video (ground truth | prediction | error).")
    compile: bool = _f(False, "Wrap the model in torch.compile (helps on CUDA; slow to start on CPU).")
    inject_nan_step: int = _f(
        0, "Test hook: make the batch at this optimiser step produce NaN in inject_nan_term (0 = off)."
    )
    inject_nan_term: str = _f("recon", "Test hook: loss term that goes NaN (recon, kl_z, kl_sticks, ...).")


# ---------------------------------------------------------------------------------------------------------------
# Presets (data, stacked like DreamerV3's configs). Keys a config does not have are ignored for it.

PRESETS: dict[str, dict[str, Any]] = {
    "tier1": dict(
        domain="cartpole",
        task="swingup",
        num_episodes=50,
        max_steps=200,
        action_repeat=4,
        img_size=64,
        video_length=10,
        # Overshoot to the end of the clip: the cpu quality benchmark's worst ratio at h <= 10 went 1.05 -> 0.74
        # and at h <= 30 1.41 -> 1.05 against 2 steps (README, "Model quality"); ~2.8x the CPU step time of no
        # overshooting. Tiers 2 and 3 keep the default 2 (their 20/50-frame clips would make 9 steps 7-9x the
        # decoder passes; not measured there). Within the clip that is 9 steps; with overshoot_past_clip below the
        # open loop of a few starts runs on to 30.
        overshoot_steps=30,
        # ... scoring a random third of its predictions each step (~0.55x the step time: 1.8x the steps in the
        # same time; same term in expectation) and a sharper likelihood. Together, at 2400 steps in about the time
        # 1400 took: worst ratio h <= 10 0.70 -> 0.645, h <= 30 0.99, reconstruction 34.9 -> 37.0 dB (README).
        overshoot_fraction=0.33,
        recon_std=0.15,
        # Evaluate with a moving average of the weights: on the cpu benchmark (3640 steps, seed 1, the same run)
        # reconstruction 37.96 -> 38.97 dB, worst ratio h <= 10 0.74 -> 0.66, h = 30 unchanged (0.996 -> 1.005);
        # decays 0.99 / 0.998 within 0.1 dB. Training is unchanged.
        ema_decay=0.995,
        # Overshoot past the clip: the open loop of 2 random start frames per step runs 30 steps deep into the 25
        # frames after the clip (5 observed + 30 predicted: the benchmark's horizon), 15 % of those predictions
        # scored. On the cpu benchmark (3640 steps, seed 1) worst ratio h <= 30 1.005 -> 0.797, h <= 10 0.660 ->
        # 0.568, reconstruction 38.97 -> 39.32 dB, with the calibration no longer pulling (a_h 1.00 at every h);
        # ~1.6x the CPU step time (README, "Model quality").
        overshoot_past_clip=25,
        overshoot_past_starts=2,
        overshoot_past_fraction=0.15,
        latent_dim=18,
        hidden_dim=256,
        context_dim=128,
        max_components=8,
        num_epochs=50,
        batch_size=16,
        lr=3e-4,
        amp=False,
        gradient_accumulation_steps=1,
        save_every=10,
        eval_every=5,
        log_every=10,
    ),
    "tier2": dict(
        domain="reacher",
        task="easy",
        num_episodes=200,
        max_steps=500,
        action_repeat=2,
        img_size=84,
        video_length=20,
        latent_dim=36,
        hidden_dim=512,
        context_dim=256,
        max_components=15,
        num_epochs=200,
        batch_size=32,
        lr=2e-4,
        amp=True,
        gradient_accumulation_steps=1,
        save_every=20,
        eval_every=10,
        log_every=50,
    ),
    "tier3": dict(
        domain="humanoid",
        task="walk",
        num_episodes=1000,
        max_steps=1000,
        action_repeat=1,
        img_size=84,
        video_length=50,
        latent_dim=36,
        hidden_dim=512,
        context_dim=256,
        max_components=15,
        num_epochs=500,
        batch_size=32,
        lr=2e-4,
        amp=True,
        gradient_accumulation_steps=2,
        save_every=50,
        eval_every=25,
        log_every=100,
    ),
    # Tiny: seconds on a CPU. Keeps the tier's environment; used by the tests and `aime test-synthetic`.
    "debug": dict(
        num_episodes=6,
        max_steps=24,
        img_size=32,
        video_length=6,
        latent_dim=4,
        hidden_dim=32,
        context_dim=16,
        max_components=3,
        num_epochs=2,
        batch_size=4,
        lr=1e-3,
        amp=False,
        gradient_accumulation_steps=1,
        beta_warmup_steps=10,
        overshoot_steps=0,  # seconds-fast for the tests; overshooting has its own tests
        overshoot_past_clip=0,
        # The field defaults, whatever the tier sets (tier 1's 0.15 / 0.33 were measured on the real model): the
        # debug preset, its tests and `aime test-synthetic` behave the same in every tier.
        recon_std=0.3,
        overshoot_fraction=1.0,
        ema_decay=0.0,
        save_every=1,
        eval_every=1,
        log_every=1,
        num_workers=0,
    ),
}
EXTRA_PRESETS = ("debug",)

# AIME_* variables of the seed guide -> config field (for each config that has the field).
ENV_VARS: dict[str, str] = {
    "AIME_DOMAIN": "domain",
    "AIME_TASK": "task",
    "AIME_SEED": "seed",
    "AIME_NUM_EPISODES": "num_episodes",
    "AIME_DATA_PATH": "data_path",
    "AIME_ACTION_REPEAT": "action_repeat",
    "AIME_DEBUG": "debug",
    "WANDB_PROJECT": "wandb_project",
}


# ---------------------------------------------------------------------------------------------------------------
# Resolution


def field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def field_help(cls: type) -> dict[str, str]:
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}


def _coerce(cls: type, name: str, value: Any) -> Any:
    """Turn a flag/env/JSON value into the field's type, or raise ConfigError saying what is allowed."""
    hint = get_type_hints(cls)[name]
    optional = type(None) in getattr(hint, "__args__", ())
    base = next((a for a in getattr(hint, "__args__", (hint,)) if a is not type(None)), hint)
    if value is None or (
        optional and isinstance(value, str) and value.strip().lower() in ("", "none", "null")
    ):
        if optional:
            return None
        raise ConfigError(name, f"must be set (a {base.__name__})")
    try:
        if base is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, int | float) and value in (0, 1):
                return bool(value)
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off", ""):
                return False
            raise ValueError
        if base is int:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(str(value).strip()) if isinstance(value, str) else int(value)
        if base is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(
            name, f"expected {'true/false' if base is bool else base.__name__}, got {value!r}"
        ) from None


def _apply(cls: type, values: dict[str, Any], updates: Mapping[str, Any], source: str, strict: bool) -> None:
    names = set(field_names(cls))
    for key, value in updates.items():
        if key not in names:
            if strict:
                allowed = ", ".join(sorted(names))
                raise ConfigError(key, f"unknown {source} field for {cls.__name__}; allowed: {allowed}")
            continue
        values[key] = _coerce(cls, key, value)


def resolve(
    cls: type,
    tier: int | str | None = None,
    preset: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
):
    """Build a validated `cls` (CollectConfig or TrainConfig): defaults -> tier -> preset -> env -> overrides.

    `overrides` are the explicit flags or API fields; unknown keys are an error. `env` defaults to os.environ.
    """
    overrides = dict(overrides or {})
    tier = overrides.pop("tier", tier)
    preset = overrides.pop("preset", preset)
    tier = _coerce(cls, "tier", 1 if tier is None else tier)
    if tier not in TIERS:
        raise ConfigError("tier", f"must be one of {', '.join(map(str, TIERS))}, got {tier}")
    if preset is not None and preset not in EXTRA_PRESETS:
        raise ConfigError("preset", f"unknown preset {preset!r}; allowed: {', '.join(EXTRA_PRESETS)} or none")

    values: dict[str, Any] = {"tier": tier, "preset": preset}
    _apply(cls, values, PRESETS[f"tier{tier}"], "preset", strict=False)
    if preset:
        _apply(cls, values, PRESETS[preset], "preset", strict=False)
    env = os.environ if env is None else env
    from_env = {fld: env[var] for var, fld in ENV_VARS.items() if env.get(var, "") != ""}
    _apply(cls, values, from_env, "environment", strict=False)
    _apply(cls, values, overrides, "override", strict=True)

    if values.get("synthetic"):
        if any(overrides.get(k) not in (None, SYNTHETIC_DOMAIN, SYNTHETIC_TASK) for k in ("domain", "task")):
            raise ConfigError(
                "synthetic",
                f"--synthetic uses the procedural {SYNTHETIC_DOMAIN}-{SYNTHETIC_TASK} environment; "
                "do not combine it with --domain/--task",
            )
        values["domain"], values["task"] = SYNTHETIC_DOMAIN, SYNTHETIC_TASK
        # The ball's speed is tuned for one step per frame; the tiers' repeats are chosen for DMC physics.
        if "action_repeat" in values and "action_repeat" not in overrides and "action_repeat" not in from_env:
            values["action_repeat"] = 1
    cfg = cls(**values)
    validate(cfg)
    return cfg


def resolve_collect(tier=None, preset=None, overrides=None, env=None) -> CollectConfig:
    cfg = resolve(CollectConfig, tier, preset, overrides, env)
    if cfg.data_path is None:
        cfg.data_path = str(default_data_path(cfg.domain, cfg.task, cfg.tier, cfg.seed, cfg.preset))
    _check_writable("data_path", cfg.data_path)
    return cfg


def resolve_train(tier=None, preset=None, overrides=None, env=None) -> TrainConfig:
    cfg = resolve(TrainConfig, tier, preset, overrides, env)
    if cfg.data_path is None:
        own = default_data_path(cfg.domain, cfg.task, cfg.tier, cfg.seed, cfg.preset)
        fallback = default_data_path(cfg.domain, cfg.task, cfg.tier, DEFAULT_SEED, cfg.preset)
        cfg.data_path = str(own if own.exists() or not fallback.exists() else fallback)
    if cfg.checkpoint_dir is None:
        cfg.checkpoint_dir = str(Path("checkpoints") / run_name(cfg))
    _check_writable("checkpoint_dir", str(Path(cfg.checkpoint_dir) / "x"))
    return cfg


# ---------------------------------------------------------------------------------------------------------------
# Validation


def valid_tasks_message(domain: str | None = None) -> str:
    if domain in DMC_TASKS:
        return f"valid tasks for {domain}: {', '.join(DMC_TASKS[domain])}"
    return "valid domains: " + ", ".join(sorted(DMC_TASKS)) + f" (or --synthetic for {SYNTHETIC_DOMAIN})"


def _positive(cfg: Any, *names: str) -> None:
    for name in names:
        if hasattr(cfg, name) and getattr(cfg, name) <= 0:
            raise ConfigError(name, f"must be a positive number, got {getattr(cfg, name)}")


def _check_time_limit(cfg: CollectConfig) -> None:
    """Repeated actions must not run an episode past the task's time limit (the physics would go on unseen)."""
    if cfg.synthetic or cfg.domain in UNLIMITED_DOMAINS or cfg.action_repeat == 1:
        return  # repeat 1 keeps the old behaviour: max_steps may exceed the limit (the collector lifts it)
    if cfg.max_steps * cfg.action_repeat > DMC_STEP_LIMIT:
        raise ConfigError(
            "action_repeat",
            f"{cfg.action_repeat} x max_steps {cfg.max_steps} = {cfg.max_steps * cfg.action_repeat} control steps "
            f"exceeds the {DMC_STEP_LIMIT}-step time limit of {cfg.domain}-{cfg.task}; allowed: action_repeat <= "
            f"{max(1, DMC_STEP_LIMIT // cfg.max_steps)} for {cfg.max_steps} steps per episode",
        )


def _check_writable(name: str, path: str) -> None:
    """The parent directory must exist or be creatable, and be writable."""
    parent = Path(path).expanduser().resolve().parent
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(name, f"cannot write {path}: {probe} is not a writable directory")


def validate(cfg: CollectConfig | TrainConfig) -> None:
    """Raise ConfigError naming the first wrong field and what is allowed."""
    if cfg.domain == SYNTHETIC_DOMAIN:
        if cfg.task != SYNTHETIC_TASK:
            raise ConfigError("task", f"the {SYNTHETIC_DOMAIN} domain has one task: {SYNTHETIC_TASK}")
    elif cfg.domain not in DMC_TASKS:
        raise ConfigError("domain", f"unknown domain {cfg.domain!r}; {valid_tasks_message()}")
    elif cfg.task not in DMC_TASKS[cfg.domain]:
        raise ConfigError(
            "task", f"unknown task {cfg.task!r} for {cfg.domain}; {valid_tasks_message(cfg.domain)}"
        )
    if cfg.seed < 0:
        raise ConfigError("seed", f"must be >= 0, got {cfg.seed}")
    if not IMG_SIZE_MIN <= cfg.img_size <= IMG_SIZE_MAX:
        raise ConfigError(
            "img_size", f"must be between {IMG_SIZE_MIN} and {IMG_SIZE_MAX} pixels, got {cfg.img_size}"
        )
    if isinstance(cfg, CollectConfig):
        _positive(cfg, "num_episodes", "max_steps", "action_repeat")
        _check_time_limit(cfg)
        if cfg.camera_id < 0:
            raise ConfigError("camera_id", f"must be >= 0, got {cfg.camera_id}")
        if cfg.workers < 0:
            raise ConfigError("workers", f"must be >= 0 (0 = number of cores), got {cfg.workers}")
        if cfg.compression not in ("lzf", "gzip"):
            raise ConfigError("compression", f"must be lzf or gzip, got {cfg.compression!r}")
        return
    _positive(
        cfg,
        "video_length",
        "latent_dim",
        "hidden_dim",
        "context_dim",
        "max_components",
        "num_epochs",
        "batch_size",
        "lr",
        "gradient_accumulation_steps",
        "action_repeat",
        "recon_std",
        "rollout_samples",
        "save_every",
        "eval_every",
        "log_every",
    )
    if cfg.video_length < 2:
        raise ConfigError("video_length", f"must be at least 2 frames, got {cfg.video_length}")
    if not 0.0 < cfg.val_fraction < 1.0:
        raise ConfigError("val_fraction", f"must be strictly between 0 and 1, got {cfg.val_fraction}")
    for name in (
        "weight_decay",
        "grad_clip",
        "kl_beta",
        "beta_warmup_steps",
        "context_pred_weight",
        "num_workers",
        "free_nats",
        "rollout_context",
        "eval_horizon",
        "eval_clips",
        "video_clips",
        "inject_nan_step",
        "overshoot_steps",
        "overshoot_past_clip",
        "overshoot_past_starts",
        "overshoot_weight",
    ):
        if getattr(cfg, name) < 0:
            raise ConfigError(name, f"must be >= 0, got {getattr(cfg, name)}")
    if not 0.0 < cfg.overshoot_fraction <= 1.0:
        raise ConfigError(
            "overshoot_fraction", f"must be in (0, 1] (1 = every prediction), got {cfg.overshoot_fraction}"
        )
    if not 0.0 < cfg.overshoot_past_fraction <= 1.0:
        raise ConfigError(
            "overshoot_past_fraction",
            f"must be in (0, 1] (1 = every prediction), got {cfg.overshoot_past_fraction}",
        )
    if not 0.0 <= cfg.lr_final_ratio <= 1.0:
        raise ConfigError(
            "lr_final_ratio", f"must be between 0 and 1 (1 = constant lr), got {cfg.lr_final_ratio}"
        )
    if not 0.0 <= cfg.ema_decay < 1.0:
        raise ConfigError("ema_decay", f"must be in [0, 1) (0 = no moving average), got {cfg.ema_decay}")
    if not 0.0 <= cfg.kl_balance <= 1.0:
        raise ConfigError("kl_balance", f"must be between 0 and 1, got {cfg.kl_balance}")
    deepest = cfg.video_length - 1 + cfg.overshoot_past_clip  # from the clip's first frame to its last target
    if cfg.overshoot_steps > deepest:
        past = f" + overshoot_past_clip {cfg.overshoot_past_clip}" if cfg.overshoot_past_clip else ""
        raise ConfigError(
            "overshoot_steps",
            f"must be below video_length ({cfg.video_length}){past}: 0 to {deepest}, got {cfg.overshoot_steps}"
            + ("" if cfg.overshoot_past_clip else " (overshoot_past_clip scores frames past the clip)"),
        )
    if cfg.rollout_latent not in ROLLOUT_LATENTS:
        raise ConfigError(
            "rollout_latent", f"must be one of {', '.join(ROLLOUT_LATENTS)}, got {cfg.rollout_latent!r}"
        )
    if cfg.nan_policy not in NAN_POLICIES:
        raise ConfigError("nan_policy", f"must be one of {', '.join(NAN_POLICIES)}, got {cfg.nan_policy!r}")
    if cfg.data_on_gpu not in DATA_ON_GPU:
        raise ConfigError("data_on_gpu", f"must be one of {', '.join(DATA_ON_GPU)}, got {cfg.data_on_gpu!r}")
    if cfg.device not in DEVICES and not (cfg.device.startswith("cuda:") and cfg.device[5:].isdigit()):
        raise ConfigError("device", f"must be one of {', '.join(DEVICES)} or cuda:N, got {cfg.device!r}")


# ---------------------------------------------------------------------------------------------------------------
# Names and paths


def run_name(cfg: CollectConfig | TrainConfig) -> str:
    """The seed's naming: {domain}-{task}-tier{N}-seed{S} (plus -debug for the debug preset)."""
    suffix = f"-{cfg.preset}" if cfg.preset else ""
    return f"{cfg.domain}-{cfg.task}-tier{cfg.tier}-seed{cfg.seed}{suffix}"


def default_data_path(domain: str, task: str, tier: int, seed: int, preset: str | None = None) -> Path:
    suffix = f"-{preset}" if preset else ""
    root = Path(os.environ.get("AIME_DATA_DIR", "data"))
    return root / f"{domain}-{task}-tier{tier}-seed{seed}{suffix}.hdf5"


def collect_config_for(train: TrainConfig) -> CollectConfig:
    """The collection that produces the dataset a training config expects (for error messages and the API)."""
    overrides: dict[str, Any] = {
        "img_size": train.img_size,
        "action_repeat": train.action_repeat,
        "data_path": train.data_path,
        "synthetic": train.synthetic,
    }
    if not train.synthetic:
        overrides |= {"domain": train.domain, "task": train.task}
    return resolve_collect(train.tier, train.preset, overrides=overrides, env={})


def collect_command(cfg: CollectConfig) -> str:
    """The `aime collect` command line that produces `cfg.data_path`."""
    parts = ["aime collect", f"--tier {cfg.tier}"]
    if cfg.preset:
        parts.append(f"--preset {cfg.preset}")
    if cfg.synthetic:
        parts.append("--synthetic")
    else:
        parts += [f"--domain {cfg.domain}", f"--task {cfg.task}"]
    parts.append(f"--img-size {cfg.img_size}")
    if cfg.action_repeat != 1:
        parts.append(f"--action-repeat {cfg.action_repeat}")
    parts.append(f"--out {cfg.data_path}")
    return " ".join(parts)


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(cls: type, data: Mapping[str, Any]):
    """Rebuild a config stored with a run or a checkpoint; fields added since are filled with defaults."""
    known = set(field_names(cls))
    return cls(**{k: v for k, v in data.items() if k in known})
