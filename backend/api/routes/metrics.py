"""Metric ingest (batched, idempotent) and reads: keys, downsampled or exact series, and cross-run comparison."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Query

from backend import metrics
from backend.api.deps import PubDep, Read, SessionDep, Token, run_or_404
from backend.models import MetricsIn

router = APIRouter(prefix="/api", tags=["metrics"])


@router.post("/runs/{run_id}/metrics", dependencies=[Token])
def ingest(run_id: int, body: MetricsIn, session: SessionDep, pub: PubDep) -> dict[str, int]:
    """Upsert points {key, step, value, time}; values may be "nan", "inf", "-inf" or null. Re-sending is harmless."""
    run = run_or_404(session, run_id)
    try:
        return metrics.ingest(session, pub, run, body.points)
    except ValueError as exc:
        raise HTTPException(
            422, f'bad metric value: {exc}; use a number, "nan", "inf", "-inf" or null'
        ) from None


@router.get("/runs/{run_id}/metrics", dependencies=[Read])
def keys(run_id: int, session: SessionDep) -> list[dict[str, Any]]:
    """Every metric key of the run with its point count, step range and last value."""
    run_or_404(session, run_id)
    return metrics.keys(session, run_id)


@router.get("/runs/{run_id}/metrics/{key:path}", dependencies=[Read])
def series(
    run_id: int,
    key: str,
    session: SessionDep,
    buckets: int = Query(1000, ge=1, le=20000),
    step_min: int | None = None,
    step_max: int | None = None,
    exact: bool = False,
    offset: int = Query(0, ge=0),
    limit: int = Query(10000, ge=1, le=100000),
) -> dict[str, Any]:
    """Downsampled (per bucket min/max/last; NaN/Inf steps listed) or, with exact=true, every point, paged."""
    run_or_404(session, run_id)
    if exact:
        return metrics.exact(session, run_id, key, step_min, step_max, offset, limit)
    return metrics.downsample(session, run_id, key, buckets, step_min, step_max)


@router.get("/metrics", dependencies=[Read])
def compare(
    session: SessionDep,
    runs: str = Query(..., description="comma-separated run ids"),
    key: str = Query(...),
    buckets: int = Query(1000, ge=1, le=20000),
    step_min: int | None = None,
    step_max: int | None = None,
) -> dict[str, Any]:
    """The same key for several runs, downsampled, for comparison charts."""
    try:
        ids = [int(x) for x in runs.split(",") if x.strip()]
    except ValueError:
        raise HTTPException(422, "runs must be comma-separated integers, e.g. runs=1,2,3") from None
    return {
        "key": key,
        "runs": {str(i): metrics.downsample(session, i, key, buckets, step_min, step_max) for i in ids},
    }
