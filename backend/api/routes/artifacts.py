"""Artifacts: record a file, upload one (rollout videos), list a run's, download with HTTP range requests."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import FileResponse
from sqlmodel import select

from backend import crud, security
from backend.api.deps import ArtifactId, PubDep, Read, RunId, SessionDep, SettingsDep, Token, run_or_404
from backend.errors import DESCRIPTIONS, ErrorPublic, doc
from backend.models import INT64_MAX, NO_NUL, Artifact, ArtifactIn, ArtifactKind, ArtifactPublic

router = APIRouter(prefix="/api", tags=["artifacts"])

MEDIA = {
    ".mp4": "video/mp4",
    ".jsonl": "application/x-ndjson",
    ".json": "application/json",
    ".pt": "application/octet-stream",
}


@router.post(
    "/runs/{run_id}/artifacts", dependencies=[Token], response_model=ArtifactPublic, responses=doc(404)
)
def record(
    run_id: RunId, body: ArtifactIn, session: SessionDep, settings: SettingsDep, pub: PubDep
) -> Artifact:
    """Record a file the run wrote (a checkpoint on the worker's disk); the same path again updates it.
    The path must lie in the data directory's run areas or AIME_ALLOWED_ROOTS (422 otherwise)."""
    run = run_or_404(session, run_id)
    try:
        path = security.confine(settings, "path", body.path)
    except ValueError as exc:
        raise HTTPException(422, {"field": "path", "message": str(exc), "error": f"path: {exc}"}) from None
    return crud.add_artifact(session, pub, run, body.kind, path, body.step, body.meta)


UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "description": "the file's bytes (up to AIME_MAX_UPLOAD_BYTES)",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


@router.post(
    "/runs/{run_id}/artifacts/upload",
    dependencies=[Token],
    response_model=ArtifactPublic,
    responses=doc(404, 507),
    openapi_extra=UPLOAD_BODY,
)
async def upload(
    run_id: RunId,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    pub: PubDep,
    kind: ArtifactKind = Query(..., description="what the file is"),
    name: str = Query(
        ..., min_length=1, max_length=200, pattern=NO_NUL, description="file name (no directories)"
    ),
    step: int | None = Query(None, ge=0, le=INT64_MAX, description="the step it belongs to"),
    epoch: int | None = Query(None, ge=0, le=INT64_MAX, description="the epoch it belongs to"),
) -> Artifact:
    """Upload a file's bytes (request body) into the data directory and record it."""
    run = run_or_404(session, run_id)
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", Path(name).name)
    if safe in ("", ".", ".."):
        raise HTTPException(422, "name must be a plain file name such as eval_epoch_0001.mp4")
    folder = settings.artifact_root / "uploads" / str(run_id)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{safe}.part"
    try:
        with tmp.open("wb") as f:
            async for chunk in request.stream():  # bounded by AIME_MAX_UPLOAD_BYTES (backend.security): 413
                f.write(chunk)
        tmp.replace(folder / safe)
    finally:
        tmp.unlink(missing_ok=True)
    meta = {"uploaded": True, "name": name} | ({"epoch": epoch} if epoch is not None else {})
    return crud.add_artifact(session, pub, run, kind, str(folder / safe), step, meta)


@router.get(
    "/runs/{run_id}/artifacts", dependencies=[Read], response_model=list[ArtifactPublic], responses=doc(404)
)
def list_artifacts(
    run_id: RunId,
    session: SessionDep,
    kind: ArtifactKind | None = Query(None, description="only artifacts of this kind"),
) -> list[Artifact]:
    """A run's artifacts, by step."""
    run_or_404(session, run_id)
    query = select(Artifact).where(Artifact.run_id == run_id)
    if kind:
        query = query.where(Artifact.kind == kind)
    return list(session.exec(query.order_by(Artifact.step, Artifact.id)).all())


FILE = {"schema": {"type": "string", "format": "binary"}}
DOWNLOAD = {
    200: {
        "description": "the file (video/mp4, application/x-ndjson, application/json or application/octet-stream)",
        "content": {
            "application/octet-stream": FILE,
            "video/mp4": FILE,
            "application/x-ndjson": {"schema": {"type": "string"}},
            "application/json": {"schema": {}},  # a recorded JSON file, whatever it holds
        },
    },
    206: {
        "description": "the requested byte range (Range: bytes=...)",
        "content": {"application/octet-stream": FILE},
    },
    416: {"description": "the Range lies outside the file", "model": ErrorPublic},
    **doc(403, 404),
}
DESCRIPTIONS.setdefault(416, "Range not satisfiable")


@router.get(
    "/artifacts/{artifact_id}/download",
    dependencies=[Read],
    response_class=FileResponse,
    responses=DOWNLOAD,
)
def download(artifact_id: ArtifactId, session: SessionDep, settings: SettingsDep) -> FileResponse:
    """A run's recorded file, with Range support (videos seek); only files in the data directory's run areas
    (datasets/, runs/, uploads/) or AIME_ALLOWED_ROOTS, never the database, token, broker or log files."""
    art = session.get(Artifact, artifact_id)
    if art is None:
        raise HTTPException(404, f"no artifact {artifact_id}")
    try:
        path = Path(security.confine(settings, "path", art.path))
    except ValueError:
        roots = ", ".join(str(r) for r in security.allowed_roots(settings))
        raise HTTPException(
            403, f"artifact {artifact_id} is outside the served directories ({roots}); refused"
        ) from None
    if not path.is_file():
        raise HTTPException(404, f"artifact file {path.name} is gone")
    return FileResponse(
        path, media_type=MEDIA.get(path.suffix, "application/octet-stream"), filename=path.name
    )
