#!/usr/bin/env bash
# AIME Tier 2: Medium Validation (reacher-easy, 20 frames x 84 px, AMP): a thin wrapper over `aime train --tier 2` that prints a banner and passes extra flags on:
#   bash scripts/tier2_medium_validation.sh --batch_size 16 --gradient_accumulation_steps 2
# Honours the seed's variables AIME_DOMAIN, AIME_TASK, AIME_SEED, AIME_DATA_PATH, AIME_DEBUG, WANDB_PROJECT (read by
# `aime train`); AIME_ENV_NAME (a conda env in the seed) is accepted and ignored: the project runs from .venv.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_aime.sh"
train_tier 2 "AIME Tier 2: Medium Validation (reacher-easy, 20 frames x 84 px, AMP)" "$@"
