"""Queueing: new run rows, datasets first, the broker send, a sweep's parallel limit, and what replaces what.

One module under both `crud` (launch, retry, resume, finish) and `sweeps` (create, promote, cancel), so neither
imports the other's internals and there is no import circle: it imports only models, core and aime_core.config.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from sqlmodel import Session, select

from aime_core import config as C
from aime_core.paths import run_dir
from backend.core import celery_client
from backend.core.pubsub import Publisher
from backend.core.settings import Settings, get_settings
from backend.models import FINAL_STATUSES, Dataset, Run, Sweep, utcnow

NOT_SENT = "not sent to the broker yet: it is unreachable"
_SCHEDULE_LOCK = threading.Lock()


def new_run(kind: str, cfg: Any, tags: list[str], notes: str = "", parent_id: int | None = None) -> Run:
    """A run row (not added to the session) for a resolved config."""
    return Run(
        kind=kind,
        name=C.run_name(cfg),
        tier=cfg.tier,
        preset=cfg.preset,
        domain=cfg.domain,
        task=cfg.task,
        seed=cfg.seed,
        synthetic=cfg.synthetic,
        config=C.to_dict(cfg),
        tags=list(tags),
        notes=notes,
        parent_id=parent_id,
    )


def set_run_dir(settings: Settings, run: Run, given: bool) -> None:
    """A training run writes in `<data dir>/runs/<id>-<name>` unless the launch gave an absolute directory."""
    if run.kind == "train":
        chosen = run.config.get("checkpoint_dir") if given else None
        run.config = {
            **run.config,
            "checkpoint_dir": str(run_dir(chosen, run.name, run_id=run.id, root=settings.runs_dir)),
        }


def enqueue(session: Session, run: Run) -> None:
    """Send the run's task to its queue; with the broker down it stays queued (reconcile.py sends it later)."""
    try:
        run.celery_task_id = celery_client.send_run(run.kind, run.id, run.synthetic)
    except Exception as exc:  # noqa: BLE001 - broker down: the run stays queued, sent when the broker is back
        run.error = f"{NOT_SENT} ({exc}); it is sent when the broker answers again (backend/reconcile.py)"
    session.add(run)


def _active_collection(session: Session, path: str) -> Run | None:
    for run in session.exec(select(Run).where(Run.kind == "collect", Run.status.in_(("queued", "running")))):
        if run.config.get("data_path") == path:
            return run
    return None


def attach_dataset(session: Session, settings: Settings, pub: Publisher, run: Run, cfg: Any) -> None:
    """Datasets first: a training run whose file is missing waits for a collection (an active one, or a new one)."""
    path = cfg.data_path
    dataset = session.exec(select(Dataset).where(Dataset.path == path)).first()
    if dataset is not None or Path(path).exists():
        run.dataset_id = dataset.id if dataset else None
        return
    collection = _active_collection(session, path)
    if collection is None:
        ccfg = C.collect_config_for(cfg)
        collection = new_run("collect", ccfg, run.tags, f"dataset for run {run.id}")
        session.add(collection)
        session.flush()
        session.commit()
        enqueue(session, collection)
        pub.publish("status", collection.id, {"status": "queued", "kind": "collect", "name": collection.name})
    run.waits_for_id = collection.id
    session.add(run)


def release_waiting(session: Session, pub: Publisher, collection: Run, dataset: Dataset | None) -> None:
    """A collection ended: enqueue the training runs that waited for it, or fail them."""
    waiting = session.exec(select(Run).where(Run.waits_for_id == collection.id, Run.status == "queued")).all()
    for run in waiting:
        if collection.status == "succeeded":
            run.dataset_id = dataset.id if dataset else None
            run.waits_for_id = None
            session.commit()
            enqueue(session, run)
        else:
            run.status, run.finished_at = "failed", utcnow()
            run.error = f"its dataset collection (run {collection.id}) ended {collection.status}"
            pub.publish("status", run.id, {"status": run.status, "error": run.error})
        session.add(run)
    session.commit()


def schedule_sweep(session: Session, settings: Settings, pub: Publisher, sweep: Sweep) -> list[int]:
    """Queue held runs while fewer than `parallel` of the sweep's runs are queued or running; returns those queued."""
    if sweep.status != "running":
        return []
    # Two runs ending at once must not both fill the same free slot: count and un-hold under a lock (a thread
    # lock within this API process, plus the sweep's row lock on Postgres for several API processes).
    with _SCHEDULE_LOCK:
        if session.get_bind().dialect.name == "postgresql":
            session.exec(select(Sweep.id).where(Sweep.id == sweep.id).with_for_update()).one()
        runs = session.exec(select(Run).where(Run.sweep_id == sweep.id).order_by(Run.id)).all()
        active = [r for r in runs if r.status == "running" or (r.status == "queued" and not r.held)]
        held = [r for r in runs if r.status == "queued" and r.held]
        release = held[: max(0, sweep.parallel - len(active))]
        for run in release:
            run.held = False
            session.add(run)
        session.commit()
    for run in release:
        cfg = C.from_dict(C.TrainConfig, run.config)
        attach_dataset(session, settings, pub, run, cfg)  # may queue the dataset's collection first
        session.commit()
        if run.waits_for_id is None:
            enqueue(session, run)
        session.commit()
        pub.publish("status", run.id, {"status": run.status, "kind": run.kind, "name": run.name})
    if not held and all(r.status in FINAL_STATUSES for r in runs):
        sweep.status, sweep.finished_at = "finished", utcnow()
        session.add(sweep)
        session.commit()
    return [r.id for r in release]


def run_ended(session: Session, pub: Publisher, run: Run) -> None:
    """A run ended (finish, cancel, lost): its sweep, if any, queues its next held run."""
    if run.sweep_id is None:
        return
    sweep = session.get(Sweep, run.sweep_id)
    if sweep is not None:
        schedule_sweep(session, get_settings(), pub, sweep)


def replacements(runs) -> dict[int, int]:
    """Among `runs` (rows with id and parent_id, in id order): parent id -> the newest retry or resume of it."""
    ids = {r.id for r in runs}
    return {r.parent_id: r.id for r in runs if r.parent_id in ids}
