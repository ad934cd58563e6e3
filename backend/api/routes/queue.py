"""The queues as the broker holds them, the workers online (with GPU state) and what each is running."""

from __future__ import annotations

import json
from typing import Any

import redis
from fastapi import APIRouter
from sqlmodel import select

from backend.api.deps import Read, SessionDep, SettingsDep
from backend.core.celery_client import QUEUES
from backend.core.pubsub import sync_redis
from backend.core.settings import Settings
from backend.models import QueuePublic, Run

router = APIRouter(prefix="/api", tags=["queue"], dependencies=[Read])


def broker_jobs(settings: Settings) -> dict[str, list[dict[str, Any]]]:
    """Waiting messages per queue, next first (kombu LPUSHes and BRPOPs, so the list tail goes first)."""
    r = sync_redis(settings.redis_url)
    out = {}
    for q in QUEUES:
        jobs = []
        for raw in reversed(r.lrange(f"{settings.redis_prefix}{q}", 0, -1)):
            msg = json.loads(raw)
            headers = msg.get("headers", {})
            args = headers.get("argsrepr", "()").strip("()[], ")
            jobs.append(
                {
                    "task_id": headers.get("id"),
                    "task": headers.get("task"),
                    "run_id": int(args) if args.isdigit() else None,
                }
            )
        out[q] = jobs
    return out


def workers(settings: Settings) -> list[dict[str, Any]]:
    """Workers refresh `{prefix}worker:{hostname}` every few seconds with a short TTL; a dead one drops out."""
    r = sync_redis(settings.redis_url)
    keys = sorted(r.scan_iter(f"{settings.redis_prefix}worker:*"))
    return [json.loads(v) for v in r.mget(keys) if v] if keys else []


def queue_lengths(settings: Settings) -> dict[str, int]:
    r = sync_redis(settings.redis_url)
    return {q: r.llen(f"{settings.redis_prefix}{q}") for q in QUEUES}


def _queue_of(run: Run) -> str:
    return "synthetic" if run.kind == "collect" and run.synthetic and "synthetic" in QUEUES else run.kind


@router.get("/queue", response_model=QueuePublic)
def queue(session: SessionDep, settings: SettingsDep) -> dict[str, Any]:
    """Per queue: waiting jobs in order (run, position), runs waiting for their dataset; workers and their jobs.

    `broker` says whether the broker answered; when it did not, the queues are what the database lists as
    queued (in launch order) and `workers` is empty: never an error."""
    broker: dict[str, Any] = {"reachable": True, "error": None}
    try:
        jobs = broker_jobs(settings)
        online = workers(settings)
    except (redis.RedisError, OSError) as exc:
        broker = {"reachable": False, "error": f"broker unreachable: {type(exc).__name__}: {exc}"}
        queued = session.exec(
            select(Run).where(Run.status == "queued", Run.waits_for_id.is_(None), Run.held == False)  # noqa: E712
        ).all()
        jobs = {
            q: [{"task_id": r.celery_task_id, "task": q, "run_id": r.id} for r in queued if _queue_of(r) == q]
            for q in QUEUES
        }
        online = []
    ids = {j["run_id"] for js in jobs.values() for j in js if j["run_id"]}
    runs = {r.id: r for r in session.exec(select(Run).where(Run.id.in_(ids)))} if ids else {}
    queues = {}
    for q, js in jobs.items():
        waiting = []
        for j in js:
            run = runs.get(j["run_id"])
            if run is None or run.status != "queued":
                continue  # cancelled or deleted: the worker will skip it
            waiting.append(
                {
                    "position": len(waiting) + 1,
                    "run_id": run.id,
                    "name": run.name,
                    "task_id": j["task_id"],
                    "created_at": run.created_at,
                }
            )
        queues[q] = {"waiting": waiting, "length": len(js)}
    blocked = session.exec(select(Run).where(Run.status == "queued", Run.waits_for_id.is_not(None))).all()
    queues["train"]["waiting_for_data"] = [
        {"run_id": r.id, "name": r.name, "waits_for": r.waits_for_id} for r in blocked
    ]
    running = session.exec(select(Run).where(Run.status == "running")).all()
    active = [
        {
            "run_id": r.id,
            "name": r.name,
            "kind": r.kind,
            "worker_host": r.worker_host,
            "worker_gpu": r.worker_gpu,
            "progress": r.progress,
        }
        for r in running
    ]
    return {"queues": queues, "active": active, "workers": online, "broker": broker}
