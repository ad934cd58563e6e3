#!/usr/bin/env bash
# Tier 2 data (default reacher-easy, 200 episodes x 500 steps at 84x84): a thin wrapper over `aime collect --tier 2`.
# Honours AIME_DOMAIN, AIME_TASK, AIME_NUM_EPISODES, AIME_SEED and AIME_DATA_PATH; extra flags are passed on:
#   AIME_DOMAIN=pendulum AIME_TASK=swingup bash scripts/collect_tier2_data.sh
#   AIME_NUM_EPISODES=100 bash scripts/collect_tier2_data.sh --workers 4 --fast-render
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_aime.sh"
exec "$AIME" collect --tier 2 "$@"
