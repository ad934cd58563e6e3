"""Annotated dependencies: settings, DB session, event publisher, and the bearer-token checks."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import Session

from backend import security
from backend.core.db import get_session
from backend.core.pubsub import Publisher
from backend.core.settings import Settings, get_settings
from backend.models import INT64_MAX, Run

# Declares the bearer scheme in the OpenAPI schema; the checks below (and backend.security) do the refusing.
bearer = HTTPBearer(
    auto_error=False,
    description="`Authorization: Bearer <AIME_API_TOKEN>` (printed by `aime up`): every write and ingest, and reads "
    "from another machine unless AIME_OPEN_READS=all",
)
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def is_local(request: Request) -> bool:
    """A loopback client with no proxy headers (X-Real-IP, Forwarded, X-Forwarded-For make a request remote)."""
    return security.is_local(request.scope)


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def require_token(
    request: Request, settings: Annotated[Settings, Depends(get_settings)], _credentials: BearerDep
) -> None:
    """Every mutating call and ingest needs `Authorization: Bearer <AIME_API_TOKEN>`."""
    if not settings.api_token:
        raise HTTPException(401, "the server has no AIME_API_TOKEN configured; mutating calls are refused")
    if not secrets.compare_digest(_bearer(request), settings.api_token):
        raise HTTPException(
            401,
            "missing or wrong bearer token (Authorization: Bearer <AIME_API_TOKEN>)",
            {"WWW-Authenticate": "Bearer"},
        )


def allow_read(
    request: Request, settings: Annotated[Settings, Depends(get_settings)], _credentials: BearerDep
) -> None:
    """Reads are open to localhost by default (AIME_OPEN_READS=localhost|all|none); otherwise the token is needed."""
    if settings.open_reads == "all" or (settings.open_reads == "localhost" and is_local(request)):
        return
    # EventSource cannot send headers: a read may carry the token as ?token= instead.
    query_token = request.query_params.get("token", "")
    if settings.api_token and query_token and secrets.compare_digest(query_token, settings.api_token):
        return
    require_token(request, settings, None)


def _publisher(settings: Annotated[Settings, Depends(get_settings)]) -> Publisher:
    return Publisher(settings)


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
PubDep = Annotated[Publisher, Depends(_publisher)]
Token = Depends(require_token)
Read = Depends(allow_read)


def _id(what: str):
    return Path(ge=0, le=INT64_MAX, description=f"the {what}'s id")


RunId = Annotated[int, _id("run")]
AlertId = Annotated[int, _id("alert")]
ArtifactId = Annotated[int, _id("artifact")]
DatasetId = Annotated[int, _id("dataset")]
SweepId = Annotated[int, _id("sweep")]


def run_or_404(session: Session, run_id: int) -> Run:
    run = session.get(Run, run_id)
    if run is None:
        raise HTTPException(404, f"no run {run_id}")
    return run
