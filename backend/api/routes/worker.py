"""Calls the workers make (token required): start, heartbeat (answers whether to stop), finish."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from backend import crud
from backend.api.deps import PubDep, RunId, SessionDep, Token, run_or_404
from backend.errors import doc
from backend.models import (
    FinishedPublic,
    FinishIn,
    HeartbeatPublic,
    LostPublic,
    RunEvent,
    StartedPublic,
    StartIn,
    WorkerLostIn,
)

router = APIRouter(prefix="/api/runs", tags=["worker"], dependencies=[Token])


@router.post("/worker-lost", response_model=LostPublic, responses=doc(507))
def worker_lost(body: WorkerLostIn, session: SessionDep, pub: PubDep) -> dict[str, Any]:
    """A supervisor reports a dead worker process: the runs it was running become `lost` at once (resumable)."""
    return {"lost": crud.mark_worker_lost(session, pub, body.host, body.pid, body.reason)}


@router.post("/{run_id}/start", response_model=StartedPublic, responses=doc(404, 409, 507))
def start(run_id: RunId, body: StartIn, session: SessionDep, pub: PubDep) -> dict[str, Any]:
    """Mark a queued run running on this worker; 409 when it was cancelled (the worker then skips it)."""
    run = run_or_404(session, run_id)
    run = crud.start_run(session, pub, run, body.host, body.gpu, body.pid)
    if body.task_id:
        run.celery_task_id = body.task_id
    msg = f"started on {body.host} (pid {body.pid}, gpu {body.gpu or 'none'})"
    session.add(RunEvent(run_id=run_id, kind="log", payload={"level": "info", "message": msg}))
    session.add(run)
    session.commit()
    session.refresh(run)
    return {"id": run.id, "kind": run.kind, "config": run.config, "status": run.status}


@router.post("/{run_id}/heartbeat", response_model=HeartbeatPublic, responses=doc(404, 507))
def heartbeat(run_id: RunId, session: SessionDep) -> dict[str, Any]:
    """The worker is alive; `stop: true` means the run was cancelled (or declared lost)."""
    run = run_or_404(session, run_id)
    return {"stop": crud.heartbeat(session, run), "status": run.status}


@router.post("/{run_id}/finish", response_model=FinishedPublic, responses=doc(404, 409, 507))
def finish(run_id: RunId, body: FinishIn, session: SessionDep, pub: PubDep) -> dict[str, Any]:
    """Final status with the error text and the result (a collection registers its dataset here)."""
    run = run_or_404(session, run_id)
    run = crud.finish_run(session, pub, run, body.status, body.error, body.result, body.traceback)
    msg = f"finished {body.status}" + (f": {run.error}" if run.error else "")  # the one-line public error
    level = "error" if body.status == "failed" else "info"
    session.add(RunEvent(run_id=run_id, kind="log", payload={"level": level, "message": msg}))
    session.commit()
    return {"id": run.id, "status": run.status}
