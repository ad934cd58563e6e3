"""Health, tier presets (for the launch form) and the browser session token."""

from __future__ import annotations

import dataclasses
from typing import Any, get_type_hints

from fastapi import APIRouter, HTTPException, Request
from sqlalchemy import text

from aime_core import config as C
from backend import security
from backend.api.deps import SessionDep, SettingsDep
from backend.errors import doc
from backend.models import HealthPublic, SessionPublic, TiersPublic

router = APIRouter(prefix="/api", tags=["misc"])


@router.get("/health", response_model=HealthPublic)
def health(session: SessionDep, settings: SettingsDep) -> dict[str, Any]:
    """Liveness: database and Redis reachable."""
    from backend.core.pubsub import sync_redis

    session.exec(text("SELECT 1"))
    try:
        redis_ok = bool(sync_redis(settings.redis_url).ping())
    except Exception:  # noqa: BLE001 - reported, not raised: the page still loads without Redis
        redis_ok = False
    return {"status": "ok", "database": settings.db_url.split(":", 1)[0], "redis": redis_ok}


def _fields(cls: type) -> list[dict[str, Any]]:
    hints = get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        base = next((a for a in getattr(hint, "__args__", (hint,)) if a is not type(None)), hint)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        out.append(
            {
                "name": f.name,
                "type": base.__name__,
                "optional": type(None) in getattr(hint, "__args__", ()),
                "default": default,
                "help": f.metadata.get("help", ""),
            }
        )
    return out


@router.get("/tiers", response_model=TiersPublic)
def tiers() -> dict[str, Any]:
    """Tier presets, the debug preset, valid domain/task pairs and every config field with help and default."""
    return {
        "tiers": {
            str(t): {
                "collect": C.to_dict(C.resolve(C.CollectConfig, t, env={})),
                "train": C.to_dict(C.resolve(C.TrainConfig, t, env={})),
                "preset": C.PRESETS[f"tier{t}"],
            }
            for t in C.TIERS
        },
        "presets": {p: C.PRESETS[p] for p in C.EXTRA_PRESETS},
        "domains": {d: list(ts) for d, ts in C.DMC_TASKS.items()},
        "synthetic": {"domain": C.SYNTHETIC_DOMAIN, "task": C.SYNTHETIC_TASK},
        "recommended": [list(p) for p in C.RECOMMENDED_TASKS],
        "fields": {"collect": _fields(C.CollectConfig), "train": _fields(C.TrainConfig)},
        "choices": {
            "nan_policy": list(C.NAN_POLICIES),
            "device": list(C.DEVICES),
            "data_on_gpu": list(C.DATA_ON_GPU),
        },
    }


@router.get("/session", response_model=SessionPublic, responses=doc(403))
def session_token(request: Request, settings: SettingsDep) -> dict[str, Any]:
    """The API token, for a page on this machine only: loopback client and Host, same-origin (if any Origin)."""
    refusal = security.session_refusal(request.scope)
    if refusal:
        raise HTTPException(403, f"{refusal}; paste the token printed by `aime up`")
    return {"token": settings.api_token, "local": True}
