"""Every error reply in one shape, `{"detail": ...}`, and the handlers that make it so.

`detail` is a sentence saying what was wrong and what is allowed; for a 422 that names a field it is an object
`{field, message, error}` (plus `errors` when several fields were wrong, and the sweep configuration when known).
The security middleware (backend/security.py) and the full-disk handler (backend/diskfull.py) reply the same way.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from aime_core.config import ConfigError
from backend.crud import Conflict
from backend.sweeps import SweepError

log = logging.getLogger("aime.api")


class FieldErrorPublic(BaseModel):
    """What was wrong with one field of a request (a 422)."""

    model_config = ConfigDict(extra="allow")
    field: str = Field(
        description="the field, dotted for nested ones (e.g. `overrides.lr`, `points.0.value`)"
    )
    message: str = Field(description="what was wrong and what is allowed")
    error: str = Field(description="`field: message`, ready to show")


class ErrorPublic(BaseModel):
    """An error reply: `detail` says what was wrong and what is allowed."""

    detail: str | FieldErrorPublic = Field(
        description="a sentence; for a 422 naming a field, an object with `field`, `message` and `error`"
    )


DESCRIPTIONS = {
    400: "Bad request: a Host that is not this server's, or a malformed header",
    401: "Missing or wrong bearer token (reads from another machine need it too, unless AIME_OPEN_READS=all)",
    403: "Refused: a cross-origin write, a file outside the served directories, or a session token asked remotely",
    404: "No such resource",
    409: "The request does not fit the current state (e.g. cancelling a finished run)",
    413: "Request body larger than its limit (AIME_MAX_BODY_BYTES, AIME_MAX_INGEST_BYTES, AIME_MAX_UPLOAD_BYTES)",
    422: "A parameter or body field is wrong; `detail` names it and says what is allowed",
    500: "Unexpected server error (a bug: please report it)",
    507: "The data disk is full: reads keep working, this write was refused; send it again once space is freed",
}


def doc(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error codes, all with the one error shape."""
    return {code: {"model": ErrorPublic, "description": DESCRIPTIONS[code]} for code in codes}


# Every operation can meet the security middleware (400 Host, 401 token, 403 origin, 413 size) and validation.
COMMON = doc(400, 401, 403, 413, 422)
WRITE = doc(400, 401, 403, 413, 422, 507)


def _field(loc: tuple | list) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):
        parts = parts[1:]
    return ".".join(parts) or "body"


def _message(err: dict[str, Any]) -> str:
    msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    if err.get("type") == "missing":
        return "is required"
    if "input" in err and err.get("type") not in ("missing",):
        shown = repr(err["input"])
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        return f"{msg} (got {shown})"
    return msg


async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's list of pydantic errors, as one field object (each further wrong field under `errors`)."""
    items = [{"field": _field(e.get("loc", ())), "message": _message(e)} for e in exc.errors()]
    first = items[0] if items else {"field": "body", "message": "invalid request"}
    detail: dict[str, Any] = {
        "field": first["field"],
        "message": first["message"],
        "error": "; ".join(f"{i['field']}: {i['message']}" for i in items) or "invalid request",
    }
    if len(items) > 1:
        detail["errors"] = items
    return JSONResponse({"detail": jsonable_encoder(detail)}, status_code=422)


def allowed_methods(request: Request) -> str | None:
    """Every method the path supports, from the OpenAPI schema (Starlette's 405 names only the first route that
    matched); the most specific path wins (/api/runs/worker-lost over /api/runs/{run_id})."""
    found = []
    for template, ops in request.app.openapi()["paths"].items():
        pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
        if template.endswith("/{key}"):  # metric keys hold slashes
            pattern = pattern[: -len("[^/]+")] + ".+"
        if re.fullmatch(pattern, request.url.path):
            found.append((template.count("{"), [m.upper() for m in ops]))
    if not found:
        return None
    fewest = min(n for n, _ in found)
    return ", ".join(sorted({m for n, ms in found if n == fewest for m in ms}))


async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    detail = exc.detail if isinstance(exc.detail, str | dict) else str(exc.detail)
    headers = dict(getattr(exc, "headers", None) or {})
    if exc.status_code == 405:
        headers["Allow"] = allowed_methods(request) or headers.get("Allow", "")
        detail = f"method {request.method} is not allowed here; allowed: {headers['Allow']}"
    return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=headers or None)


async def config_error(_request: Request, exc: ConfigError) -> JSONResponse:
    """A launch's config is wrong: 422 naming the field and what is allowed."""
    return JSONResponse(
        {"detail": {"field": exc.field, "message": exc.message, "error": str(exc)}}, status_code=422
    )


async def sweep_error(_request: Request, exc: SweepError) -> JSONResponse:
    """A sweep request is wrong: 422 naming the field (and the configuration when known)."""
    return JSONResponse({"detail": jsonable_encoder(exc.detail)}, status_code=422)


async def conflict(_request: Request, exc: Conflict) -> JSONResponse:
    """`crud.Conflict` anywhere below a route is a 409 with its message."""
    return JSONResponse({"detail": str(exc)}, status_code=409)


async def server_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(
        {"detail": f"internal server error ({type(exc).__name__}); the server log has the traceback"},
        status_code=500,
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Conflict, conflict)
    app.add_exception_handler(ConfigError, config_error)
    app.add_exception_handler(SweepError, sweep_error)
    app.add_exception_handler(Exception, server_error)
