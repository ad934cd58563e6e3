"""The FastAPI app: REST under /api, OpenAPI at /docs, Prometheus at /metrics, and the dashboard's static files."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, HTTPException
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, HTMLResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from sqlmodel import Session

from backend import crud, diskfull, errors, metrics, reconcile, security
from backend.api.routes import alerts, artifacts, datasets, events, misc, queue, runs, sweeps, worker
from backend.api.routes import metrics as metric_routes
from backend.core import pubsub
from backend.core.db import get_engine
from backend.core.pubsub import Publisher
from backend.core.settings import get_settings
from backend.models import FIELD_DOCS
from backend.security import SecurityMiddleware

ROOT = Path(__file__).resolve().parent.parent
FRONTEND = ROOT / "frontend"
PAGES = ("/", "/runs/{run_id}", "/launch", "/queue", "/compare", "/datasets", "/sweeps", "/sweeps/{sweep_id}")


def _swagger_ui() -> Path:
    """Swagger UI 5 (OpenAPI 3.1) from the fastapi-offline wheel's static files; the package itself is not imported."""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or spec.origin is None:
        raise RuntimeError("fastapi-offline is not installed; it serves /docs (pip install fastapi-offline)")
    return Path(spec.origin).parent / "static"


def _plotly_js() -> Path | None:
    spec = importlib.util.find_spec("plotly")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "package_data" / "plotly.min.js"
    return path if path.is_file() else None


async def _reaper() -> None:
    """Runs whose heartbeat stopped become `lost` (checked a few times per timeout)."""
    settings = get_settings()
    period = max(0.5, min(5.0, settings.heartbeat_timeout / 4))
    # Heartbeats could not reach an API that was down: give workers one timeout to report before judging them.
    await asyncio.sleep(settings.heartbeat_timeout)
    while True:
        await asyncio.sleep(period)
        with contextlib.suppress(Exception):  # a DB hiccup must not kill the loop

            def sweep() -> None:
                with Session(get_engine()) as session:
                    crud.mark_lost(session, Publisher(settings), settings.heartbeat_timeout)

            await asyncio.to_thread(sweep)


@asynccontextmanager
async def lifespan(_app: FastAPI):
    task = asyncio.create_task(_reaper())
    requeue = asyncio.create_task(reconcile.loop(get_settings(), get_engine))  # broker vs database
    yield
    task.cancel()
    requeue.cancel()
    await asyncio.to_thread(pubsub.flush, 5.0)  # live events still queued for Redis go out before exit


app = FastAPI(
    title="AIME tier runner",
    description="Launch, watch and compare AIME world-model runs. Mutating calls need `Authorization: Bearer <token>`.",
    lifespan=lifespan,
    docs_url=None,  # served below from local files: the default page loads Swagger UI from a CDN
    redoc_url=None,
    telemetry=None if get_settings().otel else {"tracing": False, "metrics": False, "logs": False},
)
errors.install(app)  # every error as {"detail": ...} (backend/errors.py), Conflict -> 409
diskfull.install(app)  # a full data disk: writes answer 507 (the worker sink re-sends), reads keep working
# Routes are matched in this order: the hot paths of running workers (metric ingest, events, heartbeats) first,
# so a one-point POST is not tested against twenty other routes (~0.1 ms of a ~1 ms call).
for module in (metric_routes, events, worker, misc, runs, alerts, artifacts, datasets, queue, sweeps):
    app.include_router(module.router, responses=errors.COMMON)


TOKEN_ONLY_READS = ("/api/runs/{run_id}/traceback",)


def openapi() -> dict:
    """The schema, with the bearer token optional on reads (open to this machine by default, AIME_OPEN_READS)."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        for path, ops in schema["paths"].items():
            for method, op in ops.items():
                read = method == "get" or path in security.READ_POSTS
                if op.get("security") and read and path not in TOKEN_ONLY_READS:
                    op["security"] = [{"HTTPBearer": []}, {}]
        for model in schema["components"]["schemas"].values():
            for name, prop in model.get("properties", {}).items():
                if "description" not in prop and name in FIELD_DOCS:
                    prop["description"] = FIELD_DOCS[name]
        app.openapi_schema = schema
    return app.openapi_schema


app.openapi = openapi
# Host allow-list, same-origin and token checks before any body is read, body limits, security headers.
app.add_middleware(SecurityMiddleware)


@app.get("/metrics", response_class=PlainTextResponse, include_in_schema=False)
def prometheus() -> str:
    """Prometheus text: queue lengths, runs by status, ingest totals and rate."""
    settings = get_settings()
    lines = ["# TYPE aime_queue_length gauge"]
    try:
        lengths = queue.queue_lengths(settings)
    except Exception:  # noqa: BLE001 - Redis down still yields the database figures
        lengths = {}
    lines += [f'aime_queue_length{{queue="{q}"}} {n}' for q, n in lengths.items()]
    with Session(get_engine()) as session:
        by_status = crud.runs_by_status(session)
    lines.append("# TYPE aime_runs gauge")
    lines += [
        f'aime_runs{{status="{s}"}} {by_status.get(s, 0)}'
        for s in ("queued", "running", "succeeded", "failed", "cancelled", "lost")
    ]
    lines += [
        "# TYPE aime_ingested_points_total counter",
        f"aime_ingested_points_total {metrics.INGESTED['points']}",
    ]
    lines += [
        "# TYPE aime_ingest_points_per_second gauge",
        f"aime_ingest_points_per_second {metrics.ingest_rate():.3f}",
    ]
    return "\n".join(lines) + "\n"


# --- the dashboard (frontend engineer's files; served from here so one port does everything)
plotly_js = _plotly_js()
if plotly_js is not None:

    @app.get("/static/vendor/plotly.min.js", include_in_schema=False)
    def plotly() -> FileResponse:
        return FileResponse(
            plotly_js, media_type="text/javascript", headers={"Cache-Control": "max-age=86400"}
        )


class _Static(StaticFiles):
    """StaticFiles that tolerates the folder not existing yet (the frontend lands separately)."""

    def __init__(self, directory: Path):
        super().__init__(directory=str(directory), check_dir=False)

    async def get_response(self, path, scope):
        if not Path(self.directory).is_dir():
            raise HTTPException(404, "frontend/static does not exist yet")
        return await super().get_response(path, scope)


# Swagger UI 5 (reads OpenAPI 3.1) from the fastapi-offline wheel, so /docs works offline (mounted before the
# catch-all /static).
app.mount("/static/swagger", StaticFiles(directory=_swagger_ui()), name="swagger")
app.mount("/static", _Static(FRONTEND / "static"), name="static")


DOCS_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>AIME tier runner - API</title><link rel="icon" href="data:,">
<link rel="stylesheet" href="/static/swagger/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/static/swagger/swagger-ui-bundle.js"></script><script src="/docs/init.js"></script></body></html>
"""
# Swagger UI's start-up as a file, not an inline script: the Content-Security-Policy allows scripts from 'self' only.
DOCS_INIT = """SwaggerUIBundle({url: %s, dom_id: "#swagger-ui", layout: "BaseLayout", deepLinking: true,
  showExtensions: true, showCommonExtensions: true,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset]});
"""


@app.get("/docs", include_in_schema=False)
def docs() -> HTMLResponse:
    """Interactive OpenAPI documentation."""
    return HTMLResponse(DOCS_HTML)


@app.get("/docs/init.js", include_in_schema=False)
def docs_init() -> PlainTextResponse:
    return PlainTextResponse(
        DOCS_INIT % json.dumps(app.openapi_url or "/openapi.json"), media_type="text/javascript"
    )


MISSING = """<!doctype html><meta charset="utf-8"><title>AIME tier runner</title>
<h1>AIME tier runner</h1><p>The dashboard (frontend/index.html) is not there yet. The API works: see <a href="/docs">/docs</a>.</p>"""


def _page() -> HTMLResponse | FileResponse:
    index = FRONTEND / "index.html"
    if index.is_file():
        return FileResponse(index, media_type="text/html", headers={"Cache-Control": "no-cache"})
    return HTMLResponse(MISSING)


for _path in PAGES:
    app.add_api_route(_path, _page, methods=["GET"], include_in_schema=False, response_model=None)
