"""Sweeps (create, list, show with leaderboard, cancel, promote) and seed-group mean ± std on aligned steps."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query
from sqlmodel import Session, select

from backend import metrics, queueing, sweeps
from backend.api.deps import PubDep, Read, SessionDep, SettingsDep, SweepId, Token
from backend.api.routes.metrics import IDS
from backend.errors import doc
from backend.models import (
    INT64_MAX,
    AggregatePublic,
    GroupPublic,
    PromoteIn,
    Run,
    Sweep,
    SweepCreate,
    SweepDetailPublic,
    SweepPublic,
)

router = APIRouter(prefix="/api", tags=["sweeps"])


def sweep_or_404(session: Session, sweep_id: int) -> Sweep:
    sweep = session.get(Sweep, sweep_id)
    if sweep is None:
        raise HTTPException(404, f"no sweep {sweep_id}")
    return sweep


@router.post(
    "/sweeps", status_code=201, dependencies=[Token], response_model=SweepDetailPublic, responses=doc(507)
)
def create(body: SweepCreate, session: SessionDep, settings: SettingsDep, pub: PubDep) -> dict[str, Any]:
    """Expand the space, validate every configuration (422 names the field and configuration), queue `parallel`."""
    sweep = sweeps.create_sweep(
        session, settings, pub, body
    )  # SweepError: a 422 naming the field (errors.py)
    return sweeps.describe(session, sweep)


@router.get("/sweeps", dependencies=[Read], response_model=list[SweepPublic])
def list_sweeps(session: SessionDep) -> list[dict[str, Any]]:
    """Every sweep, newest first, with run counts by status."""
    rows = session.exec(select(Sweep).order_by(Sweep.id.desc())).all()
    return [sweeps.describe(session, s, with_runs=False) for s in rows]


@router.get("/sweeps/{sweep_id}", dependencies=[Read], response_model=SweepDetailPublic, responses=doc(404))
def get_sweep(sweep_id: SweepId, session: SessionDep) -> dict[str, Any]:
    """One sweep: its runs, leaderboard (mean ± std over seeds per configuration), parent and promotions."""
    return sweeps.describe(session, sweep_or_404(session, sweep_id))


@router.post(
    "/sweeps/{sweep_id}/cancel",
    dependencies=[Token],
    response_model=SweepDetailPublic,
    responses=doc(404, 409, 507),
)
def cancel(sweep_id: SweepId, session: SessionDep, pub: PubDep) -> dict[str, Any]:
    """Cancel: held and queued runs never start, running ones checkpoint and stop."""
    sweep = sweeps.cancel_sweep(session, pub, sweep_or_404(session, sweep_id))
    return sweeps.describe(session, sweep)


@router.post(
    "/sweeps/{sweep_id}/promote",
    status_code=201,
    dependencies=[Token],
    response_model=SweepDetailPublic,
    responses=doc(404, 409, 507),
)
def promote(
    sweep_id: SweepId, body: PromoteIn, session: SessionDep, settings: SettingsDep, pub: PubDep
) -> dict[str, Any]:
    """Launch the best `top_k` configurations at the next tier as a new sweep (lineage kept on its runs)."""
    child = sweeps.promote(session, settings, pub, sweep_or_404(session, sweep_id), body)
    return sweeps.describe(session, child)


@router.get("/groups/{group_id}", dependencies=[Read], response_model=GroupPublic, responses=doc(404))
def group(
    group_id: Annotated[str, Path(max_length=200, description="the seed group id")], session: SessionDep
) -> dict[str, Any]:
    """The runs of one seed group (a multi-seed launch, or one sweep configuration)."""
    runs = session.exec(select(Run).where(Run.group_id == group_id).order_by(Run.id)).all()
    if not runs:
        raise HTTPException(404, f"no group {group_id}")
    return {"group_id": group_id, "runs": [{"id": r.id, "seed": r.seed, "status": r.status} for r in runs]}


@router.get("/aggregate", dependencies=[Read], response_model=AggregatePublic)
def aggregate(
    session: SessionDep,
    key: str = Query(..., max_length=200, description="the metric key"),
    group: str | None = Query(None, max_length=200, description="a seed group id"),
    runs: str | None = Query(
        None,
        max_length=2000,  # see routes/metrics.py: a URL the HTTP server still parses
        pattern=IDS,
        description="comma-separated run ids (instead of group), e.g. 1,2,3",
    ),
    align: Literal["common", "all"] = Query(
        "common", description="common: steps every run has; all: every step, over the runs that have it"
    ),
) -> dict[str, Any]:
    """Mean ± std over runs at every aligned step, from all stored points (exact, not downsampled)."""
    if group:
        members = session.exec(
            select(Run.id, Run.parent_id).where(Run.group_id == group).order_by(Run.id)
        ).all()
        replaced = queueing.replacements(members)  # a retried or resumed seed counts once, as its newest run
        ids = [r.id for r in members if r.id not in replaced]
    else:
        try:
            ids = [int(x) for x in (runs or "").split(",") if x.strip()]
        except ValueError:
            raise HTTPException(422, "runs must be comma-separated integers, e.g. runs=1,2,3") from None
        if any(i < 0 or i > INT64_MAX for i in ids):
            raise HTTPException(422, "run ids are integers 0 <= id < 2^63")
    if not ids:
        raise HTTPException(422, "give group=<group id> or runs=1,2,... naming at least one run")
    return metrics.aggregate(session, ids, key, align)
