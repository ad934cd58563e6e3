"""Datasets registered by collection runs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException
from sqlmodel import select

from backend.api.deps import Read, SessionDep
from backend.models import Dataset, Run

router = APIRouter(prefix="/api/datasets", tags=["datasets"], dependencies=[Read])


@router.get("")
def list_datasets(session: SessionDep) -> list[Dataset]:
    """Every dataset, newest first."""
    return list(session.exec(select(Dataset).order_by(Dataset.id.desc())).all())


@router.get("/{dataset_id}")
def get_dataset(dataset_id: int, session: SessionDep) -> dict[str, Any]:
    """One dataset with the runs trained on it."""
    ds = session.get(Dataset, dataset_id)
    if ds is None:
        raise HTTPException(404, f"no dataset {dataset_id}")
    runs = session.exec(select(Run.id, Run.name, Run.status).where(Run.dataset_id == dataset_id)).all()
    return {**ds.model_dump(), "runs": [{"id": i, "name": n, "status": s} for i, n, s in runs]}
