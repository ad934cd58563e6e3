"""The seed-compatible scripts: thin wrappers over `aime collect --tier N` honouring the seed's variables."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from aime_core.h5io import read_info

ROOT = Path(__file__).resolve().parents[2]
CLEAN = {k: v for k, v in os.environ.items() if not k.startswith("AIME_")}


def _run(script: Path, cwd: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(script), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_tier1_script_honours_the_guide_variables(tmp_path):
    env = dict(CLEAN, AIME_DOMAIN="pendulum", AIME_TASK="swingup", AIME_NUM_EPISODES="2", AIME_SEED="4")
    run = _run(ROOT / "scripts/collect_tier1_data.sh", tmp_path, env, "--preset", "debug", "--max-steps", "3")
    assert run.returncode == 0, run.stderr
    out = tmp_path / "data/pendulum-swingup-tier1-seed4-debug.hdf5"  # the default name, under ./data
    info = read_info(out)
    assert (info["domain"], info["task"], info["episodes"], info["seed"], info["tier"]) == (
        "pendulum",
        "swingup",
        2,
        4,
        1,
    )
    assert f"saved to data/{out.name}" in run.stdout


def test_tier2_and_tier3_scripts_pass_flags_and_data_path_on(tmp_path):
    for tier in (2, 3):
        out = tmp_path / f"t{tier}.hdf5"
        env = dict(CLEAN, AIME_DATA_PATH=str(out), AIME_NUM_EPISODES="2")
        run = _run(
            ROOT / f"scripts/collect_tier{tier}_data.sh", tmp_path, env, "--synthetic", "--max-steps", "3"
        )
        assert run.returncode == 0, run.stderr
        info = read_info(out)
        assert (info["tier"], info["episodes"], info["img_size"], info["max_steps"]) == (tier, 2, 84, 3)


def test_fresh_clone_without_venv_falls_back_to_aime_on_path(tmp_path):
    clone = tmp_path / "clone"
    (clone / "scripts").mkdir(parents=True)
    for name in ("collect_tier1_data.sh", "_aime.sh"):
        shutil.copy(ROOT / "scripts" / name, clone / "scripts")
    env = dict(CLEAN, PATH=f"{ROOT / '.venv/bin'}:{os.environ['PATH']}", AIME_NUM_EPISODES="1")
    run = _run(clone / "scripts/collect_tier1_data.sh", clone, env, "--synthetic", "--preset", "debug")
    assert run.returncode == 0, run.stderr
    assert read_info(clone / "data/synthetic-bouncing_ball-tier1-seed0-debug.hdf5")["episodes"] == 1
    bare = dict(CLEAN, PATH="/usr/bin:/bin")
    run = _run(clone / "scripts/collect_tier1_data.sh", clone, bare, "--synthetic")
    assert run.returncode == 127 and "no aime command: run 'make install'" in run.stderr
