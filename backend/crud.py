"""Queries and state changes of runs, datasets, alerts and artifacts. Routes stay thin; this is where it happens."""

from __future__ import annotations

import contextlib
import math
import shutil
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, or_
from sqlmodel import Session, select

from aime_core import config as C
from backend import queueing, security
from backend.alerting import open_alert  # noqa: F401 - callers use crud.open_alert too
from backend.core import celery_client
from backend.core.pubsub import Publisher
from backend.core.settings import Settings, get_settings
from backend.models import (
    FINAL_STATUSES,
    Alert,
    Artifact,
    Dataset,
    MetricPoint,
    MetricTile,
    Run,
    RunCreate,
    RunEvent,
    Sweep,
    utcnow,
)


class Conflict(Exception):
    """The request does not fit the run's state (e.g. cancelling a finished run)."""


# ---------------------------------------------------------------------------------------------------------------
# Launch


def resolve_launch(settings: Settings, body: RunCreate, seed: int | None) -> Any:
    """The full config of one launch (defaults -> tier -> preset -> overrides); raises ConfigError naming the field."""
    overrides = dict(body.overrides)
    for name in ("domain", "task", "synthetic"):
        if getattr(body, name) is not None:
            overrides[name] = getattr(body, name)
    if seed is not None:
        overrides["seed"] = seed
    confine_paths(settings, overrides)
    resolve = C.resolve_collect if body.kind == "collect" else C.resolve_train
    cfg = resolve(body.tier, body.preset, overrides, env={})  # the API's own environment must not leak in
    if not overrides.get("data_path"):  # datasets live under the data directory, named as the scripts do
        own = (
            settings.datasets_dir
            / C.default_data_path(cfg.domain, cfg.task, cfg.tier, cfg.seed, cfg.preset).name
        )
        cfg.data_path = str(own)
        if body.kind == "train" and not own.exists():  # the tier's dataset is the seed-0 one
            name = C.default_data_path(cfg.domain, cfg.task, cfg.tier, C.DEFAULT_SEED, cfg.preset).name
            cfg.data_path = str(settings.datasets_dir / name)
    return cfg


PATH_FIELDS = ("data_path", "checkpoint_dir", "resume")


def confine_paths(settings: Settings, values: dict[str, Any]) -> None:
    """Paths from HTTP must resolve (symlinks too) inside the data directory's run areas or AIME_ALLOWED_ROOTS:
    each is replaced by its absolute form, a null one dropped (its default applies); ConfigError names the field."""
    for name in PATH_FIELDS:
        if name in values and values[name] in (None, ""):
            del values[name]
        elif name in values:
            try:
                values[name] = security.confine(settings, name, str(values[name]))
            except ValueError as exc:
                raise C.ConfigError(name, str(exc)) from None


def create_runs(session: Session, settings: Settings, pub: Publisher, body: RunCreate) -> list[Run]:
    """Insert and enqueue one run per seed; a train run whose dataset is missing waits for its collection."""
    seeds = body.seeds if body.seeds else [body.seed]
    configs = [resolve_launch(settings, body, s) for s in seeds]  # all valid before any is created
    group = f"g{uuid.uuid4().hex[:10]}" if len(seeds) > 1 else None  # a seed group: mean ± std on the server
    runs: list[Run] = []
    for cfg in configs:
        run = queueing.new_run(body.kind, cfg, body.tags, body.notes)
        run.group_id = group
        session.add(run)
        session.flush()
        queueing.set_run_dir(settings, run, "checkpoint_dir" in body.overrides)
        if body.kind == "train":
            queueing.attach_dataset(session, settings, pub, run, cfg)
        if run.waits_for_id is None:
            session.commit()  # the worker must find the row when the task arrives
            queueing.enqueue(session, run)
        session.commit()
        session.refresh(run)
        pub.publish("status", run.id, {"status": run.status, "kind": run.kind, "name": run.name})
        runs.append(run)
    for run in runs:  # each commit expired the earlier ones
        session.refresh(run)
    return runs


# ---------------------------------------------------------------------------------------------------------------
# Listing


def list_runs(session: Session, filters: dict[str, Any], offset: int, limit: int) -> tuple[list[Run], int]:
    query = select(Run)
    for name in ("status", "kind", "tier", "domain", "task"):
        value = filters.get(name)
        if value is not None:
            values = value.split(",") if isinstance(value, str) else [value]
            query = query.where(getattr(Run, name).in_(values))
    if filters.get("text"):
        like = f"%{filters['text']}%"
        query = query.where(or_(Run.name.ilike(like), Run.notes.ilike(like)))
    rows = session.exec(query.order_by(Run.id.desc())).all()
    if filters.get("tag"):  # JSON arrays are queried differently in SQLite and Postgres; filter here
        rows = [r for r in rows if filters["tag"] in (r.tags or [])]
    return list(rows[offset : offset + limit]), len(rows)


def get_run(session: Session, run_id: int) -> Run | None:
    return session.get(Run, run_id)


# ---------------------------------------------------------------------------------------------------------------
# Worker lifecycle


def start_run(session: Session, pub: Publisher, run: Run, host: str, gpu: str | None, pid: int | None) -> Run:
    if run.status != "queued" or run.waits_for_id is not None:
        raise Conflict(f"run {run.id} is {run.status}; only a queued run can start")
    run.status, run.started_at, run.heartbeat_at = "running", utcnow(), utcnow()
    run.worker_host, run.worker_gpu, run.worker_pid = host, gpu, pid
    session.add(run)
    session.commit()
    session.refresh(run)
    pub.publish("status", run.id, {"status": "running", "worker_host": host, "worker_gpu": gpu})
    return run


# run id -> monotonic time of its last heartbeat seen by this API process, written before the database is:
# a worker whose heartbeat cannot be stored (disk full) is still alive, and the reaper must not call it lost.
HEARD: dict[int, float] = {}


def heartbeat(session: Session, run: Run) -> bool:
    """Note the worker is alive; returns whether it should stop."""
    if run.status == "running":
        HEARD[run.id] = time.monotonic()
        run.heartbeat_at = utcnow()
        session.add(run)
        session.commit()
    return run.cancel_requested or run.status != "running"


def public_error(error: str | None) -> str | None:
    """The one-line reason anyone may read: a traceback's last line, any other text joined onto one line."""
    if not error:
        return error
    lines = [ln.strip() for ln in error.strip().splitlines() if ln.strip()]
    trace = bool(lines) and lines[0].startswith("Traceback (most recent call last)")
    text = lines[-1] if trace else " ".join(lines)
    return text[:1000] + (" ..." if len(text) > 1000 else "")


def finish_run(
    session: Session,
    pub: Publisher,
    run: Run,
    status: str,
    error: str | None,
    result: dict,
    traceback: str | None = None,
) -> Run:
    if run.status != "running":
        raise Conflict(f"run {run.id} is {run.status}; only a running run can finish")
    full = traceback or (error if error and public_error(error) != error.strip() else None)
    error = public_error(error)
    run.status, run.error, run.result, run.finished_at = status, error, dict(result), utcnow()
    session.add(run)
    if full:  # token holders only: GET /api/runs/{id}/traceback (never in the run, its log or its history)
        session.add(RunEvent(run_id=run.id, kind="traceback", payload={"text": full[-100_000:]}))
    dataset = None
    if run.kind == "collect" and status == "succeeded":
        dataset = register_dataset(session, pub, run, result)
    session.commit()
    session.refresh(run)
    pub.publish("status", run.id, {"status": status, "error": error})
    if run.kind == "collect":
        queueing.release_waiting(session, pub, run, dataset)
    queueing.run_ended(session, pub, run)
    return run


def _count(value: Any, default: Any, limit: int) -> Any:
    """A reported count as the column can hold it; anything else (text, a float, out of range) gives `default`."""
    ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= limit
    return value if ok else default


def register_dataset(session: Session, pub: Publisher, run: Run, info: dict) -> Dataset:
    path = str(info.get("path") or run.config.get("data_path"))
    try:
        path = security.confine(get_settings(), "path", path)
    except ValueError:  # a report cannot point the dataset (and its size) at another file
        path = str(run.config.get("data_path"))
    dataset = session.exec(select(Dataset).where(Dataset.path == path)).first() or Dataset(
        path=path, domain=run.domain, task=run.task, tier=run.tier
    )
    dataset.seed = _count(info.get("seed"), run.seed, 2**31 - 1)
    dataset.episodes = _count(info.get("episodes"), 0, 2**31 - 1)
    dataset.frames = _count(info.get("frames"), 0, 2**31 - 1)
    size = Path(path).stat().st_size if Path(path).exists() else 0
    dataset.bytes = _count(info.get("bytes"), 0, 2**63 - 1) or size
    dataset.img_size = _count(info.get("img_size"), run.config.get("img_size"), 2**31 - 1)
    dataset.run_id = run.id
    session.add(dataset)
    session.flush()
    run.dataset_id = dataset.id
    session.add(run)
    pub.publish("dataset", run.id, {"dataset_id": dataset.id, "path": path, "episodes": dataset.episodes})
    return dataset


def mark_lost(session: Session, pub: Publisher, timeout_s: float) -> list[int]:
    """Running runs whose heartbeat stopped become `lost`, each with an alert."""
    cutoff = utcnow() - timedelta(seconds=timeout_s)
    stale = session.exec(select(Run).where(Run.status == "running", Run.heartbeat_at < cutoff)).all()
    heard_after = time.monotonic() - timeout_s
    stale = [r for r in stale if HEARD.get(r.id, -math.inf) < heard_after]
    for run in stale:
        run.status, run.finished_at = "lost", utcnow()
        run.error = f"no heartbeat from {run.worker_host} (pid {run.worker_pid}) for {timeout_s:.0f} s"
        session.add(run)
        session.add(Alert(run_id=run.id, kind="lost", key="heartbeat", message=run.error))
    session.commit()
    for run in stale:
        pub.publish("status", run.id, {"status": "lost", "error": run.error})
        pub.publish("alert", run.id, {"kind": "lost", "key": "heartbeat", "message": run.error})
        queueing.run_ended(session, pub, run)
    return [r.id for r in stale]


def mark_worker_lost(session: Session, pub: Publisher, host: str, pid: int, reason: str) -> list[int]:
    """The supervisor saw worker `pid` on `host` die: its running runs become `lost` now (resumable)."""
    runs = session.exec(
        select(Run).where(Run.status == "running", Run.worker_host == host, Run.worker_pid == pid)
    ).all()
    for run in runs:
        run.status, run.finished_at = "lost", utcnow()
        run.error = (
            f"its worker (pid {pid} on {host}) {reason}; resume the run to continue from its last checkpoint"
        )
        session.add(run)
        session.add(Alert(run_id=run.id, kind="lost", key="worker", message=run.error))
    session.commit()
    for run in runs:
        pub.publish("status", run.id, {"status": "lost", "error": run.error})
        pub.publish("alert", run.id, {"kind": "lost", "key": "worker", "message": run.error})
        queueing.run_ended(session, pub, run)
    return [r.id for r in runs]


# ---------------------------------------------------------------------------------------------------------------
# User actions


def cancel_run(session: Session, pub: Publisher, run: Run) -> Run:
    if run.status in FINAL_STATUSES:
        raise Conflict(f"run {run.id} already ended ({run.status})")
    if run.status == "queued":  # never starts: the worker's start call is refused
        run.status, run.finished_at, run.error = "cancelled", utcnow(), "cancelled before it started"
        if run.celery_task_id:
            with contextlib.suppress(Exception):  # an optimisation; the start check is the guard
                celery_client.revoke(run.celery_task_id)
    else:  # running: the next heartbeat tells the worker, which checkpoints and stops
        run.cancel_requested = True
    session.add(run)
    session.commit()
    session.refresh(run)
    pub.publish("status", run.id, {"status": run.status, "cancel_requested": run.cancel_requested})
    if run.kind == "collect" and run.status == "cancelled":
        queueing.release_waiting(session, pub, run, None)
        session.refresh(run)
    if run.status == "cancelled":
        queueing.run_ended(session, pub, run)
    return run


def retry_run(session: Session, settings: Settings, pub: Publisher, run: Run) -> Run:
    """A fresh run with the same resolved config (a new run directory)."""
    if run.status == "queued":  # it will still run: a retry would run the same thing twice
        raise Conflict(f"run {run.id} is still queued; it has not failed (cancel it first to retry)")
    cfg = C.from_dict(C.CollectConfig if run.kind == "collect" else C.TrainConfig, run.config)
    if run.kind == "train":
        cfg.resume = None
    return _clone(session, settings, pub, run, cfg)


def resume_run(session: Session, settings: Settings, pub: Publisher, run: Run) -> Run:
    """A new run that continues from the parent's last checkpoint; it inherits the history up to that step."""
    if run.kind != "train":
        raise Conflict("only training runs can be resumed (retry a collection instead)")
    if run.status in ("queued", "running"):
        raise Conflict(f"run {run.id} is {run.status}; cancel it first")
    ckpts = session.exec(
        select(Artifact).where(Artifact.run_id == run.id, Artifact.kind == "checkpoint")
    ).all()
    ckpts = [a for a in ckpts if Path(a.path).exists()]
    if not ckpts:
        raise Conflict(f"run {run.id} has no checkpoint on disk to resume from; retry it instead")
    best = max(ckpts, key=lambda a: (a.step or 0, a.meta.get("tag") == "last"))
    cfg = C.from_dict(C.TrainConfig, run.config)
    cfg.resume = best.path
    child = _clone(session, settings, pub, run, cfg, copy_until=best.step or 0)
    return child


def _clone(
    session: Session, settings: Settings, pub: Publisher, run: Run, cfg: Any, copy_until: int = -1
) -> Run:
    paths = {n: getattr(cfg, n) for n in ("data_path", "resume") if getattr(cfg, n, None)}
    try:  # the parent's paths were checked at launch; the allowed roots may have changed since
        confine_paths(settings, paths)
    except C.ConfigError as exc:
        raise Conflict(str(exc)) from None
    child = queueing.new_run(run.kind, cfg, run.tags, run.notes, parent_id=run.id)
    child.dataset_id = run.dataset_id
    # A retried or resumed run takes its parent's place in a sweep and seed group (leaderboards and group
    # bands count the newest run of each lineage, see `replacements`), and keeps its promotion lineage.
    child.sweep_id, child.sweep_config = run.sweep_id, run.sweep_config
    child.group_id, child.lineage = run.group_id, dict(run.lineage)
    if run.sweep_id is not None:
        sweep = session.get(Sweep, run.sweep_id)
        if sweep is not None and sweep.status == "finished":  # it finishes again when this run ends
            sweep.status, sweep.finished_at = "running", None
            session.add(sweep)
    session.add(child)
    session.flush()
    queueing.set_run_dir(settings, child, False)
    if copy_until >= 0:  # the resumed trainer logs from the checkpoint's step on; earlier points come along
        cols = [MetricPoint.key, MetricPoint.step, MetricPoint.value, MetricPoint.wall_time]
        rows = session.exec(
            select(*cols).where(MetricPoint.run_id == run.id, MetricPoint.step <= copy_until)
        ).all()
        session.bulk_insert_mappings(
            MetricPoint, [dict(run_id=child.id, key=k, step=s, value=v, wall_time=w) for k, s, v, w in rows]
        )
        from backend import metrics  # late: metrics pulls in the ingest path, not needed by most crud users

        metrics.rebuild_tiles(session.connection(), child.id)  # the chart summary of the copied points
        latest = {k: v for k, v in run.latest.items() if v[0] <= copy_until}
        child.latest = latest
    session.commit()
    queueing.enqueue(session, child)
    session.commit()
    session.refresh(child)
    pub.publish("status", child.id, {"status": "queued", "kind": child.kind, "parent_id": run.id})
    return child


def inside(root: Path, path: str | Path) -> bool:
    try:
        Path(path).resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def delete_run(session: Session, settings: Settings, pub: Publisher, run: Run) -> list[str]:
    """Remove the run, its rows and its files under the data directory; returns the paths removed."""
    if run.status == "running":
        raise Conflict(f"run {run.id} is running; cancel it first")
    root = settings.artifact_root
    paths = [a.path for a in session.exec(select(Artifact).where(Artifact.run_id == run.id))]
    paths += [run.config.get("checkpoint_dir") or "", str(root / "uploads" / str(run.id))]
    if run.kind == "collect" and run.status != "queued":
        paths.append(run.config.get("data_path") or "")
        session.exec(delete(Dataset).where(Dataset.run_id == run.id))
    removed = []
    for p in filter(None, paths):
        path = Path(p)
        if not inside(root, path) or not path.exists():
            continue  # never delete outside the data directory
        shutil.rmtree(path) if path.is_dir() else path.unlink()
        removed.append(str(path))
    for table in (MetricTile, MetricPoint, Alert, Artifact, RunEvent):
        session.exec(delete(table).where(table.run_id == run.id))
    session.delete(run)
    session.commit()
    pub.publish("deleted", run.id, {})
    return removed


# ---------------------------------------------------------------------------------------------------------------
# Alerts and artifacts


def add_artifact(
    session: Session, pub: Publisher, run: Run, kind: str, path: str, step: int | None, meta: dict
) -> Artifact:
    """Record (or update, for `last.pt` rewritten each epoch) a file of the run."""
    art = session.exec(
        select(Artifact).where(Artifact.run_id == run.id, Artifact.kind == kind, Artifact.path == path)
    ).first() or Artifact(run_id=run.id, kind=kind, path=path)
    art.step, art.meta = step, dict(meta)
    art.bytes = Path(path).stat().st_size if Path(path).is_file() else 0
    session.add(art)
    session.commit()
    session.refresh(art)
    pub.publish(
        "artifact", run.id, {"id": art.id, "kind": kind, "path": path, "step": step, "meta": art.meta}
    )
    return art


def runs_by_status(session: Session) -> dict[str, int]:
    return dict(session.exec(select(Run.status, func.count()).group_by(Run.status)).all())


def open_alert_counts(session: Session, run_ids: list[int]) -> dict[int, int]:
    """Unacknowledged alerts per run (the dashboard shows them as a badge)."""
    if not run_ids:
        return {}
    query = select(Alert.run_id, func.count()).where(Alert.run_id.in_(run_ids), Alert.acknowledged == False)  # noqa: E712
    return dict(session.exec(query.group_by(Alert.run_id)).all())
