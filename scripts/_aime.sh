# Sourced by the seed-compatible scripts in this folder: sets ROOT and AIME (the `aime` command to run).
# Order: the project's .venv, then `aime` on PATH, then `make install` on a fresh clone.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -n "${AIME_ENV_NAME:-}" ]]; then
    echo "note: AIME_ENV_NAME=${AIME_ENV_NAME} is ignored; this project runs from its .venv (make install)." >&2
fi
if [[ -x "$ROOT/.venv/bin/aime" ]]; then
    AIME="$ROOT/.venv/bin/aime"
elif command -v aime >/dev/null 2>&1; then
    AIME=aime
elif [[ -f "$ROOT/Makefile" ]]; then
    echo "No virtual environment in $ROOT/.venv: running 'make install' first." >&2
    make -C "$ROOT" install
    AIME="$ROOT/.venv/bin/aime"
else
    echo "error: no aime command: run 'make install' in $ROOT (or 'pip install -e .')" >&2
    exit 127
fi
export MUJOCO_GL="${MUJOCO_GL:-egl}"

# train_tier N TITLE [flags...]: the seed guide's banner with the resolved settings, then `aime train --tier N`.
train_tier() {
    local tier=$1 title=$2
    shift 2
    echo "======================================================================"
    echo " ${title}"
    echo "======================================================================"
    # The resolved settings: defaults -> tier preset -> AIME_* environment -> the flags given here.
    "$AIME" train --tier "$tier" --banner "$@"
    echo "======================================================================"
    exec "$AIME" train --tier "$tier" "$@"
}
