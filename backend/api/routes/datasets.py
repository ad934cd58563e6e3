"""Datasets registered by collection runs, and a strip of frames from one episode (the datasets page's preview)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from fastapi import APIRouter, HTTPException, Query, Response
from sqlmodel import select

from backend.api.deps import DatasetId, Read, SessionDep
from backend.errors import doc
from backend.models import Dataset, DatasetDetailPublic, DatasetPublic, Run

router = APIRouter(prefix="/api/datasets", tags=["datasets"], dependencies=[Read])


@router.get("", response_model=list[DatasetPublic])
def list_datasets(session: SessionDep) -> list[Dataset]:
    """Every dataset, newest first."""
    return list(session.exec(select(Dataset).order_by(Dataset.id.desc())).all())


@router.get("/{dataset_id}", response_model=DatasetDetailPublic, responses=doc(404))
def get_dataset(dataset_id: DatasetId, session: SessionDep) -> dict[str, Any]:
    """One dataset with the runs trained on it."""
    ds = session.get(Dataset, dataset_id)
    if ds is None:
        raise HTTPException(404, f"no dataset {dataset_id}")
    runs = session.exec(select(Run.id, Run.name, Run.status).where(Run.dataset_id == dataset_id)).all()
    return {**ds.model_dump(), "runs": [{"id": i, "name": n, "status": s} for i, n, s in runs]}


def png(image: np.ndarray) -> bytes:
    """uint8 [H, W, 3] -> PNG bytes (zlib only: no imaging library in the API)."""
    h, w, _ = image.shape
    raw = b"".join(b"\x00" + image[y].tobytes() for y in range(h))  # filter 0 on every row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )


def frame_strip(path: str | Path, episode: int, count: int, gap: int = 2) -> np.ndarray:
    """`count` frames evenly spaced over one episode, side by side with a white gap; small frames doubled."""
    with h5py.File(path, "r") as f:
        name = f"episode_{episode}"
        if name not in f:
            raise KeyError(name)
        obs = f[name]["observations"]
        T, H, W, _ = obs.shape
        idx = sorted({int(round(i)) for i in np.linspace(0, T - 1, min(count, T))})
        frames = [np.asarray(obs[i]) for i in idx]  # one chunk per frame: only these are read
    scale = 2 if max(H, W) <= 64 else 1
    tiles = [fr.repeat(scale, 0).repeat(scale, 1) for fr in frames]
    th, tw = H * scale, W * scale
    out = np.full((th, len(tiles) * (tw + gap) - gap, 3), 255, np.uint8)
    for i, t in enumerate(tiles):
        out[:, i * (tw + gap) : i * (tw + gap) + tw] = t
    return out


@router.get(
    "/{dataset_id}/frames.png",
    response_class=Response,
    responses={
        200: {
            "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
            "description": "PNG strip of frames",
        },
        **doc(404),
    },
)
def frames(
    dataset_id: DatasetId,
    session: SessionDep,
    episode: int = Query(0, ge=0, le=1_000_000, description="episode index"),
    count: int = Query(8, ge=1, le=32, description="frames in the strip, evenly spaced over the episode"),
) -> Response:
    """A PNG strip of `count` frames evenly spaced over one episode of the dataset."""
    ds = session.get(Dataset, dataset_id)
    if ds is None:
        raise HTTPException(404, f"no dataset {dataset_id}")
    if not Path(ds.path).is_file():
        raise HTTPException(404, f"the dataset file {Path(ds.path).name} is gone")
    try:
        image = frame_strip(ds.path, episode, count)
    except KeyError:
        raise HTTPException(
            404, f"dataset {dataset_id} has no episode {episode} (it has {ds.episodes})"
        ) from None
    except OSError as exc:
        raise HTTPException(422, f"could not read {Path(ds.path).name}: {exc}") from None
    return Response(png(image), media_type="image/png", headers={"Cache-Control": "max-age=3600"})
