"""The worker's HTTP client of the API: bearer token, retries with exponential backoff on connection errors/5xx."""

from __future__ import annotations

import time
from typing import Any

import httpx

# 401: a restarting API may not have its token yet; 507: the API's disk is full (it answers again once freed)
RETRY_STATUS = {401, 408, 429, 500, 502, 503, 504, 507}


class ApiError(Exception):
    """A refusal the worker must not retry (404, 409, 422...)."""

    def __init__(self, status: int, text: str):
        super().__init__(f"HTTP {status}: {text[:500]}")
        self.status = status


class ApiClient:
    def __init__(self, url: str, token: str, timeout: float = 10.0):
        self.url = url.rstrip("/")
        self.http = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout
        )

    def request(self, method: str, path: str, retry_for: float = 0.0, **kw: Any) -> httpx.Response:
        """Send; on a transient failure retry with backoff (0.2 s doubling to 5 s) for up to `retry_for` seconds."""
        deadline, delay = time.monotonic() + retry_for, 0.2
        while True:
            try:
                resp = self.http.request(method, path, **kw)
                if resp.status_code < 400:
                    return resp
                if resp.status_code not in RETRY_STATUS:
                    raise ApiError(resp.status_code, resp.text)
                error: Exception = ApiError(resp.status_code, resp.text)
            except httpx.TransportError as exc:
                error = exc
            if time.monotonic() + delay > deadline:
                raise error
            time.sleep(delay)
            delay = min(delay * 2, 5.0)

    def post(self, path: str, json: Any = None, retry_for: float = 0.0, **kw: Any) -> Any:
        return self.request("POST", path, retry_for=retry_for, json=json, **kw).json()

    def close(self) -> None:
        self.http.close()
