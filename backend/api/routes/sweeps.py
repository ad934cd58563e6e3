"""Sweeps (create, list, show with leaderboard, cancel, promote) and seed-group mean ± std on aligned steps."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Query
from sqlmodel import Session, select

from backend import crud, metrics, sweeps
from backend.api.deps import PubDep, Read, SessionDep, SettingsDep, Token
from backend.models import PromoteIn, Run, Sweep, SweepCreate

router = APIRouter(prefix="/api", tags=["sweeps"])


def sweep_or_404(session: Session, sweep_id: int) -> Sweep:
    sweep = session.get(Sweep, sweep_id)
    if sweep is None:
        raise HTTPException(404, f"no sweep {sweep_id}")
    return sweep


@router.post("/sweeps", status_code=201, dependencies=[Token])
def create(body: SweepCreate, session: SessionDep, settings: SettingsDep, pub: PubDep) -> dict[str, Any]:
    """Expand the space, validate every configuration (422 names the field and configuration), queue `parallel`."""
    try:
        sweep = sweeps.create_sweep(session, settings, pub, body)
    except sweeps.SweepError as exc:
        raise HTTPException(422, exc.detail) from None
    return sweeps.describe(session, sweep)


@router.get("/sweeps", dependencies=[Read])
def list_sweeps(session: SessionDep) -> list[dict[str, Any]]:
    """Every sweep, newest first, with run counts by status."""
    rows = session.exec(select(Sweep).order_by(Sweep.id.desc())).all()
    return [sweeps.describe(session, s, with_runs=False) for s in rows]


@router.get("/sweeps/{sweep_id}", dependencies=[Read])
def get_sweep(sweep_id: int, session: SessionDep) -> dict[str, Any]:
    """One sweep: its runs, leaderboard (mean ± std over seeds per configuration), parent and promotions."""
    return sweeps.describe(session, sweep_or_404(session, sweep_id))


@router.post("/sweeps/{sweep_id}/cancel", dependencies=[Token])
def cancel(sweep_id: int, session: SessionDep, pub: PubDep) -> dict[str, Any]:
    """Cancel: held and queued runs never start, running ones checkpoint and stop."""
    try:
        sweep = sweeps.cancel_sweep(session, pub, sweep_or_404(session, sweep_id))
    except crud.Conflict as exc:
        raise HTTPException(409, str(exc)) from None
    return sweeps.describe(session, sweep)


@router.post("/sweeps/{sweep_id}/promote", status_code=201, dependencies=[Token])
def promote(
    sweep_id: int, body: PromoteIn, session: SessionDep, settings: SettingsDep, pub: PubDep
) -> dict[str, Any]:
    """Launch the best `top_k` configurations at the next tier as a new sweep (lineage kept on its runs)."""
    try:
        child = sweeps.promote(session, settings, pub, sweep_or_404(session, sweep_id), body)
    except sweeps.SweepError as exc:
        raise HTTPException(422, exc.detail) from None
    except crud.Conflict as exc:
        raise HTTPException(409, str(exc)) from None
    return sweeps.describe(session, child)


@router.get("/groups/{group_id}", dependencies=[Read])
def group(group_id: str, session: SessionDep) -> dict[str, Any]:
    """The runs of one seed group (a multi-seed launch, or one sweep configuration)."""
    runs = session.exec(select(Run).where(Run.group_id == group_id).order_by(Run.id)).all()
    if not runs:
        raise HTTPException(404, f"no group {group_id}")
    return {"group_id": group_id, "runs": [{"id": r.id, "seed": r.seed, "status": r.status} for r in runs]}


@router.get("/aggregate", dependencies=[Read])
def aggregate(
    session: SessionDep,
    key: str = Query(...),
    group: str | None = None,
    runs: str | None = Query(None, description="comma-separated run ids (instead of group)"),
    align: str = Query("common", pattern="^(common|all)$"),
) -> dict[str, Any]:
    """Mean ± std over runs at every aligned step, from all stored points (exact, not downsampled)."""
    if group:
        members = session.exec(
            select(Run.id, Run.parent_id).where(Run.group_id == group).order_by(Run.id)
        ).all()
        replaced = crud.replacements(members)  # a retried or resumed seed counts once, as its newest run
        ids = [r.id for r in members if r.id not in replaced]
    else:
        try:
            ids = [int(x) for x in (runs or "").split(",") if x.strip()]
        except ValueError:
            raise HTTPException(422, "runs must be comma-separated integers, e.g. runs=1,2,3") from None
    if not ids:
        raise HTTPException(422, "give group=<group id> or runs=1,2,... naming at least one run")
    return metrics.aggregate(session, ids, key, align)
