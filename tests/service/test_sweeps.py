"""Sweeps: validation, the parallel limit, early stop, leaderboard and group numbers against numpy, promotion with
lineage (real DB and Redis through the API), and a small debug grid end to end through the real queue."""

from __future__ import annotations

import time

import numpy as np
import pytest

from aime_core import cli
from aime_core.client import Client

pytestmark = [pytest.mark.redis]


def _base(tmp_path) -> dict:
    data = tmp_path / "data" / "datasets" / "data.hdf5"  # in the service's data directory (API paths are confined)
    data.parent.mkdir(parents=True, exist_ok=True)
    data.touch()  # the runs are started by hand below; the file only has to exist so none waits for data
    return {"kind": "train", "tier": 1, "preset": "debug", "overrides": {"data_path": str(data)}}


def _start(client, run_id: int) -> None:
    r = client.post(f"/api/runs/{run_id}/start", json={"host": "test", "pid": 1}, headers=client.h)
    assert r.status_code == 200, r.text


def _points(client, run_id: int, key: str, values: dict[int, float | str]) -> None:
    pts = [{"key": key, "step": s, "value": v} for s, v in values.items()]
    r = client.post(f"/api/runs/{run_id}/metrics", json={"points": pts}, headers=client.h)
    assert r.status_code == 200, r.text


def test_validation_names_field_and_configuration(client, tmp_path):
    base = _base(tmp_path)
    cases = [
        ({"grid": {"nope": [1]}}, "nope", "unknown field"),
        ({"grid": {"seed": [1, 2]}}, "seed", "seeds"),
        ({"grid": {"lr": []}}, "lr", "non-empty"),
        ({"grid": {"latent_dim": [4, 0]}}, "latent_dim", None),  # the second configuration is invalid
        ({"random": {"lr": {"loguniform": [0, 1e-3]}, "count": 2}}, "lr", "0 < low"),
        ({"random": {"lr": {"normal": [0, 1]}, "count": 2}}, "lr", "choice, uniform, loguniform"),
        ({"random": {"lr": {"uniform": [1e-4, 1e-3]}}}, "count", "count"),
        ({}, "grid", "empty"),
        ({"grid": {"lr": [1e-3]}, "seeds": []}, "seeds", "non-empty"),
    ]
    for extra, field, text in cases:
        r = client.post("/api/sweeps", json={"base": base, **extra}, headers=client.h)
        assert r.status_code == 422, (extra, r.text)
        detail = r.json()["detail"]
        assert detail["field"] == field, (extra, detail)
        if text:
            assert text in detail["message"], (extra, detail)
    r = client.post("/api/sweeps", json={"base": base, "grid": {"latent_dim": [4, 0]}}, headers=client.h)
    assert r.json()["detail"]["config"] == "c1" and r.json()["detail"]["params"] == {"latent_dim": 0}
    assert client.get("/api/runs").json()["total"] == 0  # nothing was created or queued
    assert client.post("/api/sweeps", json={"base": base, "grid": {"lr": [1e-3]}}).status_code == 401


def test_random_space_is_seeded_and_within_bounds(client, tmp_path):
    space = {
        "lr": {"loguniform": [1e-4, 1e-3]},
        "latent_dim": {"choice": [4, 8]},
        "kl_beta": {"uniform": [0.5, 1]},
    }
    body = {"base": _base(tmp_path), "random": {**space, "count": 4}, "sweep_seed": 7, "parallel": 1}
    a = client.post("/api/sweeps", json=body, headers=client.h).json()
    b = client.post("/api/sweeps", json=body, headers=client.h).json()
    params = [c["params"] for c in a["configs"]]
    assert len(params) == 4 and params == [c["params"] for c in b["configs"]]  # same sweep seed, same draws
    assert all(
        1e-4 <= p["lr"] <= 1e-3 and p["latent_dim"] in (4, 8) and 0.5 <= p["kl_beta"] <= 1 for p in params
    )
    run = client.get(f"/api/runs/{a['runs'][2]['id']}").json()
    assert run["config"]["lr"] == params[2]["lr"] and run["config"]["latent_dim"] == params[2]["latent_dim"]
    assert a["counts"] == {"queued": 4, "held": 3}  # parallel 1: one queued, three held


def test_parallel_limit_early_stop_leaderboard_and_promotion(client, tmp_path):
    lrs = [1e-3, 5e-4, 2e-4, 1e-4]
    body = {"base": _base(tmp_path), "grid": {"lr": lrs}, "seeds": [0], "parallel": 3}
    body["early_stop"] = {"k": 3.0, "patience": 3}
    sweep = client.post("/api/sweeps", json=body, headers=client.h).json()
    sid = sweep["id"]
    runs = {r["sweep_config"]: r for r in sweep["runs"]}
    assert [runs[f"c{i}"]["held"] for i in range(4)] == [False, False, False, True]
    r0, r1, r2, r3 = (runs[f"c{i}"]["id"] for i in range(4))
    assert client.get(f"/api/runs/{r3}").json()["celery_task_id"] is None  # held: not in the queue yet
    for rid in (r0, r1, r2):
        _start(client, rid)

    # Loss: r2 sits at 50x the others for 3 logged steps -> stopped early as divergent.
    _points(client, r0, "loss", {1: 1.0, 2: 0.9, 3: 0.8})
    _points(client, r1, "loss", {1: 1.1, 2: 1.0, 3: 0.9})
    _points(client, r2, "loss", {1: 50.0, 2: 50.0})
    assert (
        client.get(f"/api/runs/{r2}").json()["stop_reason"] is None
    )  # patience 3: two points are not enough
    _points(client, r2, "loss", {3: 50.0})
    stopped = client.get(f"/api/runs/{r2}").json()
    assert stopped["stop_reason"] == "divergence: loss 50 > 3 x sweep median 0.9 at step 3 for 3 points"
    assert stopped["cancel_requested"] is True
    alerts = client.get(f"/api/runs/{r2}/alerts").json()
    assert [(a["kind"], a["key"], a["step"]) for a in alerts] == [("divergence", "early_stop", 3)]
    assert client.get(f"/api/runs/{r0}").json()["stop_reason"] is None
    hb = client.post(f"/api/runs/{r2}/heartbeat", headers=client.h).json()
    assert hb["stop"] is True  # the worker learns it at its next heartbeat
    assert (
        client.post(f"/api/runs/{r2}/finish", json={"status": "cancelled"}, headers=client.h).status_code
        == 200
    )
    after = client.get(f"/api/runs/{r3}").json()
    assert after["held"] is False and after["celery_task_id"]  # a slot freed: the held run was queued

    # A run that reports a NaN alert is stopped early too.
    _start(client, r3)
    ev = {"kind": "alert", "payload": {"kind": "nan", "key": "loss/recon", "step": 2, "message": "recon=nan"}}
    client.post(f"/api/runs/{r3}/events", json={"events": [ev]}, headers=client.h)
    assert client.get(f"/api/runs/{r3}").json()["stop_reason"] == "nan: recon=nan"
    assert "nan" in [
        a["kind"] for a in client.get(f"/api/runs/{r3}/alerts").json() if a["key"] == "early_stop"
    ]

    # Leaderboard: the metric at each run's last stored step; stopped runs are left out.
    _points(client, r0, "eval/rollout_mse", {3: 0.30, 6: 0.20})
    _points(client, r1, "eval/rollout_mse", {3: 0.25, 6: 0.10})
    _points(client, r2, "eval/rollout_mse", {3: 0.01})  # best value, but stopped early
    board = client.get(f"/api/sweeps/{sid}").json()["leaderboard"]
    assert [(b["key"], b["rank"]) for b in board] == [("c1", 1), ("c0", 2), ("c2", None), ("c3", None)]
    assert board[0]["mean"] == pytest.approx(0.10) and board[0]["std"] == 0.0 and board[2]["stopped"] == 1

    # Promotion: the best 2 at tier 2 with the tier-2 preset for everything not varied (no extra preset).
    promo = {"top_k": 2, "seeds": [3, 4], "preset": None}
    child = client.post(f"/api/sweeps/{sid}/promote", json=promo, headers=client.h)
    assert child.status_code == 201, child.text
    child = child.json()
    assert child["tier"] == 2 and child["parent_id"] == sid
    assert [(p["config"], p["rank"]) for p in child["promotion"]["picks"]] == [("c1", 1), ("c0", 2)]
    assert len(child["runs"]) == 4 and sorted(r["seed"] for r in child["runs"]) == [3, 3, 4, 4]
    for r in child["runs"]:
        full = client.get(f"/api/runs/{r['id']}").json()
        want = {"c0": (lrs[1], r1), "c1": (lrs[0], r0)}[r["sweep_config"]]
        assert full["config"]["lr"] == want[0] and full["tier"] == 2
        assert (
            full["config"]["latent_dim"] == 36 and full["config"]["domain"] == "reacher"
        )  # the tier-2 preset
        assert full["lineage"]["sweep_id"] == sid and full["lineage"]["runs"] == [want[1]]
    parent = client.get(f"/api/sweeps/{sid}").json()
    assert parent["children"][0]["id"] == child["id"]

    # From tier 2 the best goes to tier 3 with seeds 1-5.
    for r in child["runs"]:
        _points(client, r["id"], "eval/rollout_mse", {10: 0.5 if r["sweep_config"] == "c0" else 0.4})
    grand = client.post(f"/api/sweeps/{child['id']}/promote", json={"top_k": 1}, headers=client.h).json()
    assert grand["tier"] == 3 and sorted(r["seed"] for r in grand["runs"]) == [1, 2, 3, 4, 5]
    assert grand["promotion"]["picks"][0]["config"] == "c1"
    assert client.get(f"/api/runs/{grand['runs'][0]['id']}").json()["config"]["lr"] == lrs[0]
    assert client.post(f"/api/sweeps/{grand['id']}/promote", json={}, headers=client.h).status_code == 422

    cancelled = client.post(f"/api/sweeps/{grand['id']}/cancel", headers=client.h).json()
    assert cancelled["status"] == "cancelled" and cancelled["counts"] == {"cancelled": 5, "held": 0}


def test_a_retried_sweep_run_replaces_its_parent_in_the_leaderboard_and_group(client, tmp_path):
    body = {"base": _base(tmp_path), "grid": {"lr": [1e-3, 5e-4]}, "seeds": [0], "parallel": 2}
    sweep = client.post("/api/sweeps", json=body, headers=client.h).json()
    sid = sweep["id"]
    r0, r1 = (r["id"] for r in sorted(sweep["runs"], key=lambda r: r["sweep_config"]))
    for rid, value in ((r0, 0.2), (r1, 0.5)):
        _start(client, rid)
        _points(client, rid, "eval/rollout_mse", {5: value})
        done = client.post(f"/api/runs/{rid}/finish", json={"status": "succeeded"}, headers=client.h)
        assert done.status_code == 200, done.text
    assert client.get(f"/api/sweeps/{sid}").json()["status"] == "finished"

    retry = client.post(f"/api/runs/{r1}/retry", headers=client.h)
    assert retry.status_code == 201, retry.text
    child = retry.json()
    parent = client.get(f"/api/runs/{r1}").json()
    assert (child["sweep_id"], child["sweep_config"], child["parent_id"]) == (sid, "c1", r1)
    assert child["group_id"] == parent["group_id"] == f"sweep{sid}-c1"
    detail = client.get(f"/api/sweeps/{sid}").json()
    assert detail["status"] == "running"  # it has a run again
    c1 = next(b for b in detail["leaderboard"] if b["key"] == "c1")
    assert c1["replaced"] == [r1] and c1["n"] == 0 and c1["rank"] is None  # the old 0.5 no longer counts

    _start(client, child["id"])
    _points(client, child["id"], "eval/rollout_mse", {5: 0.05})
    client.post(f"/api/runs/{child['id']}/finish", json={"status": "succeeded"}, headers=client.h)
    detail = client.get(f"/api/sweeps/{sid}").json()
    assert detail["status"] == "finished"
    board = detail["leaderboard"]
    assert [(b["key"], b["rank"], b["mean"]) for b in board] == [("c1", 1, 0.05), ("c0", 2, 0.2)]
    assert board[0]["values"] == {str(child["id"]): 0.05}
    agg = client.get("/api/aggregate", params={"group": f"sweep{sid}-c1", "key": "eval/rollout_mse"}).json()
    assert agg["runs"] == [child["id"]] and agg["mean"] == [0.05]


def test_seed_group_mean_std_on_aligned_steps(client, tmp_path):
    body = {**_base(tmp_path), "seeds": [0, 1, 2]}
    runs = client.post("/api/runs", json=body, headers=client.h).json()
    gid = runs[0]["group_id"]
    assert gid and all(r["group_id"] == gid for r in runs)
    rng = np.random.default_rng(0)
    series = {r["id"]: {s: float(rng.normal()) for s in range(1, 2001)} for r in runs}
    del series[runs[2]["id"]][1500]  # one run misses a step: not aligned there
    series[runs[1]["id"]][7] = "nan"
    for rid, vals in series.items():
        _points(client, rid, "loss", vals)
    agg = client.get("/api/aggregate", params={"group": gid, "key": "loss"}).json()
    ids = [r["id"] for r in runs]
    common = [s for s in range(1, 2001) if s not in (7, 1500)]
    assert agg["steps"] == common and agg["runs"] == ids
    arr = np.array([[series[i][s] for i in ids] for s in common], dtype=np.float64)
    np.testing.assert_allclose(agg["mean"], arr.mean(1), rtol=1e-12)
    np.testing.assert_allclose(agg["std"], arr.std(1), rtol=1e-9, atol=1e-12)
    every = client.get(
        "/api/aggregate", params={"runs": ",".join(map(str, ids)), "key": "loss", "align": "all"}
    )
    every = every.json()
    assert len(every["steps"]) == 2000 and every["n"][6] == 2 and every["n"][1499] == 2
    assert client.get("/api/aggregate", params={"key": "loss"}).status_code == 422


@pytest.mark.slow
def test_debug_grid_through_the_queue_then_a_nan_run_is_stopped_early(live, capsys):
    live.start_worker()
    client = Client(live.url)
    base = {"kind": "train", "tier": 1, "preset": "debug", "synthetic": True, "overrides": {"num_epochs": 1}}
    argv = ["sweep", "--url", live.url, "create", "--tier", "1", "--preset", "debug", "--synthetic"]
    argv += ["--set", "num_epochs=1", "--grid", "latent_dim=4,8", "--seeds", "0,1", "--parallel", "2"]
    assert cli.main(argv) == 0  # `aime sweep create` (2 configurations x 2 seeds of the debug preset)
    assert "2 configurations x 2 seeds" in capsys.readouterr().out
    sid, most_active = client.sweeps()[0]["id"], 0
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        s = client._call("GET", f"/api/sweeps/{sid}")
        active = [
            r for r in s["runs"] if r["status"] == "running" or (r["status"] == "queued" and not r["held"])
        ]
        most_active = max(most_active, len(active))
        if s["status"] == "finished":
            break
        time.sleep(0.3)
    assert s["status"] == "finished", live.logs()
    assert most_active <= 2 and all(r["status"] == "succeeded" for r in s["runs"]), s["runs"]

    # The leaderboard against numpy over the stored points (the value at each run's last evaluation).
    want = {}
    for c in s["configs"]:
        vals = []
        for r in (r for r in s["runs"] if r["sweep_config"] == c["key"]):
            pts = client.metric(r["id"], "eval/rollout_mse")
            vals.append(pts.sort_values("step")["value"].iloc[-1])
        want[c["key"]] = (np.mean(vals), np.std(vals))
    board = s["leaderboard"]
    assert [b["key"] for b in board] == sorted(want, key=lambda k: want[k][0])
    for b in board:
        assert b["n"] == 2 and b["mean"] == pytest.approx(want[b["key"]][0], rel=1e-12)
        assert b["std"] == pytest.approx(want[b["key"]][1], rel=1e-9, abs=1e-15)
    assert cli.main(["sweep", "--url", live.url, "show", str(sid)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[2].split()[:3] == ["rank", "config", "latent_dim"] and table[3].split()[1] == board[0]["key"]
    group = board[0]["runs"]
    agg = client._call("GET", "/api/aggregate", params={"runs": ",".join(map(str, group)), "key": "loss"})
    a, b = (client.metric(i, "loss").set_index("step")["value"] for i in group)
    steps = sorted(set(a.index) & set(b.index))
    assert agg["steps"] == steps and len(steps) >= 3
    np.testing.assert_allclose(agg["mean"], (a[steps] + b[steps]) / 2, rtol=1e-12)

    # A configuration that goes NaN at step 2 is stopped early: failed, with a reason and a `nan` alert.
    nan_base = {**base, "overrides": {"num_epochs": 1, "inject_nan_step": 2}}
    bad = client._call("POST", "/api/sweeps", json={"base": nan_base, "grid": {"lr": [1e-3]}, "seeds": [0]})
    run = client.wait(bad["runs"][0]["id"], timeout=120)
    assert run["status"] == "failed" and run["stop_reason"].startswith("nan: "), run
    kinds = {(a["kind"], a["key"]) for a in client._call("GET", f"/api/runs/{run['id']}/alerts")}
    assert ("nan", "early_stop") in kinds
    assert client._call("GET", f"/api/sweeps/{bad['id']}")["status"] == "finished"


def test_cli_flags_become_the_request_body(tmp_path):
    from aime_core.commands import sweep as cmd

    spec = tmp_path / "spec.json"
    spec.write_text('{"base": {"tier": 2, "overrides": {"amp": false}}, "seeds": [7]}')
    parser = cli.build_parser()
    args = parser.parse_args(
        ["sweep", "create", "--spec", str(spec), "--preset", "debug", "--set", "num_epochs=1"]
        + ["--grid", "use_3d_conv=false,true", "--random", "lr=loguniform:1e-4:1e-3"]
        + ["--random", "latent_dim=choice:8,16", "--count", "4", "--sweep-seed", "3", "--k", "5"]
    )
    body = cmd.build_body(args)
    assert body["base"] == {
        "kind": "train",
        "tier": 2,
        "preset": "debug",
        "overrides": {"amp": False, "num_epochs": 1},
    }
    assert body["grid"] == {"use_3d_conv": [False, True]} and body["seeds"] == [7] and body["sweep_seed"] == 3
    assert body["random"] == {
        "lr": {"loguniform": [1e-4, 1e-3]},
        "latent_dim": {"choice": [8, 16]},
        "count": 4,
    }
    assert body["early_stop"] == {"k": 5.0}
    bad = parser.parse_args(["sweep", "create", "--random", "lr=normal:0:1"])
    with pytest.raises(cmd.UsageError, match="uniform|loguniform|int"):
        cmd.build_body(bad)
    assert cli.main(["sweep", "create", "--seeds", "a,b"]) == 2
