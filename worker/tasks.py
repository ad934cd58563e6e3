"""The two tasks. Each takes a run id, asks the API to start it (refused if cancelled), runs aime_core with the
HTTP/JSONL/terminal sinks and the cancel probe, and reports the final status with the error text."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import socket
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from celery.signals import worker_ready, worker_shutdown, worker_shutting_down

from aime_core import config as C
from aime_core import paths
from aime_core.sinks import JsonlSink, MultiSink, TerminalSink
from backend.core.settings import get_settings
from worker.api import ApiClient, ApiError
from worker.app import app
from worker.heartbeat import RunHeartbeat, WorkerPresence, gpu_info
from worker.http_sink import HttpSink, resend_spools

_presence: list[WorkerPresence] = []
SHUTDOWN = threading.Event()  # set when the worker is asked to stop: the run checkpoints and ends `cancelled`


@worker_shutting_down.connect
def _on_shutting_down(**_kw) -> None:
    SHUTDOWN.set()


@worker_ready.connect
def _on_ready(sender=None, **_kw) -> None:
    settings = get_settings()
    queues = sorted(q.name for q in sender.app.amqp.queues.consume_from.values()) if sender else []
    _presence.append(WorkerPresence(settings.redis_url, settings.redis_prefix, sender.hostname, queues))
    threading.Thread(target=_resend_left_overs, args=(settings,), daemon=True).start()


def _resend_left_overs(settings) -> None:
    """Batches spooled by an earlier process whose API was down: re-sent with backoff until all are delivered."""
    api = ApiClient(settings.api_url, settings.api_token)
    delay = 1.0
    while True:
        with contextlib.suppress(Exception):
            left = resend_spools(api, settings.spool_path)
            if not left:
                return
            print(f"spooled points still unsent: {left} (run: points); retrying in {delay:.0f} s", flush=True)
        time.sleep(delay)
        delay = min(delay * 2, 30.0)


@worker_shutdown.connect
def _on_shutdown(**_kw) -> None:
    for p in _presence:
        p.close()


def _gpu_name() -> str | None:
    gpus = gpu_info()
    return gpus[0]["name"] if gpus else None


def _backfill_resumed_history(api: ApiClient, run_id: int, resume: str) -> int:
    """Re-send the parent's points up to the checkpoint's step from its metrics.jsonl; returns how many.

    The API copies the parent's stored history on resume, but a worker killed (SIGKILL, power loss) between a
    checkpoint and its sink's next flush took the last points with it; they survive only in the parent's JSONL,
    written line by line next to the checkpoint. Ingest is an idempotent upsert, so points the API already has
    are rewritten with the same value and original wall time.
    """
    jsonl = Path(resume).parent / "metrics.jsonl"
    if not jsonl.is_file():
        return 0
    from aime_core.checkpoint import CheckpointError, load

    try:
        until = int(load(resume)["step"])  # weights only: nothing in the file runs
    except (CheckpointError, OSError, KeyError, TypeError, ValueError):
        return 0  # not a usable checkpoint: the trainer's --resume says so as the run's error
    points = []
    for line in jsonl.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # the last line of a killed writer may be cut short
            continue
        if record.get("type") == "metrics" and record["step"] <= until:
            points += [
                {"key": k, "step": record["step"], "value": v, "time": record.get("time")}
                for k, v in record["values"].items()
            ]
    for i in range(0, len(points), 2000):
        api.post(f"/api/runs/{run_id}/metrics", {"points": points[i : i + 2000]}, retry_for=120)
    return len(points)


def run_job(run_id: int, kind: str, task_id: str | None) -> str:
    """Everything a task does; returns the final status (or `skipped`)."""
    settings = get_settings()
    api = ApiClient(settings.api_url, settings.api_token)
    try:
        start = api.post(
            f"/api/runs/{run_id}/start",
            {"host": socket.gethostname(), "gpu": _gpu_name(), "pid": os.getpid(), "task_id": task_id},
            retry_for=120,
        )
    except ApiError as exc:  # 409: cancelled while queued (or a redelivered, lost run); 404: deleted
        print(f"run {run_id}: not started ({exc})", flush=True)
        return "skipped"
    cfg_dict: dict[str, Any] = start["config"]
    name = C.run_name(C.from_dict(C.CollectConfig if kind == "collect" else C.TrainConfig, cfg_dict))
    run_dir = paths.run_dir(cfg_dict.get("checkpoint_dir"), name, run_id=run_id, root=settings.runs_dir)
    if kind == "train":
        cfg_dict["checkpoint_dir"] = str(run_dir)
    http = HttpSink(api, run_id, settings.spool_path)
    # train() writes its own metrics.jsonl in the run directory; a collection gets one from us.
    jsonl = JsonlSink(run_dir / "collect.jsonl") if kind == "collect" else None
    sinks = MultiSink([s for s in (http, jsonl, TerminalSink(desc=f"run {run_id} {name}")) if s is not None])
    heartbeat = RunHeartbeat(api, run_id, settings.heartbeat_interval).start()

    def should_stop() -> bool:
        return heartbeat.should_stop() or SHUTDOWN.is_set()

    WorkerPresence.current = {"run_id": run_id, "name": name, "kind": kind}
    status, error, result, trace = "failed", None, {}, None
    try:
        if kind == "collect":
            from aime_core.collect import collect

            collected = collect(C.from_dict(C.CollectConfig, cfg_dict), sinks, should_stop)
            result = dataclasses.asdict(collected)
            status = "cancelled" if collected.cancelled else "succeeded"
        else:
            from aime_core.train import train

            if cfg_dict.get("resume") and Path(cfg_dict["resume"]).is_file():
                _backfill_resumed_history(api, run_id, cfg_dict["resume"])
            trained = train(C.from_dict(C.TrainConfig, cfg_dict), sinks, should_stop)
            result = dataclasses.asdict(trained)
            status, error = trained.status, trained.error
    except BaseException as exc:  # noqa: BLE001 - report every failure, including KeyboardInterrupt on shutdown
        trace = _cause(exc, run_dir) + "".join(traceback.format_exception(exc))[-8000:]
        print(f"run {run_id} failed:\n{trace}", file=sys.stderr, flush=True)  # the worker's log has it all
        # Public: one line. The traceback goes to the API apart, for token holders only.
        first = (_cause(exc, run_dir).strip() or f"{type(exc).__name__}: {exc}").splitlines()
        status, error = "failed", first[0] if first else type(exc).__name__
        sinks.event("log", {"level": "error", "message": error})
        if not isinstance(exc, Exception):
            raise
    finally:
        if status == "cancelled" and SHUTDOWN.is_set() and not heartbeat.should_stop():
            error = "the worker was shut down; resume the run to continue from its last checkpoint"
        if jsonl:  # a collection's log; train() reports its own metrics.jsonl, with its step, once
            with contextlib.suppress(OSError):  # a full disk was reported above
                jsonl.close()
            if jsonl.path.exists():
                http.artifact("log", str(jsonl.path), None, {"name": jsonl.path.name})
        # Flush: every point reaches the API before the final status. The heartbeat goes on meanwhile, so an
        # API that answers again in time sees a live run; the wait is bounded (AIME_SINK_CLOSE_TIMEOUT).
        unsent = http.close(settings.sink_close_timeout)
        heartbeat.close()
        if unsent:  # the API stayed away: say so in the final state instead of claiming success
            result = {**result, "spooled_points": unsent, "spool": str(http.spool)}
            note = (
                f"{unsent} metric points were not delivered within {settings.sink_close_timeout:.0f} s "
                f"({http.backlog.last_error or http.backlog.disk_error}); they are spooled in {http.spool} on "
                f"{socket.gethostname()} and re-sent when a worker starts there again"
            )
            status = "failed" if status == "succeeded" else status
            error = f"{error}\n{note}" if error else note
        if http.dropped_points:
            result = {**result, "dropped_points": http.dropped_points}
        WorkerPresence.current = None
        try:
            api.post(
                f"/api/runs/{run_id}/finish",
                {"status": status, "error": error, "result": result, "traceback": trace},
                retry_for=600,
            )
        except ApiError as exc:  # 409: the run was declared lost meanwhile; the API keeps that
            print(f"run {run_id}: finish refused ({exc})", flush=True)
        api.close()
        if unsent:  # keep trying in the background too, not only at the next start
            threading.Thread(target=_resend_left_overs, args=(settings,), daemon=True).start()
    return status


def _cause(exc: BaseException, run_dir: Path) -> str:
    """A first line that names the path and the cause when a write failed (disk full, read-only, denied)."""
    from aime_core.checkpoint import CheckpointWriteError, write_problem

    if isinstance(exc, CheckpointWriteError):
        return f"{exc}\n\n"
    text = f"{type(exc).__module__}.{type(exc).__name__}: {exc}"
    disk = isinstance(exc, OSError) and getattr(exc, "errno", None) in (
        errno.ENOSPC,
        errno.EROFS,
        errno.EACCES,
        errno.EPERM,
        errno.EDQUOT,
    )
    if disk or "unexpected pos" in text or "No space left" in text or "av.error" in text:
        where = Path(getattr(exc, "filename", None) or run_dir)
        where = where if where.is_dir() else where.parent
        return f"cannot write the run's files: {write_problem(where, exc)}\n\n"
    return ""


@app.task(name="aime.collect", bind=True)
def collect_task(self, run_id: int) -> str:
    """Collect a dataset for a run id."""
    return run_job(run_id, "collect", self.request.id)


@app.task(name="aime.train", bind=True)
def train_task(self, run_id: int) -> str:
    """Train a model for a run id."""
    return run_job(run_id, "train", self.request.id)
