"""Alerts opened by ingest, early stop and the run lifecycle: one open alert per run and key.

Below crud, metrics and early_stop alike (it imports only the models), so none of them imports another for it.
"""

from __future__ import annotations

from sqlmodel import Session, select

from backend.core.pubsub import Publisher
from backend.models import Alert


def open_alert(
    session: Session, pub: Publisher, run_id: int, kind: str, key: str, step: int | None, msg: str
) -> bool:
    """One open alert per run and key: a second one is dropped until the first is acknowledged."""
    exists = session.exec(
        select(Alert.id).where(Alert.run_id == run_id, Alert.key == key, Alert.acknowledged == False)  # noqa: E712
    ).first()
    if exists:
        return False
    alert = Alert(run_id=run_id, kind=kind, key=key, step=step, message=msg)
    session.add(alert)
    session.flush()
    pub.publish("alert", run_id, {"id": alert.id, "kind": kind, "key": key, "step": step, "message": msg})
    return True
