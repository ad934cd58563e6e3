#!/usr/bin/env bash
# AIME Tier 3: Full Benchmark (humanoid-walk, 50 frames x 84 px, AMP, accumulation 2): a thin wrapper over `aime train --tier 3` that prints a banner and passes extra flags on:
#   for seed in 1 2 3 4 5; do AIME_SEED=$seed bash scripts/tier3_full_benchmark.sh; done
# Honours the seed's variables AIME_DOMAIN, AIME_TASK, AIME_SEED, AIME_DATA_PATH, AIME_DEBUG, WANDB_PROJECT (read by
# `aime train`); AIME_ENV_NAME (a conda env in the seed) is accepted and ignored: the project runs from .venv.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_aime.sh"
train_tier 3 "AIME Tier 3: Full Benchmark (humanoid-walk, 50 frames x 84 px, AMP, accumulation 2)" "$@"
