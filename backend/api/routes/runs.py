"""Runs: launch (one per seed), resolve without launching, list, show, cancel, retry, resume, delete, log tail."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Query
from sqlmodel import select

from aime_core.config import run_name, to_dict
from backend import crud
from backend.api.deps import PubDep, Read, RunId, SessionDep, SettingsDep, Token, run_or_404
from backend.errors import doc
from backend.models import (
    INT64_MAX,
    DeletedPublic,
    LogPublic,
    ResolvePublic,
    Run,
    RunCreate,
    RunDetailPublic,
    RunEvent,
    RunPagePublic,
    RunPublic,
    RunUpdate,
    TracebackPublic,
)

router = APIRouter(prefix="/api/runs", tags=["runs"])


@router.post(
    "", status_code=201, dependencies=[Token], response_model=RunPublic | list[RunPublic], responses=doc(507)
)
def launch(body: RunCreate, session: SessionDep, settings: SettingsDep, pub: PubDep) -> Run | list[Run]:
    """Launch a collect or train run (a list of runs when `seeds` is given); 422 names the wrong field."""
    runs = crud.create_runs(session, settings, pub, body)  # ConfigError: a 422 naming the field (errors.py)
    return runs if body.seeds else runs[0]


@router.post("/resolve", dependencies=[Read], response_model=ResolvePublic)
def resolve(body: RunCreate, settings: SettingsDep) -> dict[str, Any]:
    """The fully resolved config(s) of a launch, without creating anything."""
    configs = [crud.resolve_launch(settings, body, s) for s in (body.seeds or [body.seed])]
    return {
        "kind": body.kind,
        "runs": [
            {"name": run_name(c), "config": to_dict(c), "data_exists": Path(c.data_path).exists()}
            for c in configs
        ],
    }


@router.get("", dependencies=[Read], response_model=RunPagePublic)
def list_runs(
    session: SessionDep,
    status: str | None = Query(
        None,
        max_length=200,
        description="comma-separated: queued, running, succeeded, failed, cancelled, lost",
    ),
    kind: str | None = Query(None, max_length=200, description="comma-separated: collect, train"),
    tier: int | None = Query(None, ge=1, le=3, description="1, 2 or 3"),
    domain: str | None = Query(None, max_length=200, description="comma-separated domains"),
    task: str | None = Query(None, max_length=200, description="comma-separated tasks"),
    tag: str | None = Query(None, max_length=64, description="runs carrying this tag"),
    text: str | None = Query(None, max_length=200, description="in the name or notes"),
    offset: int = Query(0, ge=0, le=INT64_MAX, description="runs to skip"),
    limit: int = Query(50, ge=1, le=1000, description="at most this many runs (1..1000)"),
) -> dict[str, Any]:
    """Runs, newest first; status/kind accept comma-separated lists."""
    filters = dict(status=status, kind=kind, tier=tier, domain=domain, task=task, tag=tag, text=text)
    rows, total = crud.list_runs(session, filters, offset, limit)
    open_alerts = crud.open_alert_counts(session, [r.id for r in rows])  # the runs table's badge
    items = [{**r.model_dump(), "open_alerts": open_alerts.get(r.id, 0)} for r in rows]
    return {"total": total, "offset": offset, "limit": limit, "items": items}


@router.get("/{run_id}", dependencies=[Read], response_model=RunDetailPublic, responses=doc(404))
def get_run(run_id: RunId, session: SessionDep) -> dict[str, Any]:
    """One run with its resolved config, latest metric values, progress and children."""
    run = run_or_404(session, run_id)
    children = session.exec(select(Run.id).where(Run.parent_id == run_id)).all()
    open_alerts = crud.open_alert_counts(session, [run_id]).get(run_id, 0)
    return {**run.model_dump(), "children": list(children), "open_alerts": open_alerts}


@router.patch("/{run_id}", dependencies=[Token], response_model=RunPublic, responses=doc(404, 507))
def update_run(run_id: RunId, body: RunUpdate, session: SessionDep) -> Run:
    """Change tags or notes."""
    run = run_or_404(session, run_id)
    if body.tags is not None:
        run.tags = list(body.tags)
    if body.notes is not None:
        run.notes = body.notes
    session.add(run)
    session.commit()
    session.refresh(run)
    return run


@router.post("/{run_id}/cancel", dependencies=[Token], response_model=RunPublic, responses=doc(404, 409, 507))
def cancel(run_id: RunId, session: SessionDep, pub: PubDep) -> Run:
    """Cancel: a queued run never starts; a running one checkpoints and stops within a few seconds."""
    return crud.cancel_run(session, pub, run_or_404(session, run_id))


@router.post(
    "/{run_id}/retry",
    status_code=201,
    dependencies=[Token],
    response_model=RunPublic,
    responses=doc(404, 409, 507),
)
def retry(run_id: RunId, session: SessionDep, settings: SettingsDep, pub: PubDep) -> Run:
    """A new run with the same config, from scratch."""
    return crud.retry_run(session, settings, pub, run_or_404(session, run_id))


@router.post(
    "/{run_id}/resume",
    status_code=201,
    dependencies=[Token],
    response_model=RunPublic,
    responses=doc(404, 409, 507),
)
def resume(run_id: RunId, session: SessionDep, settings: SettingsDep, pub: PubDep) -> Run:
    """A new run that continues from this run's last checkpoint."""
    return crud.resume_run(session, settings, pub, run_or_404(session, run_id))


@router.delete("/{run_id}", dependencies=[Token], response_model=DeletedPublic, responses=doc(404, 409, 507))
def delete(run_id: RunId, session: SessionDep, settings: SettingsDep, pub: PubDep) -> dict[str, Any]:
    """Delete the run, its metrics, alerts, artifacts and its files under the data directory."""
    removed = crud.delete_run(session, settings, pub, run_or_404(session, run_id))
    return {"deleted": run_id, "removed": removed}


@router.get("/{run_id}/traceback", dependencies=[Token], response_model=TracebackPublic, responses=doc(404))
def traceback(run_id: RunId, session: SessionDep) -> dict[str, Any]:
    """The full error text of a failed run (server traceback); token holders only, the public error is one line."""
    run_or_404(session, run_id)
    row = session.exec(
        select(RunEvent)
        .where(RunEvent.run_id == run_id, RunEvent.kind == "traceback")
        .order_by(RunEvent.id.desc())
    ).first()
    return {"run_id": run_id, "traceback": row.payload.get("text") if row else None}


@router.get("/{run_id}/log", dependencies=[Read], response_model=LogPublic, responses=doc(404))
def log_tail(
    run_id: RunId,
    session: SessionDep,
    tail: int = Query(200, ge=1, le=10000, description="the last this many lines (1..10000)"),
) -> dict[str, Any]:
    """The last `tail` log lines (worker lifecycle, trainer log events, status changes, alerts)."""
    run_or_404(session, run_id)
    rows = session.exec(
        select(RunEvent)
        .where(RunEvent.run_id == run_id, RunEvent.kind.in_(("log", "status", "alert")))
        .order_by(RunEvent.id.desc())
        .limit(tail)
    ).all()
    lines = []
    for ev in reversed(rows):
        level = ev.payload.get("level", "info" if ev.kind != "alert" else "warning")
        text = ev.payload.get("message") or ev.payload.get("status") or ""
        lines.append({"time": ev.wall_time, "level": level, "kind": ev.kind, "message": str(text)})
    return {
        "run_id": run_id,
        "lines": lines,
        "text": "\n".join(f"[{x['level']}] {x['message']}" for x in lines),
    }
