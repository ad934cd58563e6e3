"""Metric ingest (batched, idempotent) and reads: keys, downsampled or exact series, and cross-run comparison."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query

from backend import metrics
from backend.api.deps import PubDep, Read, RunId, SessionDep, Token, run_or_404
from backend.errors import doc
from backend.models import (
    INT64_MAX,
    ComparePublic,
    ExactSeriesPublic,
    IngestedPublic,
    MetricKeyPublic,
    MetricsIn,
    SeriesPublic,
)

STEP_MIN = Query(None, ge=0, le=INT64_MAX, description="first step (inclusive)")
STEP_MAX = Query(None, ge=0, le=INT64_MAX, description="last step (inclusive)")
BUCKETS = Query(1000, ge=1, le=20000, description="at most this many buckets (1..20000)")
IDS = r"^\s*\d{1,19}\s*(,\s*\d{1,19}\s*)*,?\s*$"

router = APIRouter(prefix="/api", tags=["metrics"])


@router.post(
    "/runs/{run_id}/metrics", dependencies=[Token], response_model=IngestedPublic, responses=doc(404, 507)
)
def ingest(run_id: RunId, body: MetricsIn, session: SessionDep, pub: PubDep) -> dict[str, int]:
    """Upsert points {key, step, value, time}; values may be "nan", "inf", "-inf" or null. Re-sending is harmless."""
    run = run_or_404(session, run_id)
    try:
        return metrics.ingest(session, pub, run, body.points)
    except ValueError as exc:
        raise HTTPException(
            422, f'bad metric value: {exc}; use a number, "nan", "inf", "-inf" or null'
        ) from None


@router.get(
    "/runs/{run_id}/metrics", dependencies=[Read], response_model=list[MetricKeyPublic], responses=doc(404)
)
def keys(run_id: RunId, session: SessionDep) -> list[dict[str, Any]]:
    """Every metric key of the run with its point count, step range and last value."""
    run_or_404(session, run_id)
    return metrics.keys(session, run_id)


@router.get(
    "/runs/{run_id}/metrics/{key:path}",
    dependencies=[Read],
    response_model=SeriesPublic | ExactSeriesPublic,
    responses=doc(404),
)
def series(
    run_id: RunId,
    key: Annotated[str, Path(max_length=200, description="the metric key (may contain /)")],
    session: SessionDep,
    buckets: int = BUCKETS,
    step_min: int | None = STEP_MIN,
    step_max: int | None = STEP_MAX,
    exact: bool = Query(False, description="every point, paged (ExactSeriesPublic) instead of buckets"),
    offset: int = Query(0, ge=0, le=INT64_MAX, description="exact: points to skip"),
    limit: int = Query(10000, ge=1, le=100000, description="exact: at most this many points (1..100000)"),
) -> dict[str, Any]:
    """Downsampled (per bucket min/max/last; NaN/Inf steps listed) or, with exact=true, every point, paged."""
    run_or_404(session, run_id)
    if exact:
        return metrics.exact(session, run_id, key, step_min, step_max, offset, limit)
    return metrics.downsample(session, run_id, key, buckets, step_min, step_max)


@router.get("/metrics", dependencies=[Read], response_model=ComparePublic)
def compare(
    session: SessionDep,
    # 2,000 characters: room for hundreds of ids, while a URL of the worst case (4-byte characters, percent-
    # encoded) stays under what the HTTP server parses (~64 KB); past that it answers a plain-text 400 itself.
    runs: str = Query(..., max_length=2000, pattern=IDS, description="comma-separated run ids, e.g. 1,2,3"),
    key: str = Query(..., max_length=200, description="the metric key"),
    buckets: int = BUCKETS,
    step_min: int | None = STEP_MIN,
    step_max: int | None = STEP_MAX,
) -> dict[str, Any]:
    """The same key for several runs, downsampled, for comparison charts."""
    try:
        ids = [int(x) for x in runs.split(",") if x.strip()]
    except ValueError:
        raise HTTPException(422, "runs must be comma-separated integers, e.g. runs=1,2,3") from None
    if any(i > INT64_MAX for i in ids):
        raise HTTPException(422, f"run ids are below 2^63, got {max(ids)}")
    return {
        "key": key,
        "runs": {str(i): metrics.downsample(session, i, key, buckets, step_min, step_max) for i in ids},
    }
