"""Artifacts: record a file, upload one (rollout videos), list a run's, download with HTTP range requests."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import FileResponse
from sqlmodel import select

from backend import crud, security
from backend.api.deps import PubDep, Read, SessionDep, SettingsDep, Token, run_or_404
from backend.models import ARTIFACT_KINDS, Artifact, ArtifactIn

router = APIRouter(prefix="/api", tags=["artifacts"])

MEDIA = {
    ".mp4": "video/mp4",
    ".jsonl": "application/x-ndjson",
    ".json": "application/json",
    ".pt": "application/octet-stream",
}


@router.post("/runs/{run_id}/artifacts", dependencies=[Token])
def record(
    run_id: int, body: ArtifactIn, session: SessionDep, settings: SettingsDep, pub: PubDep
) -> Artifact:
    """Record a file the run wrote (a checkpoint on the worker's disk); the same path again updates it.
    The path must lie in the data directory's run areas or AIME_ALLOWED_ROOTS (422 otherwise)."""
    run = run_or_404(session, run_id)
    try:
        path = security.confine(settings, "path", body.path)
    except ValueError as exc:
        raise HTTPException(422, {"field": "path", "message": str(exc), "error": f"path: {exc}"}) from None
    return crud.add_artifact(session, pub, run, body.kind, path, body.step, body.meta)


@router.post("/runs/{run_id}/artifacts/upload", dependencies=[Token])
async def upload(
    run_id: int,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    pub: PubDep,
    kind: str = Query(...),
    name: str = Query(..., max_length=200, description="file name (no directories)"),
    step: int | None = None,
    epoch: int | None = None,
) -> Artifact:
    """Upload a file's bytes (request body) into the data directory and record it."""
    run = run_or_404(session, run_id)
    if kind not in ARTIFACT_KINDS:
        raise HTTPException(422, f"kind must be one of {', '.join(ARTIFACT_KINDS)}, got {kind!r}")
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


@router.get("/runs/{run_id}/artifacts", dependencies=[Read])
def list_artifacts(run_id: int, session: SessionDep, kind: str | None = None) -> list[Artifact]:
    """A run's artifacts, by step."""
    run_or_404(session, run_id)
    query = select(Artifact).where(Artifact.run_id == run_id)
    if kind:
        query = query.where(Artifact.kind == kind)
    return list(session.exec(query.order_by(Artifact.step, Artifact.id)).all())


@router.get("/artifacts/{artifact_id}/download", dependencies=[Read])
def download(artifact_id: int, session: SessionDep, settings: SettingsDep) -> FileResponse:
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
