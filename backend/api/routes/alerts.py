"""Alerts: list a run's, acknowledge one (a new alert for the same key can then open)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from sqlmodel import select

from backend.api.deps import AlertId, PubDep, Read, RunId, SessionDep, Token, run_or_404
from backend.errors import doc
from backend.models import Alert, AlertPublic

router = APIRouter(prefix="/api", tags=["alerts"])


@router.get(
    "/runs/{run_id}/alerts", dependencies=[Read], response_model=list[AlertPublic], responses=doc(404)
)
def run_alerts(run_id: RunId, session: SessionDep) -> list[Alert]:
    """Alerts of a run, oldest first."""
    run_or_404(session, run_id)
    return list(session.exec(select(Alert).where(Alert.run_id == run_id).order_by(Alert.id)).all())


@router.post(
    "/alerts/{alert_id}/ack", dependencies=[Token], response_model=AlertPublic, responses=doc(404, 507)
)
def ack(alert_id: AlertId, session: SessionDep, pub: PubDep) -> Alert:
    """Acknowledge an alert."""
    alert = session.get(Alert, alert_id)
    if alert is None:
        raise HTTPException(404, f"no alert {alert_id}")
    alert.acknowledged = True
    session.add(alert)
    session.commit()
    session.refresh(alert)
    pub.publish("alert_ack", alert.run_id, {"id": alert.id})
    return alert
