"""A full data disk is a 507, not a 500: reads keep working, writes are refused with the path and the cause.

The worker's HTTP sink treats 507 like any server error: it keeps the batch and re-sends it once space is freed.
"""

from __future__ import annotations

import errno
import shutil

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError

from backend.core.settings import get_settings


def _free(path) -> int | None:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def disk_full(exc: BaseException) -> bool:
    """SQLite's "database or disk is full", Postgres's DiskFull (53100), ENOSPC, or any I/O error on a full disk."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    orig = getattr(exc, "orig", None)
    text = str(orig or exc).lower()
    if getattr(orig, "sqlstate", None) == "53100" or "disk is full" in text or "no space left" in text:
        return True
    if "disk i/o error" in text:
        free = _free(get_settings().artifact_root)
        return free is not None and free < 2**20
    return False


def _response(exc: BaseException) -> JSONResponse:
    root = get_settings().artifact_root
    free = _free(root)
    detail = (
        f"no space left on {root} ({free if free is not None else '?'} bytes free): the API keeps serving "
        f"reads; this write was refused, send it again once space is freed"
    )
    return JSONResponse({"detail": detail}, status_code=507)


def install(app: FastAPI) -> None:
    async def handler(_request: Request, exc: Exception):
        if disk_full(exc):
            return _response(exc)
        raise exc

    app.add_exception_handler(OperationalError, handler)
    app.add_exception_handler(OSError, handler)
