#!/usr/bin/env bash
# AIME Tier 1: Ultra-Fast Debug (cartpole-swingup, 10 frames x 64 px): a thin wrapper over `aime train --tier 1` that prints a banner and passes extra flags on:
#   bash scripts/tier1_ultrafast_debug.sh --use_3d_conv --temporal_downsample
# Honours the seed's variables AIME_DOMAIN, AIME_TASK, AIME_SEED, AIME_DATA_PATH, AIME_DEBUG, WANDB_PROJECT (read by
# `aime train`); AIME_ENV_NAME (a conda env in the seed) is accepted and ignored: the project runs from .venv.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_aime.sh"
train_tier 1 "AIME Tier 1: Ultra-Fast Debug (cartpole-swingup, 10 frames x 64 px)" "$@"
