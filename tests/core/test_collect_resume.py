"""Atomic, resumable collection: a real SIGKILL of `aime collect`, cancellation, and refusing foreign .part files."""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from aime_core.collect import CollectError, collect, part_path
from aime_core.config import resolve_collect
from aime_core.h5io import read_info
from aime_core.sinks import Sink

AIME = [sys.executable, "-m", "aime_core.cli"]


def _arrays(path):
    with h5py.File(path) as f:
        return {f"{g}/{k}": f[f"{g}/{k}"][()] for g in f for k in f[g]}


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and b"spawn_main" in (stat.parent / "cmdline").read_bytes():
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
def test_sigkill_leaves_no_final_file_and_rerun_resumes(tmp_path):
    out = tmp_path / "cart.hdf5"
    args = AIME + ["collect", "--preset", "debug", "--episodes", "6", "--max-steps", "30", "--workers", "2"]
    args += ["--out", str(out)]
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    # Read the progress bar until two episodes are written, then kill the collector outright.
    seen, deadline = b"", time.time() + 120
    while time.time() < deadline and not re.search(rb" [2-5]/6 ", seen):
        chunk = os.read(proc.stderr.fileno(), 4096)
        if not chunk:
            break
        seen += chunk
    assert re.search(rb" [2-5]/6 ", seen), seen.decode(errors="replace")[-2000:]
    workers = _children(proc.pid)
    assert len(workers) == 2
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    # Its worker processes notice and exit instead of lingering as orphans.
    deadline = time.time() + 15
    while time.time() < deadline and any(_alive(pid) for pid in workers):
        time.sleep(0.1)
    assert not [pid for pid in workers if _alive(pid)]
    assert not out.exists()  # never a half file under the final name
    part = part_path(out)
    with h5py.File(part) as f:
        kept = int(f.attrs["num_episodes"])
    assert 2 <= kept < 6

    # A different setting is refused with the fix spelled out; the .part file is left alone.
    other = subprocess.run(args + ["--img-size", "40"], capture_output=True, text=True, timeout=120)
    assert other.returncode == 1
    assert "img_size: file=32, command=40" in other.stderr and f"Delete {part}" in other.stderr
    assert part.exists() and not out.exists()

    again = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    resumed = int(re.search(r"resumed from (\d+) finished episode", again.stdout).group(1))
    assert resumed >= kept
    assert f"saved to {out}" in again.stdout and "6  x  30 steps  =  180 frames" in again.stdout
    assert out.exists() and not part.exists()

    # The resumed file holds exactly what an uninterrupted collection gives.
    ref = tmp_path / "ref.hdf5"
    collect(
        resolve_collect(1, "debug", overrides=dict(num_episodes=6, max_steps=30, data_path=str(ref)), env={})
    )
    a, b = _arrays(out), _arrays(ref)
    assert a.keys() == b.keys() and len(a) == 36  # 6 episodes x 6 arrays (states included)
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_should_stop_cancels_and_the_next_call_resumes(tmp_path):
    cfg = resolve_collect(
        1, "debug", overrides=dict(synthetic=True, data_path=str(tmp_path / "s.hdf5")), env={}
    )

    class Progress(Sink):
        done = 0

        def progress(self, done, total, unit, postfix=None):
            Progress.done = done

    def stop_after_three():
        return Progress.done >= 3

    first = collect(cfg, Progress(), should_stop=stop_after_three)  # two worker processes
    assert first.cancelled and first.episodes == 3 and first.path == str(part_path(cfg.data_path))
    assert not os.path.exists(cfg.data_path)
    second = collect(cfg)
    assert not second.cancelled and second.resumed_episodes == 3 and second.episodes == 6
    ref = resolve_collect(
        1, "debug", overrides=dict(synthetic=True, data_path=str(tmp_path / "r.hdf5")), env={}
    )
    collect(ref)
    a, b = _arrays(cfg.data_path), _arrays(ref.data_path)
    assert all(np.array_equal(a[k], b[k]) for k in a) and len(a) == 36  # 6 episodes x 6 arrays


def test_unreadable_part_file_starts_over(tmp_path):
    cfg = resolve_collect(
        1, "debug", overrides=dict(synthetic=True, data_path=str(tmp_path / "s.hdf5")), env={}
    )
    part_path(cfg.data_path).write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 100)  # killed in the first write
    with pytest.warns(UserWarning, match="unreadable"):
        result = collect(cfg)
    assert result.resumed_episodes == 0 and read_info(result.path)["episodes"] == 6


def test_foreign_settings_in_part_file_are_refused(tmp_path):
    out = str(tmp_path / "s.hdf5")
    cfg = resolve_collect(1, "debug", overrides=dict(synthetic=True, data_path=out, seed=3), env={})
    collect(cfg, should_stop=lambda: True)  # leaves an empty .part with seed 3
    with pytest.raises(CollectError, match=r"seed: file=3, command=4.*Delete .*s\.hdf5\.part"):
        collect(resolve_collect(1, "debug", overrides=dict(synthetic=True, data_path=out, seed=4), env={}))


def test_cli_honours_the_seed_environment_variables(tmp_path):
    out = tmp_path / "env.hdf5"
    env = dict(os.environ, AIME_NUM_EPISODES="2", AIME_SEED="5", AIME_DATA_PATH=str(out))
    run = subprocess.run(
        AIME + ["collect", "--synthetic", "--preset", "debug"], capture_output=True, text=True, env=env
    )
    assert run.returncode == 0, run.stderr
    info = read_info(out)
    assert (info["episodes"], info["seed"], info["img_size"]) == (2, 5, 32)
    assert "episode/s" in run.stderr and "frames/s=" in run.stderr  # the progress bar
    assert f"saved to {out}" in run.stdout and "synthetic-bouncing_ball" in run.stdout
    # Explicit flags win over the environment.
    out2 = tmp_path / "flag.hdf5"
    run = subprocess.run(
        AIME + ["collect", "--synthetic", "--preset", "debug", "--episodes", "3", "--out", str(out2)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert run.returncode == 0 and read_info(out2)["episodes"] == 3


def test_cli_default_output_name_and_bad_input(tmp_path):
    env = dict(os.environ, AIME_DATA_DIR=str(tmp_path))
    run = subprocess.run(
        AIME
        + [
            "collect",
            "--tier",
            "2",
            "--synthetic",
            "--episodes",
            "2",
            "--max-steps",
            "5",
            "--img-size",
            "16",
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "synthetic-bouncing_ball-tier2-seed0.hdf5").exists()
    bad = subprocess.run(
        AIME + ["collect", "--domain", "cartpole", "--task", "spin"], capture_output=True, text=True
    )
    assert bad.returncode == 2
    assert bad.stderr.startswith(
        "aime: error: task: unknown task 'spin' for cartpole; valid tasks for cartpole:"
    )
    bad = subprocess.run(AIME + ["collect", "--episodes", "0", "--synthetic"], capture_output=True, text=True)
    assert bad.returncode == 2 and "num_episodes: must be a positive number, got 0" in bad.stderr


@pytest.mark.slow
def test_broken_egl_falls_back_to_osmesa_or_says_how_to_fix_it(tmp_path):
    out = tmp_path / "gl.hdf5"
    env = dict(os.environ, MUJOCO_GL="egl", __EGL_VENDOR_LIBRARY_FILENAMES=str(tmp_path / "no-vendor.json"))
    run = subprocess.run(
        AIME + ["collect", "--preset", "debug", "--episodes", "1", "--max-steps", "3", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    if run.returncode == 0:  # OSMesa is installed: the fallback collected the data
        assert read_info(out)["render_backend"] == "osmesa"
    else:
        assert run.returncode == 1
        assert "aime: error: headless MuJoCo rendering does not work (MUJOCO_GL=egl:" in run.stderr
        assert "MUJOCO_GL=osmesa:" in run.stderr and "apt-get install libegl1" in run.stderr
        assert "--synthetic" in run.stderr
        assert not out.exists() and not part_path(out).exists()


def test_environment_that_cannot_start_is_a_clear_error(tmp_path):
    out = tmp_path / "cam.hdf5"
    run = subprocess.run(
        AIME + ["collect", "--preset", "debug", "--camera-id", "7", "--workers", "1", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 1
    assert "cannot start cartpole-swingup: ValueError: camera_id 7 does not exist" in run.stderr
    assert "it has 2 camera(s)" in run.stderr
    assert not out.exists() and not part_path(out).exists()


def test_gzip_compression_is_applied_and_recorded(tmp_path):
    cfg = resolve_collect(
        1,
        "debug",
        overrides=dict(synthetic=True, compression="gzip", data_path=str(tmp_path / "g.hdf5")),
        env={},
    )
    collect(cfg)
    info = read_info(cfg.data_path)
    assert info["compression"] == "gzip" and info["synthetic"] is True
    with h5py.File(cfg.data_path) as f:
        assert f["episode_0/observations"].compression == "gzip"
    ref = resolve_collect(
        1, "debug", overrides=dict(synthetic=True, data_path=str(tmp_path / "l.hdf5")), env={}
    )
    collect(ref)
    a, b = _arrays(cfg.data_path), _arrays(ref.data_path)
    assert all(np.array_equal(a[k], b[k]) for k in a)  # same arrays, other codec
    assert info["bytes"] < read_info(ref.data_path)["bytes"]


def test_part_file_being_written_by_another_collection_is_left_alone(tmp_path):
    out = tmp_path / "busy.hdf5"
    with h5py.File(
        part_path(out), "w"
    ) as f:  # this process holds the .part open, as a running collection would
        f.attrs["format_version"] = 1
        f.flush()
        run = subprocess.run(
            AIME + ["collect", "--synthetic", "--preset", "debug", "--out", str(out)],
            capture_output=True,
            text=True,
        )
        assert run.returncode == 1
        assert f"another collection is writing {part_path(out)}" in run.stderr
        assert part_path(out).exists() and not out.exists()


@pytest.mark.slow
def test_a_worker_killed_mid_collection_is_reported_not_waited_for(tmp_path):
    cfg = resolve_collect(
        1,
        "debug",
        overrides=dict(num_episodes=6, max_steps=40, workers=2, data_path=str(tmp_path / "w.hdf5")),
        env={},
    )

    class KillOneWorker(Sink):
        def progress(self, done, total, unit, postfix=None):
            if done == 1:
                os.kill(multiprocessing.active_children()[0].pid, signal.SIGKILL)

    with pytest.raises(CollectError, match="a collector process died"):
        collect(cfg, KillOneWorker())
    assert not os.path.exists(cfg.data_path)
    with h5py.File(part_path(cfg.data_path)) as f:
        assert int(f.attrs["num_episodes"]) >= 1  # kept for the re-run
    assert collect(cfg).resumed_episodes >= 1 and read_info(cfg.data_path)["episodes"] == 6
