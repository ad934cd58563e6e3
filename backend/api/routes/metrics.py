"""Metric ingest (batched, idempotent) and reads: keys, downsampled or exact series, and cross-run comparison."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import TypeAdapter, ValidationError

from backend import metrics
from backend.api.deps import Read, RunId, SessionDep, require_token, run_or_404
from backend.core.db import get_engine
from backend.core.pubsub import Publisher
from backend.core.settings import get_settings
from backend.errors import doc
from backend.models import (
    INT64_MAX,
    ComparePublic,
    ExactSeriesPublic,
    IngestedPublic,
    MetricKeyPublic,
    MetricsDict,
    MetricsIn,
    PointDict,
    SeriesPublic,
)

STEP_MIN = Query(None, ge=0, le=INT64_MAX, description="first step (inclusive)")
STEP_MAX = Query(None, ge=0, le=INT64_MAX, description="last step (inclusive)")
BUCKETS = Query(1000, ge=1, le=20000, description="at most this many buckets (1..20000)")
IDS = r"^\s*\d{1,19}\s*(,\s*\d{1,19}\s*)*,?\s*$"

router = APIRouter(prefix="/api", tags=["metrics"])


def _inline(schema: dict) -> dict:
    """A model's JSON schema with its $defs written in place (an operation's own schema has no $defs to point at)."""
    defs = schema.pop("$defs", {})

    def walk(node):
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return walk(dict(defs[ref.split("/")[-1]]))
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema)


METRICS_BODY = TypeAdapter(MetricsDict)
# Ingest's own threads: asyncio's executor hands work over in about half the time anyio's thread pool takes.
_POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="ingest")
METRICS_IN = {  # the body as documented (MetricsIn: the same fields and constraints as METRICS_BODY checks)
    "required": True,
    "content": {"application/json": {"schema": _inline(MetricsIn.model_json_schema())}},
}


RUN_ID = TypeAdapter(RunId)
_RUN_ID_SCHEMA = RUN_ID.json_schema()
RUN_ID_PARAM = {  # the path parameter as FastAPI documents RunId on every other route, from the same annotation
    "name": "run_id",
    "in": "path",
    "required": True,
    "schema": {**_RUN_ID_SCHEMA, "title": "Run Id"},
    "description": _RUN_ID_SCHEMA["description"],
}


def _run_id(raw: str) -> int:
    try:
        return RUN_ID.validate_python(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        raise RequestValidationError([{**e, "loc": ("path", "run_id", *e["loc"])} for e in errors]) from None


def _points(body: bytes, content_type: str | None) -> list[PointDict]:
    """The request's points, validated as FastAPI validates MetricsIn (the same 422s), into plain dicts."""
    if not body:
        raise RequestValidationError(
            [{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}]
        )
    kind = (content_type or "application/json").split(";")[0].strip().lower()
    if not (kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))):
        error = {"type": "model_attributes_type", "loc": ("body",), "input": body[:80]}
        error["msg"] = f"Input should be a JSON object (Content-Type: application/json, not {kind})"
        raise RequestValidationError([error])
    try:
        return METRICS_BODY.validate_json(body)["points"]
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors]) from None


def _ingest(run_id: int, body: bytes, content_type: str | None) -> dict[str, int]:
    points = _points(body, content_type)
    try:
        rows = metrics.prepare(points)
    except ValueError as exc:
        raise HTTPException(
            422, f'bad metric value: {exc}; use a number, "nan", "inf", "-inf" or null'
        ) from None
    with get_engine().connect() as conn:
        try:
            return metrics.store(conn, Publisher(get_settings()), run_id, rows)
        except metrics.NoRun:
            raise HTTPException(404, f"no run {run_id}") from None


@router.post(
    "/runs/{run_id}/metrics",
    response_model=IngestedPublic,
    responses=doc(404, 507),
    # The token as `Token` declares it, checked in the route (no dependency: solving one cost more than the check)
    openapi_extra={"requestBody": METRICS_IN, "security": [{"HTTPBearer": []}], "parameters": [RUN_ID_PARAM]},
)
async def ingest(request: Request) -> Response:
    """Upsert points {key, step, value, time}; values may be "nan", "inf", "-inf" or null. Re-sending is harmless."""
    # The body is validated from its bytes into dicts and stored in one hop to a thread: no model object per
    # point, no session, publisher or token dependency of its own in the thread pool (each a hop). The run id is
    # read from the path here, as FastAPI would (the same 422s), and documented in openapi_extra: resolving one
    # declared parameter through FastAPI's dependency solver cost ~9 % of a one-point call (profiled).
    require_token(request, get_settings(), None)  # the security middleware checked it before the body, too
    run_id = _run_id(request.path_params["run_id"])
    body = await request.body()
    loop = asyncio.get_running_loop()
    result = await loop.run_in_executor(_POOL, _ingest, run_id, body, request.headers.get("content-type"))
    return Response(json.dumps(result), media_type="application/json")


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
