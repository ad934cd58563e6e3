"""Collect pixel episodes with uniform random actions into one HDF5 file: parallel, deterministic, resumable.

Episode i uses seed `seed + i` for the environment and for its actions, so the arrays do not depend on which
worker process collected it. Workers (spawned processes: MuJoCo GL contexts do not survive fork) each hold one
environment; the parent writes finished episodes in episode order to `<out>.part`, flushing after each, and
renames it to `<out>` at the end. A killed run leaves only the .part file; the same command resumes from it.
"""

from __future__ import annotations

import dataclasses
import itertools
import multiprocessing
import os
import threading
import time
import warnings
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from aime_core.config import CollectConfig
from aime_core.envs import default_backend, diagnose_rendering, make_env, run_episode
from aime_core.h5io import (
    RESUME_KEYS,
    DataError,
    finished_episodes,
    read_info,
    root_attrs,
    write_episode,
)
from aime_core.sinks import ShouldStop, Sink, never_stop

POLL_SECONDS = 0.5  # how often should_stop is checked while waiting for an episode
SPEC_KEYS = ("action_shape", "action_minimum", "action_maximum")  # known once an environment has started


class CollectError(RuntimeError):
    """The collection cannot start or continue; the message says what to do."""


@dataclass
class CollectResult:
    path: str
    episodes: int
    frames: int
    bytes: int
    seconds: float
    resumed_episodes: int
    cancelled: bool


def part_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".part")


def _expected(cfg: CollectConfig) -> dict:
    return {k: getattr(cfg, k) for k in RESUME_KEYS}


def _differences(attrs, cfg: CollectConfig) -> list[str]:
    """Settings of an existing file that differ from the command's, as 'key: file=x, command=y'."""
    out = []
    for key, want in _expected(cfg).items():
        have = attrs.get(key)
        have = have.decode() if isinstance(have, bytes) else have
        have = have.item() if isinstance(have, np.generic) else have
        if have is None or have != want:
            out.append(f"{key}: file={have!r}, command={want!r}")
    return out


# ---------------------------------------------------------------------------------------------------------------
# Worker side (one environment per process)

_worker_env = None
_worker_cfg: CollectConfig | None = None
_worker_error: str | None = None
_worker_stop = None  # multiprocessing.Event set by the parent to make workers drop their episode


class EnvStartError(CollectError):
    """The environment could not be created (often: headless rendering does not work)."""


def _start_env(cfg: CollectConfig):
    try:
        return make_env(cfg)
    except Exception as exc:
        raise EnvStartError(f"cannot start {cfg.domain}-{cfg.task}: {type(exc).__name__}: {exc}") from exc


def _exit_with_parent() -> None:
    """Exit when the parent dies: a SIGKILLed `aime collect` (or Celery task) must not leave workers behind,
    each holding a GL context, blocked forever on a queue nobody writes to."""
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:  # an orphan is re-parented to init (or a subreaper)
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _init_worker(cfg_dict: dict, stop) -> None:
    global _worker_env, _worker_cfg, _worker_error, _worker_stop
    _exit_with_parent()
    _worker_stop = stop
    _worker_cfg = CollectConfig(**cfg_dict)
    try:  # an initializer that raises makes the pool respawn the worker forever: report it per task instead
        _worker_env = _start_env(_worker_cfg)
    except EnvStartError as exc:
        _worker_error = str(exc)


def _collect_one(i: int):
    if _worker_error is not None:
        raise EnvStartError(_worker_error)
    ep = run_episode(_worker_env, i, _worker_cfg.seed + i, _worker_cfg.max_steps, abandon=_worker_stop.is_set)
    return ep, (_worker_env.action_shape, _worker_env.action_minimum, _worker_env.action_maximum)


def _episodes_in_process(cfg: CollectConfig, indices: list[int], should_stop: ShouldStop):
    env = _start_env(cfg)
    try:
        for i in indices:
            if should_stop():
                return
            ep = run_episode(env, i, cfg.seed + i, cfg.max_steps)
            yield ep, (env.action_shape, env.action_minimum, env.action_maximum)
    finally:
        env.close()


def _episodes_in_pool(cfg: CollectConfig, indices: list[int], workers: int, should_stop: ShouldStop):
    # concurrent.futures, not multiprocessing.Pool: Pool silently replaces a dead worker while its episode is
    # lost; the executor marks itself broken instead, which we report. Workers are never terminated from here:
    # a worker killed while writing its result leaves a torn message in the result pipe and the executor's
    # manager thread blocks on it forever. They are told to drop their episode through `stop` instead.
    ctx = multiprocessing.get_context("spawn")  # MuJoCo GL contexts do not survive fork
    stop = ctx.Event()
    pool = ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=_init_worker, initargs=(dataclasses.asdict(cfg), stop)
    )
    pending: deque = deque()
    todo = iter(indices)
    try:
        for i in itertools.islice(todo, 2 * workers):  # a few in flight: workers never idle, memory bounded
            pending.append(pool.submit(_collect_one, i))
        while pending:
            head = pending[0]
            while True:
                if should_stop():
                    return
                try:
                    result = head.result(timeout=POLL_SECONDS)  # in episode order
                    break
                except FuturesTimeout:
                    continue
                except BrokenProcessPool:
                    raise CollectError(
                        "a collector process died (killed, out of memory or crashed); finished episodes "
                        "are kept: run the same command again to resume"
                    ) from None
            pending.popleft()
            nxt = next(todo, None)
            if nxt is not None:
                pending.append(pool.submit(_collect_one, nxt))
            yield result
    finally:
        stop.set()  # workers in an episode return within one environment step
        pool.shutdown(wait=True, cancel_futures=True)


def _episodes(cfg: CollectConfig, indices: list[int], workers: int, should_stop: ShouldStop):
    """(episode, action spec) in episode order; falls back to osmesa if the first environment cannot render."""
    stream = (
        _episodes_in_process(cfg, indices, should_stop)
        if workers == 1
        else _episodes_in_pool(cfg, indices, workers, should_stop)
    )
    try:
        first = next(stream, None)
    except EnvStartError:
        if cfg.synthetic or not diagnose_rendering():
            raise
        # Fresh processes pick up the fallback backend (this one may have loaded the failing one).
        stream = _episodes_in_pool(cfg, indices, workers, should_stop)
        first = next(stream, None)
    if first is not None:
        yield first
        yield from stream


# ---------------------------------------------------------------------------------------------------------------
# Parent side


def _open_part(cfg: CollectConfig, part: Path) -> h5py.File:
    """Open the .part file for resuming (checking its settings) or start a new one."""
    if part.exists():
        try:
            f = h5py.File(part, "a")
        except OSError as exc:
            if "lock" in str(exc).lower():  # never delete what a running collection is writing
                raise CollectError(
                    f"another collection is writing {part}; wait for it or change --out"
                ) from exc
            # Killed while HDF5 metadata was being written: nothing usable in it.
            warnings.warn(f"{part} is unreadable ({exc}); starting the collection over", stacklevel=2)
            part.unlink()
        else:
            if "format_version" not in f.attrs:  # killed before the settings were written
                f.close()
                part.unlink()
            else:
                diff = _differences(f.attrs, cfg)
                if diff:
                    f.close()
                    raise CollectError(
                        f"{part} holds an interrupted collection with other settings ({'; '.join(diff)}). "
                        f"Delete {part} to start over, or change --out to collect elsewhere."
                    )
                return f
    part.parent.mkdir(parents=True, exist_ok=True)
    f = h5py.File(part, "w")
    f.attrs.update({k: v for k, v in root_attrs(cfg, (), (), ()).items() if k not in SPEC_KEYS})
    f.flush()
    return f


def collect(
    cfg: CollectConfig, sinks: Sink | None = None, should_stop: ShouldStop = never_stop
) -> CollectResult:
    """Collect `cfg.num_episodes` episodes to `cfg.data_path` (resuming its .part file if there is one)."""
    sinks = sinks or Sink()
    final = Path(cfg.data_path)
    part = part_path(final)
    start = time.perf_counter()
    if final.exists():
        try:
            info = read_info(final)
        except DataError as exc:
            raise CollectError(f"{final} exists and is not a valid dataset ({exc}); delete it first") from exc
        diff = _differences(info, cfg)
        if info["episodes"] != cfg.num_episodes:
            diff.append(f"episodes: file={info['episodes']}, command={cfg.num_episodes}")
        if diff:
            raise CollectError(
                f"{final} already exists with other settings ({'; '.join(diff)}). Delete it or change --out."
            )
        sinks.progress(info["episodes"], cfg.num_episodes, "episode", {"frames/s": 0.0})
        return CollectResult(
            str(final), info["episodes"], info["frames"], info["bytes"], 0.0, info["episodes"], False
        )

    if not cfg.synthetic:
        default_backend()
    f = _open_part(cfg, part)
    try:
        resumed = min(finished_episodes(f), cfg.num_episodes)
        for name in [n for n in f if n.startswith("episode_") and int(n.split("_")[1]) >= resumed]:
            del f[name]  # unfinished (killed mid-write) or beyond the requested count
        frames = sum(int(f[f"episode_{i}"].attrs["length"]) for i in range(resumed))
        f.attrs["num_episodes"], f.attrs["frames"] = resumed, frames
        indices = list(range(resumed, cfg.num_episodes))
        workers = min(cfg.workers or os.cpu_count() or 1, max(1, len(indices)))
        if workers > 1 and multiprocessing.current_process().daemon:  # daemons may not have children
            sinks.event(
                "log", {"level": "warning", "message": "in a daemon process: collecting in this process"}
            )
            workers = 1
        sinks.progress(resumed, cfg.num_episodes, "episode", {"frames/s": 0.0})
        if indices:
            stream = _episodes(cfg, indices, workers, should_stop)
            new_frames, t_run = 0, time.perf_counter()
            for done, (ep, spec) in enumerate(stream, start=resumed + 1):
                assert ep.index == done - 1, (ep.index, done)  # written strictly in episode order
                if "action_shape" not in f.attrs:
                    f.attrs.update({k: v for k, v in root_attrs(cfg, *spec).items() if k in SPEC_KEYS})
                write_episode(f, ep, cfg.compression)
                frames += ep.length
                new_frames += ep.length
                f.attrs["num_episodes"], f.attrs["frames"] = done, frames
                f.flush()  # a kill after this point keeps the episode
                fps = new_frames / (time.perf_counter() - t_run)
                sinks.progress(done, cfg.num_episodes, "episode", {"frames/s": round(fps, 1)})
        n = int(f.attrs["num_episodes"])
    except BaseException:
        empty = finished_episodes(f) == 0
        f.close()
        if empty:  # nothing worth resuming (say the environment could not start): leave no .part behind
            part.unlink()
        raise
    f.close()
    with open(
        part, "rb+"
    ) as fh:  # on disk before the rename, so a power cut cannot leave a hollow final file
        os.fsync(fh.fileno())
    if n < cfg.num_episodes:  # should_stop() turned true: the .part file keeps what is done, for resuming
        return CollectResult(
            str(part), n, frames, part.stat().st_size, time.perf_counter() - start, resumed, True
        )
    os.replace(part, final)  # atomic: the final name only ever holds a complete file
    info = read_info(final)
    sinks.event(
        "dataset",
        {
            "path": str(final),
            "domain": cfg.domain,
            "task": cfg.task,
            "tier": cfg.tier,
            "seed": cfg.seed,
            "episodes": info["episodes"],
            "frames": info["frames"],
            "bytes": info["bytes"],
            "img_size": cfg.img_size,
        },
    )
    seconds = time.perf_counter() - start
    return CollectResult(str(final), info["episodes"], info["frames"], info["bytes"], seconds, resumed, False)
