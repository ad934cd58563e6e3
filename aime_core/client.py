"""Notebook client of the service: launch, wait, list, exact metric history as pandas DataFrames, alerts, files.

from aime_core.client import Client
c = Client("http://127.0.0.1:8000", token="...")      # token: AIME_API_TOKEN, or asked of a local server
run = c.launch("train", tier=1, preset="debug", synthetic=True)
c.wait(run["id"]); df = c.metrics(run["id"])            # one row per step, one column per key
c.history(run["id"], "eval")                            # one row per evaluation (per-horizon arrays as lists)
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import httpx

FINAL = ("succeeded", "failed", "cancelled", "lost")


def _float(v: Any) -> float:
    return float(v) if v is not None else math.nan  # "nan"/"inf"/"-inf" parse as floats


class Client:
    def __init__(self, url: str = "http://127.0.0.1:8000", token: str | None = None, timeout: float = 30.0):
        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, timeout=timeout)
        token = token or os.environ.get("AIME_API_TOKEN")
        if not token:  # a server on this machine hands its token to local clients
            resp = self.http.get("/api/session")
            token = resp.json().get("token") if resp.status_code == 200 else None
        self.token = token
        if token:
            self.http.headers["Authorization"] = f"Bearer {token}"

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        resp = self.http.request(method, path, **kw)
        if resp.status_code >= 400:
            raise RuntimeError(f"{method} {path}: HTTP {resp.status_code}: {resp.text[:1000]}")
        return resp.json()

    # --- runs
    def launch(self, kind: str = "train", tier: int = 1, **fields: Any) -> dict | list[dict]:
        """Launch a run (fields: preset, domain, task, seed, seeds, synthetic, overrides, tags, notes)."""
        return self._call("POST", "/api/runs", json={"kind": kind, "tier": tier, **fields})

    def resolve(self, kind: str = "train", tier: int = 1, **fields: Any) -> dict:
        return self._call("POST", "/api/runs/resolve", json={"kind": kind, "tier": tier, **fields})

    def run(self, run_id: int) -> dict:
        return self._call("GET", f"/api/runs/{run_id}")

    def runs(self, **filters: Any):
        """Runs as a DataFrame (filters: status, kind, tier, domain, task, tag, text, limit)."""
        import pandas as pd

        filters.setdefault("limit", 1000)
        return pd.DataFrame(self._call("GET", "/api/runs", params=filters)["items"])

    def wait(
        self, run_id: int | list[int], timeout: float | None = None, poll: float = 1.0
    ) -> dict | list[dict]:
        """Block until the run(s) end; returns the final run record(s)."""
        ids = [run_id] if isinstance(run_id, int) else list(run_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            runs = [self.run(i) for i in ids]
            if all(r["status"] in FINAL for r in runs):
                return runs[0] if isinstance(run_id, int) else runs
            if deadline is not None and time.monotonic() > deadline:
                states = ", ".join(f"{r['id']}: {r['status']}" for r in runs)
                raise TimeoutError(f"runs still not finished after {timeout} s ({states})")
            time.sleep(poll)

    def cancel(self, run_id: int) -> dict:
        return self._call("POST", f"/api/runs/{run_id}/cancel")

    def retry(self, run_id: int) -> dict:
        return self._call("POST", f"/api/runs/{run_id}/retry")

    def resume(self, run_id: int) -> dict:
        return self._call("POST", f"/api/runs/{run_id}/resume")

    def delete(self, run_id: int) -> dict:
        return self._call("DELETE", f"/api/runs/{run_id}")

    # --- metrics (exact, unsampled)
    def metric(self, run_id: int, key: str, page: int = 100000):
        """Every point of one key: DataFrame with step, value, wall_time (NaN/Inf as floats)."""
        import pandas as pd

        steps, values, times, offset = [], [], [], 0
        while True:
            part = self._call(
                "GET",
                f"/api/runs/{run_id}/metrics/{key}",
                params={"exact": True, "offset": offset, "limit": page},
            )
            steps += part["steps"]
            values += [_float(v) for v in part["values"]]
            times += part["wall_times"]
            offset += len(part["steps"])
            if not part["steps"] or offset >= part["total"]:
                break
        return pd.DataFrame({"step": steps, "value": values, "wall_time": times})

    def metrics(self, run_id: int, keys: list[str] | None = None):
        """Exact history of several keys: one row per step, one column per key."""
        import pandas as pd

        keys = keys or [k["key"] for k in self._call("GET", f"/api/runs/{run_id}/metrics")]
        frames = [self.metric(run_id, k).set_index("step")["value"].rename(k) for k in keys]
        if not frames:
            return pd.DataFrame()
        return pd.concat(frames, axis=1).sort_index().reset_index()

    def history(self, run_id: int, kind: str = "eval"):
        """Stored events as a DataFrame, one row per event: id, kind, step, wall_time and one column per payload
        field (for kind="eval": epoch, horizon, rollout_mse, baseline_mse, ... with the per-horizon arrays as lists)."""
        import pandas as pd

        rows = self._call("GET", f"/api/runs/{run_id}/history", params={"kind": kind})
        base = ("id", "kind", "step", "wall_time")
        out = [
            {**{k: r[k] for k in base}, **{k: v for k, v in r["payload"].items() if k not in base}}
            for r in rows
        ]
        return pd.DataFrame(out, columns=list(dict.fromkeys([*base, *(k for r in out for k in r)])))

    # --- alerts, artifacts, datasets, queue
    def alerts(self, run_id: int):
        import pandas as pd

        return pd.DataFrame(self._call("GET", f"/api/runs/{run_id}/alerts"))

    def ack(self, alert_id: int) -> dict:
        return self._call("POST", f"/api/alerts/{alert_id}/ack")

    def artifacts(self, run_id: int, kind: str | None = None):
        import pandas as pd

        params = {"kind": kind} if kind else {}
        return pd.DataFrame(self._call("GET", f"/api/runs/{run_id}/artifacts", params=params))

    def download(self, artifact_id: int, dest: str | Path = ".") -> Path:
        """Save an artifact; `dest` is a folder (the server's file name is kept) or a file path."""
        dest = Path(dest)
        with self.http.stream("GET", f"/api/artifacts/{artifact_id}/download") as resp:
            if resp.status_code >= 400:
                resp.read()
                raise RuntimeError(f"download {artifact_id}: HTTP {resp.status_code}: {resp.text[:500]}")
            if dest.is_dir():
                disp = resp.headers.get("content-disposition", "")
                name = (
                    disp.split("filename=")[-1].strip('"; ')
                    if "filename=" in disp
                    else f"artifact-{artifact_id}"
                )
                dest = dest / name
            with dest.open("wb") as f:
                for chunk in resp.iter_bytes():
                    f.write(chunk)
        return dest

    def datasets(self):
        import pandas as pd

        return pd.DataFrame(self._call("GET", "/api/datasets"))

    def queue(self) -> dict:
        return self._call("GET", "/api/queue")

    # --- sweeps and seed groups
    def sweep(self, base: dict, grid: dict | None = None, random: dict | None = None, **fields: Any) -> dict:
        """Create a sweep (fields: seeds, metric, mode, parallel, early_stop, sweep_seed, name)."""
        body = {"base": {"kind": "train", **base}, "grid": grid or {}, "random": random or {}, **fields}
        return self._call("POST", "/api/sweeps", json=body)

    def sweeps(self) -> list[dict]:
        return self._call("GET", "/api/sweeps")

    def sweep_info(self, sweep_id: int) -> dict:
        """The sweep with its runs, leaderboard, parent and promotions."""
        return self._call("GET", f"/api/sweeps/{sweep_id}")

    def leaderboard(self, sweep_id: int):
        """The leaderboard as a DataFrame: rank, key, one column per varied field, mean, std, n, runs."""
        import pandas as pd

        rows = self.sweep_info(sweep_id)["leaderboard"]
        return pd.DataFrame([{"rank": r["rank"], "key": r["key"], **r["params"], **r} for r in rows]).drop(
            columns=["params"], errors="ignore"
        )

    def cancel_sweep(self, sweep_id: int) -> dict:
        return self._call("POST", f"/api/sweeps/{sweep_id}/cancel")

    def promote(self, sweep_id: int, top_k: int = 3, **fields: Any) -> dict:
        """Launch the best `top_k` configurations at the next tier (fields: tier, seeds, parallel, preset, overrides)."""
        return self._call("POST", f"/api/sweeps/{sweep_id}/promote", json={"top_k": top_k, **fields})

    def group_stats(
        self, key: str, group: str | None = None, runs: list[int] | None = None, align: str = "common"
    ):
        """Mean and std over a seed group (or runs) at every aligned step, exact: DataFrame step, mean, std, n."""
        import pandas as pd

        params = {"key": key, "align": align, "group": group, "runs": ",".join(map(str, runs or [])) or None}
        out = self._call("GET", "/api/aggregate", params={k: v for k, v in params.items() if v is not None})
        return pd.DataFrame({"step": out["steps"], "mean": out["mean"], "std": out["std"], "n": out["n"]})

    def close(self) -> None:
        self.http.close()
