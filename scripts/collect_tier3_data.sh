#!/usr/bin/env bash
# Tier 3 data (default humanoid-walk, 1000 episodes x 1000 steps at 84x84): a thin wrapper over `aime collect --tier 3`.
# Honours AIME_DOMAIN, AIME_TASK, AIME_NUM_EPISODES, AIME_SEED and AIME_DATA_PATH; extra flags are passed on:
#   AIME_DOMAIN=pendulum AIME_TASK=swingup bash scripts/collect_tier3_data.sh
#   AIME_NUM_EPISODES=100 bash scripts/collect_tier3_data.sh --workers 4 --fast-render
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_aime.sh"
exec "$AIME" collect --tier 3 "$@"
