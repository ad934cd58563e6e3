#!/usr/bin/env bash
# Tier 1 data (default cartpole-swingup, 50 episodes x 200 steps at 64x64): a thin wrapper over `aime collect --tier 1`.
# Honours AIME_DOMAIN, AIME_TASK, AIME_NUM_EPISODES, AIME_SEED and AIME_DATA_PATH; extra flags are passed on:
#   AIME_DOMAIN=pendulum AIME_TASK=swingup bash scripts/collect_tier1_data.sh
#   AIME_NUM_EPISODES=100 bash scripts/collect_tier1_data.sh --workers 4 --fast-render
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_aime.sh"
exec "$AIME" collect --tier 1 "$@"
