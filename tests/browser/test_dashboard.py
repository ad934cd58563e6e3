"""The dashboard in headless Chromium against a real `aime up` (API, embedded Redis, SQLite, Celery workers)."""

from __future__ import annotations

import re
import time

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# Points in the trace `name` of the plotly chart `id` (0 when the chart or trace is not there yet).
TRACE_LEN = (
    "(id, name) => ((document.getElementById(id)?.data || []).find((t) => t.name === name)?.x || []).length"
)


def trace_len(page, chart_id: str, name: str) -> int:
    return page.evaluate(f"([id, name]) => ({TRACE_LEN})(id, name)", [chart_id, name])


@pytest.fixture(scope="module")
def seed_pair(stack):
    """Two debug runs of one config (seeds 0 and 1), launched together: one trains while the other waits."""
    return stack.launch(seeds=[0, 1])


@pytest.fixture(scope="module")
def two_seeds(stack, seed_pair):
    """The seed pair, finished: for the video, runs list and compare pages."""
    return [stack.wait_status(r["id"]) for r in seed_pair]


def test_empty_state_tells_a_newcomer_what_to_do(page, stack, shot):
    if stack.http.get("/api/runs").json()["total"]:
        pytest.skip("runs exist already; the empty state only shows on a fresh data directory")
    page.goto("/")
    empty = page.locator(".empty")
    empty.wait_for()
    assert "No runs yet" in empty.inner_text()
    link = empty.locator("a.btn.primary")
    assert link.get_attribute("href").startswith("/launch?kind=train&tier=1&preset=debug&synthetic=1")
    shot("runs-empty")
    # A reload that finds the list still empty (the live stream's `ready` triggers one) keeps the focus where it is.
    link.focus()
    page.wait_for_timeout(1500)  # past the reload that follows the stream's `ready`
    assert page.evaluate("document.activeElement.textContent").startswith("Launch a synthetic")
    page.goto("/")
    empty.wait_for()
    # Keyboard only: the skip link comes first, then the way to a first run is a few Tabs away.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"
    for _ in range(25):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.textContent").startswith("Launch a synthetic"):
            break
    page.keyboard.press("Enter")
    page.wait_for_url("**/launch?kind=train&tier=1&preset=debug&synthetic=1")
    page.goto("/datasets")
    assert "No dataset yet" in page.locator(".empty").inner_text()
    shot("datasets-empty")


def test_queue_page_lists_workers_active_job_and_waiting_runs(page, stack, shot):
    # A pair of its own whose first run trains far longer than this test looks (then both are cancelled), so the
    # second is surely still waiting while the page is checked, however fast the machine is.
    long = {"num_epochs": 500, "eval_every": 1000, "save_every": 1000}
    first, second = (r["id"] for r in stack.launch(seeds=[0, 1], overrides=long, tags=["queue-page"]))
    try:
        page.goto("/queue")
        rows = page.locator("#workers tbody tr")
        rows.first.wait_for()
        workers = {r.get_attribute("data-worker"): r for r in rows.all()}
        assert sorted(k.split("-")[0] for k in workers) == ["collect", "synthetic", "train"], list(workers)
        train = next(r for k, r in workers.items() if k.startswith("train"))
        assert "none (CPU)" in train.inner_text() and "ago" in train.inner_text()
        # Live: the train worker picks the first seed while the second waits at position 1 (after the shared
        # dataset is collected; the page follows without a reload).
        train_row = page.locator('#workers tr[data-worker^="train"]')
        train_row.locator(f'a[href="/runs/{first}"]').wait_for(timeout=120_000)
        waiting = page.locator('[data-queue="train"] tbody tr')
        waiting.first.wait_for()
        assert waiting.first.locator("td").first.inner_text() == "1"
        assert waiting.first.locator(f'a[href="/runs/{second}"]').count() == 1
        shot("queue")
    finally:
        for rid in (second, first):
            stack.http.post(f"/api/runs/{rid}/cancel")
        stack.wait_status(first, ("cancelled", "succeeded"), timeout=120)


def test_launch_from_the_form_and_watch_the_loss_chart_grow_live(page, stack, shot):
    page.goto("/launch?kind=train&tier=1&preset=debug&synthetic=1")
    summary = page.locator("#resolved")
    page.wait_for_function("document.getElementById('resolved')?.textContent.includes('bouncing_ball')")
    # A bad override gets the API's message beside its field, and blocks the launch.
    # The tier shows its preset's values (tier 2 without the debug preset: 84 px, K = 15).
    page.select_option("#f-preset", "")
    page.select_option("#f-tier", "2")
    page.locator('#preset-values tr[data-field="img_size"] td.num', has_text="84").wait_for()
    assert page.locator('#preset-values tr[data-field="max_components"] td.num').inner_text() == "15"
    page.select_option("#f-tier", "1")
    page.select_option("#f-preset", "debug")
    page.locator('#preset-values tr[data-field="img_size"] td.num', has_text="32").wait_for()
    # Seeds as a list: one run each.
    page.fill("#f-seeds", "0, 1")
    page.locator("#submit", has_text="Launch 2 runs").wait_for()
    page.fill("#f-seeds", "0")
    page.locator("#submit", has_text="Launch").filter(has_not_text="runs").wait_for()
    page.locator("details summary").click()
    page.fill("#f-batch_size", "-3")
    page.locator("#err-batch_size").filter(has_text="positive").wait_for()
    assert page.locator("#submit").is_disabled()
    page.errors.clear()  # the 422 of that resolve call is logged by the browser as a failed request
    # Four epochs (five steps each in the debug preset): long enough to watch it grow.
    page.fill("#f-batch_size", "4")
    page.fill("#f-num_epochs", "4")
    page.fill("#f-eval_every", "2")  # fewer evaluations and checkpoints: the test is about the curves
    page.fill("#f-save_every", "2")
    page.wait_for_function("document.getElementById('resolved')?.textContent.includes('\"num_epochs\": 4')")
    assert page.locator("#err-batch_size").inner_text() == ""
    assert '"synthetic": true' in summary.inner_text()
    shot("launch")
    page.click("#submit")
    page.wait_for_url(re.compile(r"/runs/\d+$"))
    run_id = int(page.url.rsplit("/", 1)[1])
    run = stack.run(run_id)
    assert (
        run["config"]["num_epochs"] == 4
        and run["config"]["batch_size"] == 4
        and run["config"]["eval_every"] == 2
    )

    # The chart only ever gets new points from the event stream (it never polls): growth is live.
    seen = []
    deadline = time.monotonic() + 300  # it may queue behind the seed pair on the one training worker
    while time.monotonic() < deadline:
        n = trace_len(page, "chart-losses", "loss")
        if not seen or n != seen[-1]:
            seen.append(n)
        if stack.run(run_id)["status"] in ("succeeded", "failed"):
            break
        time.sleep(0.25)
    final = stack.wait_status(run_id)
    page.locator(".badge.st-ok").first.wait_for()
    steps = final["progress"]["total"]
    page.wait_for_function(f"({TRACE_LEN})('chart-losses', 'loss') === {steps}")
    assert final["progress"]["epoch"] == 4 and steps >= 8, final["progress"]
    grown = [n for n in seen if 0 < n < steps]
    assert len(grown) >= 2, f"loss points seen over time: {seen}"
    assert seen == sorted(seen)
    shot("run-live")


def test_nan_run_shows_banner_and_marker(page, stack, shot):
    (run,) = stack.launch(overrides={"inject_nan_step": 3, "inject_nan_term": "kl_z", "nan_policy": "skip"})
    page.goto(f"/runs/{run['id']}")  # opened before the NaN: the alert must arrive live
    banner = page.locator("#nan-banner .banner.nan")
    banner.wait_for(timeout=120_000)
    text = banner.inner_text()
    assert "step 3" in text and "kl_z" in text, text
    assert "loss terms: kl_z" in text and "non-finite gradients in:" in text, text
    page.wait_for_function(
        "(document.getElementById('chart-losses')?.data || []).some((t) => t.name === 'NaN/Inf' && t.x.includes(3))"
    )
    stack.wait_status(run["id"])
    # One non-finite step is reported once: one banner row, and the log tail counts repeats instead of repeating.
    page.reload()
    page.locator("#nan-banner .banner.nan").wait_for()
    assert page.locator("#nan-banner .banner.nan .row").count() == 1
    page.locator("#log-tail div", has_text="non-finite").first.wait_for()
    assert page.locator("#log-tail div", has_text="non-finite").count() == 1
    shot("run-nan")
    page.locator("#nan-banner button", has_text="Acknowledge").first.click()
    page.wait_for_function("!document.querySelector('#nan-banner .banner.nan')")
    alerts = stack.http.get(f"/api/runs/{run['id']}/alerts").json()
    assert alerts and all(a["acknowledged"] for a in alerts)


def test_rollout_video_plays_and_follows_the_chosen_evaluation(page, stack, shot, two_seeds):
    run = two_seeds[0]
    page.goto(f"/runs/{run['id']}")
    video = page.locator("#rollout-video")
    page.wait_for_function("document.getElementById('rollout-video')?.src.includes('/api/artifacts/')")
    options = page.locator("#video-step option")
    assert options.count() == run["config"]["num_epochs"]  # eval_every=1 in the debug preset
    page.evaluate("document.getElementById('rollout-video').play()")
    page.wait_for_function("document.getElementById('rollout-video')?.currentTime > 0.1")
    t1 = video.evaluate("v => v.currentTime")
    page.wait_for_timeout(400)
    t2 = video.evaluate("v => v.currentTime")
    assert t2 != t1 and not video.evaluate("v => v.paused")
    first_src = video.evaluate("v => v.src")
    page.select_option("#video-step", "0")
    page.wait_for_function(f"document.getElementById('rollout-video').src !== {first_src!r}")
    assert page.locator("#eval-step").input_value() == "0"  # the evaluation panel follows the video
    links = page.locator("#artifacts a", has_text="download")
    assert links.count() >= 3
    ckpt = page.locator("#artifacts tr", has_text="last.pt").locator("a").get_attribute("href")
    body = stack.http.get(ckpt).content
    assert len(body) > 1000 and body[:2] == b"PK"  # torch.save writes a zip archive
    part = stack.http.get(video.evaluate("v => v.src"), headers={"Range": "bytes=0-99"})
    assert part.status_code == 206 and len(part.content) == 100  # the player can seek
    shot("run-video")


def test_zoom_fetches_finer_data_for_the_visible_steps(page, stack, shot, two_seeds):
    run = two_seeds[1]
    page.goto(f"/runs/{run['id']}")
    page.wait_for_function(f"({TRACE_LEN})('chart-losses', 'loss') === {run['progress']['total']}")
    with page.expect_request(
        lambda r: "/metrics/loss?" in r.url and "step_min=3" in r.url and "step_max=7" in r.url
    ):
        page.evaluate("Plotly.relayout('chart-losses', {'xaxis.range[0]': 3, 'xaxis.range[1]': 7})")
    page.wait_for_function(f"({TRACE_LEN})('chart-losses', 'loss') === 5")
    xs = page.evaluate("document.getElementById('chart-losses').data.find((t) => t.name === 'loss').x")
    assert xs == [3, 4, 5, 6, 7]
    # Double-click resets: the whole run again.
    page.evaluate("Plotly.relayout('chart-losses', {'xaxis.autorange': true})")
    page.wait_for_function(f"({TRACE_LEN})('chart-losses', 'loss') === {run['progress']['total']}")


def test_runs_page_selects_runs_for_comparison(page, stack, shot, two_seeds):
    page.goto("/")
    ids = [r["id"] for r in two_seeds]
    for i in ids:
        row = page.locator(f'#runs-table tr[data-run-id="{i}"]')
        row.wait_for()
        assert "succeeded" in row.inner_text()
        row.locator("input[type=checkbox]").check()
    # Config fields as columns, chosen by the user and kept in the browser.
    page.click("#column-picker summary")
    page.locator('#column-picker input[data-column="lr"]').check()
    page.locator('#runs-table th[data-column="lr"]').wait_for()
    lr = two_seeds[0]["config"]["lr"]
    cell = page.locator(f'#runs-table tr[data-run-id="{ids[0]}"] td.config-col').first
    assert float(cell.inner_text()) == pytest.approx(lr)
    page.click("#column-picker summary")  # close
    shot("runs")
    page.select_option('select[name="status"]', "failed")
    page.locator(".empty", has_text="No run matches").wait_for()
    page.select_option('select[name="status"]', "succeeded")
    page.locator(f'#runs-table tr[data-run-id="{ids[0]}"]').wait_for()
    page.reload()  # the chosen column stays; the selection does not
    page.locator('#runs-table th[data-column="lr"]').wait_for()
    for i in ids:
        page.locator(f'#runs-table tr[data-run-id="{i}"] input[type=checkbox]').check()
    page.click("text=Compare selected (2)")
    page.wait_for_url(re.compile(r"/compare\?runs="))
    assert sorted(int(x) for x in page.url.split("runs=")[1].split("&")[0].split(",")) == sorted(ids)


def compare_band(page) -> dict:
    """The compare chart's group traces by role (upper, lower, mean): their x and y."""
    return page.evaluate(
        """() => Object.fromEntries(document.getElementById('cmp-chart').data
        .filter((t) => t.meta?.band).map((t) => [t.meta.band, { x: t.x, y: t.y }]))"""
    )


def test_compare_overlays_two_runs_and_shows_the_diff(page, stack, shot, two_seeds):
    a, b = (r["id"] for r in two_seeds)
    page.goto(f"/compare?runs={a},{b}")
    page.wait_for_function("(document.getElementById('cmp-chart')?.data || []).length === 2")
    names = page.evaluate("document.getElementById('cmp-chart').data.map((t) => t.name)")
    assert any(f"#{a}" in n for n in names) and any(f"#{b}" in n for n in names)
    colors = page.evaluate("document.getElementById('cmp-chart').data.map((t) => t.line.color)")
    assert colors[0] != colors[1]
    diff_rows = page.locator("#config-diff tbody tr")
    assert [r.get_attribute("data-field") for r in diff_rows.all()] == ["seed"]
    assert page.locator('#config-diff tr[data-field="seed"] td').all_inner_texts()[1:] == ["0", "1"]
    # Fraction of the budget: both end at 1.0 so tiers of different length line up.
    page.select_option("#cmp-x", "fraction")
    page.wait_for_function(
        "document.getElementById('cmp-chart').layout.xaxis.title.text.includes('fraction')"
    )
    ends = page.evaluate("document.getElementById('cmp-chart').data.map((t) => t.x[t.x.length - 1])")
    assert ends == [1, 1]
    page.select_option("#cmp-x", "epoch")
    page.wait_for_function("document.getElementById('cmp-chart').layout.xaxis.title.text === 'epoch'")
    ends = page.evaluate("document.getElementById('cmp-chart').data.map((t) => t.x[t.x.length - 1])")
    assert ends == [two_seeds[0]["config"]["num_epochs"]] * 2
    page.select_option("#cmp-x", "wall")
    page.wait_for_function("document.getElementById('cmp-chart').layout.xaxis.title.text.includes('wall')")
    walls = page.evaluate(
        "document.getElementById('cmp-chart').data.map((t) => [t.x[0], t.x[t.x.length - 1]])"
    )
    assert all(w[0] == 0 and w[1] > 0 for w in walls), walls
    # Seed groups: the band is the server's exact aggregate over every stored point (not the sampled points),
    # placed on each x-axis mode the way the per-run curves are.
    page.check("#cmp-group")
    page.wait_for_function(
        "document.getElementById('cmp-chart').data.some((t) => (t.name || '').includes('n=2'))"
    )
    agg = stack.http.get("/api/aggregate", params={"runs": f"{a},{b}", "key": "loss"}).json()
    assert agg["runs"] == sorted([a, b]) and len(agg["steps"]) >= 3 and set(agg["n"]) == {2}
    assert max(agg["std"]) > 0  # two seeds really differ: the band has a width
    band = compare_band(page)
    assert band["mean"]["y"] == pytest.approx(agg["mean"], rel=1e-12)
    assert band["upper"]["y"] == pytest.approx(
        [m + s for m, s in zip(agg["mean"], agg["std"], strict=True)], rel=1e-12
    )
    assert band["lower"]["y"] == pytest.approx(
        [m - s for m, s in zip(agg["mean"], agg["std"], strict=True)], rel=1e-12
    )
    walls = band["mean"]["x"]
    assert walls[0] == 0 and walls[-1] > 0 and walls == sorted(walls), walls
    page.select_option("#cmp-x", "step")
    page.wait_for_function("document.getElementById('cmp-chart').layout.xaxis.title.text === 'step'")
    band = compare_band(page)
    assert band["mean"]["x"] == agg["steps"] and band["lower"]["x"] == agg["steps"]
    assert band["mean"]["y"] == pytest.approx(agg["mean"], rel=1e-12)
    page.select_option("#cmp-x", "fraction")
    page.wait_for_function(
        "document.getElementById('cmp-chart').layout.xaxis.title.text.includes('fraction')"
    )
    total = two_seeds[0]["progress"]["total"]
    assert compare_band(page)["mean"]["x"] == pytest.approx([s / total for s in agg["steps"]])
    page.select_option("#cmp-x", "epoch")
    page.wait_for_function("document.getElementById('cmp-chart').layout.xaxis.title.text === 'epoch'")
    assert compare_band(page)["mean"]["x"][-1] == two_seeds[0]["config"]["num_epochs"]
    assert page.locator("#final-metrics tbody tr").count() == 2
    cell = page.locator('#epoch-time-table tr[data-env="synthetic-bouncing_ball"] td').nth(2)
    cell.wait_for()
    assert "n=" in cell.inner_text()
    shot("compare")


def test_datasets_page_lists_the_collected_dataset(page, stack, shot, two_seeds):
    page.goto("/datasets")
    card = page.locator("#datasets .dataset").first
    card.wait_for()
    assert "synthetic-bouncing_ball" in card.inner_text()
    # The frame strip is a real image the API drew from the HDF5 file: 8 frames of one episode side by side.
    page.wait_for_function(
        "[...document.querySelectorAll('#datasets img.strip')].every((i) => i.complete && i.naturalWidth > 0)"
    )
    ds = stack.http.get("/api/datasets").json()[0]
    size = page.evaluate(
        "(() => { const i = document.querySelector('#datasets img.strip'); return [i.naturalWidth, i.naturalHeight]; })()"
    )
    tile = ds["img_size"] * 2  # 32 px frames are doubled
    assert size == [8 * (tile + 2) - 2, tile], size
    text = card.inner_text()
    assert f"{ds['episodes']}" in text and f"{ds['frames']}" in text and "KB" in text
    href = card.locator("a.train-on").get_attribute("href")
    assert href.startswith("/launch?kind=train") and "data_path=" in href and "synthetic=1" in href
    card.locator("a.train-on").click()
    page.wait_for_function("document.getElementById('resolved')?.textContent.includes('data_path')")
    resolved = page.locator("#resolved").inner_text()
    assert f'"data_path": "{ds["path"]}"' in resolved
    page.goto("/datasets")
    page.locator("#datasets .dataset").first.wait_for()
    page.locator("#conn.ok").wait_for()  # the live indicator: the page follows new datasets
    shot("datasets")


def test_runs_rows_update_live_then_cancel_and_resume(page, stack, shot, two_seeds):
    page.goto("/")
    page.locator("#runs-table").wait_for()
    # Long (it is cancelled): it must still be running when the cancel button is clicked, on any machine.
    (run,) = stack.launch(seed=2, overrides={"num_epochs": 500, "eval_every": 1000})
    row = page.locator(f'#runs-table tr[data-run-id="{run["id"]}"]')
    row.wait_for()  # the new run arrives through the event stream, without a reload
    page.locator(f'#runs-table tr[data-run-id="{run["id"]}"][data-status="running"]').wait_for(
        timeout=120_000
    )
    page.wait_for_function(
        f"/\\d/.test(document.querySelector('#runs-table tr[data-run-id=\"{run['id']}\"] td.loss')?.textContent)"
    )
    assert "epoch" in row.inner_text()
    page.click(f'#runs-table tr[data-run-id="{run["id"]}"] a')
    page.wait_for_url(f"**/runs/{run['id']}")
    page.locator("#btn-cancel").click()
    page.locator(".head .badge.st-cancelled").wait_for(timeout=60_000)
    page.locator("#btn-resume:enabled").wait_for()  # its cancel checkpoint arrives as an artifact
    assert page.locator("#btn-cancel").is_disabled()
    shot("run-cancelled")
    page.locator("#btn-resume").click()
    page.wait_for_url(lambda url: not url.endswith(f"/runs/{run['id']}"))
    resumed = stack.run(int(page.url.rsplit("/", 1)[1]))
    assert resumed["parent_id"] == run["id"] and resumed["config"]["resume"]
    # Lineage both ways: the resumed run names its parent, and the parent its continuation.
    parent = page.locator("#lineage-parent")
    parent.wait_for()
    assert "Resumed from" in page.locator("#run-lineage").inner_text()
    assert parent.locator(f"a[href='/runs/{run['id']}']").count() == 1
    page.goto(f"/runs/{run['id']}")
    children = page.locator("#lineage-children")
    children.wait_for()
    assert "resumed as" in children.inner_text()
    assert children.locator(f"a[href='/runs/{resumed['id']}']").count() == 1
    stack.http.post(f"/api/runs/{resumed['id']}/cancel")  # free the worker


def test_chart_helpers_compute_the_right_numbers(page, stack):
    page.goto("/datasets")
    r = page.evaluate(
        """async () => {
        const c = await import('/static/charts.js');
        const cmp = await import('/static/compare.js');
        const l = await import('/static/forms.js');
        const q = await import('/static/queue.js');
        const gpu = q.gpuCell({ gpus: [{ index: 0, name: 'NVIDIA H100', util_percent: 87, mem_used_mb: 40960,
          mem_total_mb: 81920 }] }).textContent;
        let seedsError = '';
        try { l.parseSeeds('0, x'); } catch (e) { seedsError = e.message; }
        const s = c.normalizeSeries({ key: 'loss', count: 6, step: [2, 4, 6], min: [1, null, 0.5], max: [3, null, 0.7],
          last: [2, 'nan', 0.6], n: [2, 1, 3], wall: [1, 2, 3], nonfinite: { steps: [4, 5], values: ['nan', 'inf'] } });
        return {
          ema0: c.ema([1, 2, NaN, 4], 0),
          ema: c.ema([1, 3], 0.5),
          ms: c.meanStd([[1, 2, null], [3, 6, 5]]),
          interp: cmp.interp([0, 10], [0, 100], [-1, 0, 2.5, 10, 11]),
          seeds: l.parseSeeds('0, 2-4 3'),
          seedsError,
          s: { x: s.x, y: s.y.map(String), lo: s.lo.map(String), nan: s.nan, inf: s.inf, bucketed: s.bucketed },
          gpu,
          num: [l.parseNumber('1e', 'float').error ?? null, l.parseNumber('--4', 'int').error ?? null,
            l.parseNumber('1e-3', 'float').value, l.parseNumber(' 16 ', 'int').value, l.parseNumber('1.5', 'int').error ?? null],
          diff: cmp.diffFields([{ config: { a: 1, b: 2, checkpoint_dir: 'x' } }, { config: { a: 1, b: 3, checkpoint_dir: 'y' } }]),
        };
    }"""
    )
    assert r["ema0"] == [1, 2, None, 4]
    assert r["ema"] == [1, pytest.approx((0.5 * 1 * 0.5 + 0.5 * 3) / 0.75)]  # debiased: (0.25 + 1.5) / 0.75
    assert r["ms"] == {"mean": [2, 4, 5], "std": [1, 2, 0]}
    assert r["interp"] == [None, 0, 25, 100, None]
    assert r["seeds"] == [0, 2, 3, 4]
    assert "x" in r["seedsError"] and "0-4" in r["seedsError"]
    assert r["s"] == {
        "x": [2, 4, 6],
        "y": ["2", "NaN", "0.6"],
        "lo": ["1", "NaN", "0.5"],
        "nan": [4],
        "inf": [5],
        "bucketed": True,
    }
    assert r["diff"] == ["b"]
    assert r["num"][0] and "1e" in r["num"][0] and r["num"][1] and "--4" in r["num"][1]
    assert r["num"][2:4] == [0.001, 16] and r["num"][4]
    assert r["gpu"] == "NVIDIA H100 #0 · util 87% · memory 40 / 80 GiB"
