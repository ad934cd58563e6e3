"""The sweeps pages in headless Chromium: list, leaderboard (mean ± std), parallel coordinates, promotion, lineage."""

from __future__ import annotations

import time

import numpy as np
import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _fmt4(x: float) -> str:
    """ui.js fmtNum for the small numbers here: 4 significant digits."""
    return f"{x:.4g}" if abs(x) >= 1e-3 else f"{x:.3e}"


def test_sweep_page_leaderboard_plot_promotion_and_lineage(page, stack, shot):
    body = {
        "base": {
            "kind": "train",
            "tier": 1,
            "preset": "debug",
            "synthetic": True,
            "overrides": {"num_epochs": 1},
        },
        "grid": {"latent_dim": [4, 8]},
        "seeds": [0, 1],
        "parallel": 2,
        "name": "browser sweep",
    }
    r = stack.http.post("/api/sweeps", json=body)
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    deadline = time.monotonic() + 300
    while (s := stack.http.get(f"/api/sweeps/{sid}").json())["status"] == "running":
        assert time.monotonic() < deadline, s["counts"]
        time.sleep(1)
    assert all(x["status"] == "succeeded" for x in s["runs"]), s["runs"]

    page.goto("/sweeps")
    page.locator(f"#sweeps a[href='/sweeps/{sid}']").click()
    page.wait_for_url(f"**/sweeps/{sid}")
    rows = page.locator("#leaderboard tbody tr")
    rows.first.wait_for()
    assert rows.count() == 2
    best = s["leaderboard"][0]
    first = rows.first.locator("td").all_inner_texts()
    assert first[0] == "1" and first[1] == best["key"] and first[2] == str(best["params"]["latent_dim"])
    vals = list(best["values"].values())
    assert best["mean"] == pytest.approx(np.mean(vals)) and best["std"] == pytest.approx(np.std(vals))
    mean, std = (float(x) for x in first[3].split(" ± "))
    assert mean == pytest.approx(best["mean"], rel=1e-3) and std == pytest.approx(
        best["std"], rel=1e-3, abs=1e-6
    )
    assert first[4] == "2 of 2"
    page.wait_for_function("document.getElementById('parcoords')?.data?.[0]?.type === 'parcoords'")
    dims = page.evaluate("document.getElementById('parcoords').data[0].dimensions.map((d) => d.label)")
    assert dims == ["latent_dim", "eval/rollout_mse (mean)"]
    assert page.locator("#sweep-runs tbody tr").count() == 4
    # Group curves: mean ± std of every configuration's seeds from the server's exact aggregate.
    page.wait_for_function("(document.getElementById('group-curves')?.data || []).length === 6")
    mean_y = page.evaluate("document.getElementById('group-curves').data[2].y")
    agg = stack.http.get("/api/aggregate", params={"group": f"sweep{sid}-c0", "key": "loss"}).json()
    assert mean_y == pytest.approx(agg["mean"], rel=1e-12) and len(mean_y) >= 3
    shot("sweep-page")

    # Promote the best one to tier 2 with one seed from the page; the new sweep shows where it came from.
    page.fill("#promote-k", "1")
    page.fill("#promote-seeds", "5")
    page.click("#promote-btn")
    page.wait_for_url(lambda url: url.rstrip("/").split("/")[-1] not in ("", str(sid)) and "/sweeps/" in url)
    child_id = int(page.url.rstrip("/").split("/")[-1])
    stack.http.post(f"/api/sweeps/{child_id}/cancel")  # keep the shared worker free for the other tests
    child = stack.http.get(f"/api/sweeps/{child_id}").json()
    assert child["tier"] == 2 and child["parent_id"] == sid and [x["seed"] for x in child["runs"]] == [5]
    page.reload()
    lineage = page.locator("#sweep-lineage")
    assert f"sweep {sid}" in lineage.inner_text() and f"c0 ← {best['key']}" in lineage.inner_text()

    # The run page: the promoted run names its parent sweep, configuration and runs.
    page.goto(f"/runs/{child['runs'][0]['id']}")
    box = page.locator("#run-lineage")
    text = box.inner_text()
    assert f"sweep {child_id}" in text and f"sweep {sid} configuration {best['key']} (rank 1" in text
    assert box.locator(f"a[href='/runs/{best['runs'][0]}']").count() == 1
    page.goto(f"/sweeps/{sid}")
    assert f"Promoted to sweep {child_id}" in page.locator("#sweep-lineage").inner_text()
    shot("sweep-lineage")

    # Retrying one seed of a configuration: the new run takes its parent's place on the page and the leaderboard.
    old = s["runs"][0]
    retry = stack.http.post(f"/api/runs/{old['id']}/retry")
    assert retry.status_code == 201, retry.text
    new = retry.json()["id"]
    page.reload()
    note = (
        page.locator("#sweep-runs tbody tr")
        .filter(has=page.locator(f"td:first-child a[href='/runs/{new}']"))
        .first
    )
    note.wait_for()
    assert f"retry/resume of run {old['id']}" in note.inner_text()
    replaced = page.locator("#sweep-runs tbody tr").filter(has_text=f"replaced by run {new}")
    assert replaced.count() == 1 and replaced.locator("td").first.inner_text() == str(old["id"])
    deadline = time.monotonic() + 120
    while stack.http.get(f"/api/runs/{new}").json()["status"] not in ("succeeded", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.5)
    row = next(
        b
        for b in stack.http.get(f"/api/sweeps/{sid}").json()["leaderboard"]
        if b["key"] == old["sweep_config"]
    )
    assert (
        row["replaced"] == [old["id"]] and str(new) in row["values"] and str(old["id"]) not in row["values"]
    )
    page.reload()
    counted = page.locator(f"#leaderboard tbody tr[data-config='{old['sweep_config']}'] td").nth(4)
    counted.wait_for()
    assert counted.inner_text() == "2 of 2"
    shot("sweep-retried")
