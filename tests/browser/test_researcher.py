"""What a researcher trips over (issue #13), in headless Chromium against a real `aime up`: every chart point drawn,
nothing that looks broken while loading or queued, lineage and time left visible, the launch form refusing text that
is not a number, and the notebook path (Client.history as a DataFrame, plotting through plotly)."""

from __future__ import annotations

import re

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LONG = {"num_epochs": 500, "eval_every": 1000, "save_every": 1000}


def marker_points(page, chart_id: str, key: str) -> int:
    """Drawn marker <path>s of the trace `key` in the plotly DOM of chart `chart_id` (what a user sees)."""
    return page.evaluate(
        """([id, key]) => {
        const div = document.getElementById(id);
        const i = (div?.data || []).findIndex((t) => t.name === key);
        if (i < 0) return -1;
        const trace = div.querySelectorAll('.scatterlayer .trace')[i];
        return trace ? trace.querySelectorAll('.points path').length : -1;
    }""",
        [chart_id, key],
    )


@pytest.fixture(scope="module")
def one_epoch(stack):
    """A finished 1-epoch debug run: val/loss and perf/epoch_time have one point each."""
    (run,) = stack.launch(seed=11, overrides={"num_epochs": 1})
    return stack.wait_status(run["id"], timeout=300)


def test_a_series_with_one_point_is_drawn_with_a_marker(page, stack, shot, one_epoch):
    rid = one_epoch["id"]
    page.goto(f"/runs/{rid}")
    for chart, key in (("chart-val", "val/loss"), ("chart-epoch", "perf/epoch_time")):
        page.wait_for_function(
            f"(document.getElementById('{chart}')?.data || []).some((t) => t.name === '{key}' && t.x.length === 1)"
        )
        mode = page.evaluate(f"document.getElementById('{chart}').data.find((t) => t.name === '{key}').mode")
        assert "markers" in mode, mode
        assert marker_points(page, chart, key) == 1, (chart, key)
    # The trainer's per-term validation breakdown is charted beside the total.
    names = page.evaluate("document.getElementById('chart-val').data.map((t) => t.name)")
    assert "val/loss/recon" in names and "val/loss/kl_z" in names, names
    # Many points: a plain line (markers would clutter a long curve); few: markers too.
    loss_mode = page.evaluate(
        "document.getElementById('chart-losses').data.find((t) => t.name === 'loss').mode"
    )
    assert "markers" in loss_mode  # 5 logged steps in the debug preset
    # The Speed chart keeps seconds and clips/s apart: two y axes with their units.
    layout = page.evaluate("document.getElementById('chart-perf').layout")
    assert layout["yaxis"]["title"]["text"] == "seconds per step"
    assert layout["yaxis2"]["title"]["text"] == "clips per second"
    axes = page.evaluate(
        "Object.fromEntries(document.getElementById('chart-perf').data.filter((t) => t.meta?.key)"
        ".map((t) => [t.meta.key, t.yaxis]))"
    )
    assert axes == {"perf/step_time": "y", "perf/clips_per_s": "y2"}
    # Loss terms on a log axis by default (the reconstruction term would flatten every KL term on a linear one).
    assert page.evaluate("document.getElementById('chart-losses').layout.yaxis.type") == "log"
    assert page.locator("#logy").is_checked()
    shot("run-one-epoch")


def test_run_page_loads_panels_before_plotly_and_a_queued_run_shows_where_it_waits(
    page, stack, shot, one_epoch
):
    # Panels do not wait for plotly (3.5 MB): hold plotly back and the files, log, lineage and evaluation are there.
    held = []
    page.route(
        "**/static/vendor/plotly.min.js", lambda route: held.append(route)
    )  # answered when the test says
    page.goto(f"/runs/{one_epoch['id']}")
    page.locator("#artifacts").wait_for()  # the checkpoint table
    page.locator("#log-tail div").first.wait_for()
    page.locator("#eval-panel .good, #eval-panel .bad").first.wait_for()  # the evaluation's numbers
    assert page.evaluate("typeof window.Plotly") == "undefined"  # all of it before plotly arrived
    assert page.locator("#rollout-video").is_hidden() or page.evaluate(
        "document.getElementById('rollout-video').src.includes('/api/artifacts/')"
    )  # never a blank player at 0:00
    assert held, "the page did not ask for plotly"
    for route in held:
        route.continue_()
    page.wait_for_function("(document.getElementById('chart-losses')?.data || []).length > 0")
    page.unroute("**/static/vendor/plotly.min.js")

    # A queued run: where it waits, not six empty axes. The training worker is kept busy by a long run.
    (busy,) = stack.launch(seed=21, overrides=LONG)
    (waiting,) = stack.launch(seed=22, overrides=LONG)
    try:
        stack.wait_status(busy["id"], ("running",), timeout=120)
        page.goto(f"/runs/{waiting['id']}")
        state = page.locator("#queued-state")
        state.wait_for()
        page.wait_for_function(
            "/position \\d+ of \\d+/.test(document.getElementById('queued-state')?.textContent)"
        )
        assert "train" in state.inner_text()
        assert page.locator("#charts .chart").count() == 0 and page.locator("#curve-controls").is_hidden()
        shot("run-queued")

        # The running one: its own measured speed gives the time left, on its page and on the queue page.
        page.goto(f"/runs/{busy['id']}")
        page.wait_for_function(
            "/≈ \\d.*from its measured/.test(document.getElementById('eta')?.textContent)", timeout=120_000
        )
        page.goto("/queue")
        page.wait_for_function(
            f"/left/.test(document.querySelector('#active tr[data-run-id=\"{busy['id']}\"]')?.textContent)"
        )
        page.goto("/")
        page.wait_for_function(
            f"/left/.test(document.querySelector('#runs-table tr[data-run-id=\"{busy['id']}\"] .eta')?.textContent)"
        )
    finally:
        for rid in (waiting["id"], busy["id"]):
            stack.http.post(f"/api/runs/{rid}/cancel")
    stack.wait_status(busy["id"], ("cancelled", "succeeded"), timeout=120)

    # Cancelled before it started: no checkpoint, so Resume is disabled and says why (a click would be a 409).
    page.goto(f"/runs/{waiting['id']}")
    page.locator(".head .badge.st-cancelled").wait_for()
    resume = page.locator("#btn-resume")
    page.wait_for_function("document.getElementById('btn-resume')?.title.includes('No checkpoint')")
    assert resume.is_disabled() and page.locator("#btn-retry").is_enabled()


def test_lineage_retry_links_both_ways_and_the_seed_group_opens_compare(page, stack, shot, one_epoch):
    retry = stack.http.post(f"/api/runs/{one_epoch['id']}/retry")
    assert retry.status_code == 201, retry.text
    child = retry.json()["id"]
    stack.wait_status(child, timeout=300)
    page.goto(f"/runs/{child}")
    page.locator("#lineage-parent").wait_for()
    box = page.locator("#run-lineage").inner_text()
    assert "Retry of" in box and f"run {one_epoch['id']}" in box
    page.goto(f"/runs/{one_epoch['id']}")
    children = page.locator("#lineage-children")
    children.wait_for()
    assert "retried as" in children.inner_text()
    assert children.locator(f"a[href='/runs/{child}']").count() == 1
    shot("run-lineage")

    # A seed group (one launch of two seeds) links to compare its runs as mean ± std.
    group = stack.launch(seeds=[31, 32], overrides={"num_epochs": 1})
    ids = sorted(r["id"] for r in group)
    page.goto(f"/runs/{ids[0]}")
    link = page.locator("#seed-group a")
    link.wait_for()
    assert link.get_attribute("href") == f"/compare?runs={ids[0]},{ids[1]}&group=1"
    for r in ids:
        stack.wait_status(r, timeout=300)
    link.click()
    page.wait_for_url(re.compile(r"/compare\?runs="))
    page.wait_for_function("document.getElementById('cmp-chart')?.data?.some((t) => t.meta?.band === 'mean')")
    assert page.locator("#cmp-group").is_checked()
    # Final metrics: the run's real last step (the trainer's), not the last logged point.
    steps = page.locator("#final-metrics tbody tr").first.locator("td").nth(2).inner_text()
    total = stack.run(ids[0])["progress"]["total"]
    assert steps == f"{total} of {total}"
    # The copy-last reference beside the model's rollout error.
    page.select_option("#cmp-key", "eval/rollout_mse")
    page.wait_for_function(
        "document.getElementById('cmp-chart').data.some((t) => t.meta?.reference === 'eval/baseline_mse')"
    )
    page.uncheck("#cmp-group")
    page.wait_for_function(
        "document.getElementById('cmp-chart').data.filter((t) => t.meta?.reference === 'eval/baseline_mse').length === 2"
    )
    page.locator("#conn.ok").wait_for()  # live
    shot("compare-reference")


def test_launch_form_refuses_text_that_is_not_a_number_and_estimates_the_time(page, stack, shot, one_epoch):
    page.goto("/launch?kind=train&tier=1&preset=debug&synthetic=1")
    page.wait_for_function("document.getElementById('resolved')?.textContent.includes('bouncing_ball')")
    # The estimate comes from finished runs like it on this machine.
    page.wait_for_function("/Estimated ≈/.test(document.getElementById('estimate')?.textContent)")
    assert "per epoch" in page.locator("#estimate").inner_text()
    page.locator("details summary").first.click()
    page.fill("#f-lr", "1e")
    page.fill("#f-batch_size", "--4")
    page.locator("#err-lr").filter(has_text="not a number").wait_for()
    page.locator("#err-batch_size").filter(has_text="not a whole number").wait_for()
    assert page.locator("#submit").is_disabled()
    assert "lr" in page.locator("#form-errors").inner_text()
    # The text stays as typed (not silently replaced by the preset), also after leaving the field.
    page.locator("#f-seeds").focus()
    page.wait_for_timeout(500)
    assert page.input_value("#f-lr") == "1e" and page.input_value("#f-batch_size") == "--4"
    assert '"lr": 0.001' in page.locator("#resolved").inner_text()  # nothing bad was sent
    page.locator("#conn.ok").wait_for()  # live
    shot("launch-invalid")
    page.fill("#f-lr", "3e-4")
    page.fill("#f-batch_size", "")
    page.wait_for_function("document.getElementById('resolved').textContent.includes('\"lr\": 0.0003')")
    assert page.locator("#submit").is_enabled() and page.locator("#form-errors").is_hidden()


def test_sweep_builder_previews_how_many_runs(page, stack, shot):
    page.goto("/sweeps")
    page.click("#new-sweep summary")
    page.locator("#sweep-preview", has_text="4 runs").wait_for()  # latent_dim 4, 8 × seeds 0, 1
    page.click("#sw-add")
    page.select_option("#sw-grid .grid-row:nth-child(2) select", "lr")
    page.fill("#sw-grid .grid-row:nth-child(2) input", "1e-3, 3e-4, 1e-4")
    page.locator("#sweep-preview", has_text="12 runs").wait_for()
    assert "2 × 3" in page.locator("#sweep-preview").inner_text()
    assert '"lr": [' in page.input_value("#sweep-body")  # the JSON stays there, written by the builder
    page.fill("#sw-grid .grid-row:nth-child(2) input", "1e-3, fast")
    page.locator(".err-list .err", has_text="fast").wait_for()
    assert page.locator("#sweep-create").is_disabled()
    shot("sweeps-builder")
    # The JSON stays editable; the server's refusal is shown as an error box naming the field.
    page.fill("#sw-grid .grid-row:nth-child(2) input", "1e-3")
    body = '{"base": {"kind": "train", "tier": 1, "preset": "debug", "synthetic": true}, "grid": {"nope": [1, 2]}}'
    page.fill("#sweep-body", body)
    page.locator("#sweep-preview", has_text="2 runs").wait_for()
    page.click("#sweep-create")
    box = page.locator("#sweep-error .error-box")
    box.wait_for()
    assert "nope" in box.inner_text() and "not created" in box.inner_text()
    assert stack.http.get("/api/sweeps").json() == [] or all(
        x["grid"] != {"nope": [1, 2]} for x in stack.http.get("/api/sweeps").json()
    )
    page.errors.clear()  # the browser logs the 422 of that request


def test_notebook_history_is_a_dataframe_and_plots_with_plotly(stack, one_epoch):
    import plotly.express as px

    from aime_core.client import Client

    c = Client(stack.url, token=stack.token)
    evals = c.history(one_epoch["id"], "eval")
    assert len(evals) == 1 and {"step", "epoch", "horizon", "rollout_mse", "baseline_mse"} <= set(
        evals.columns
    )
    assert len(evals["rollout_mse"].iloc[0]) == len(evals["horizon"].iloc[0])
    df = c.metrics(one_epoch["id"])
    fig = px.line(df, x="step", y=["loss", "val/loss"], log_y=True, markers=True)  # the README's example
    assert {t.name for t in fig.data} == {"loss", "val/loss"}
    c.close()


def test_a_calibrated_run_shows_the_raw_rollout_beside_the_calibrated_one(page, stack, shot):
    (run,) = stack.launch(seed=12, overrides={"num_epochs": 1, "rollout_shrinkage": True})
    stack.wait_status(run["id"], timeout=300)
    page.goto(f"/runs/{run['id']}")
    note = page.locator("#eval-panel .calibration")
    note.wait_for()
    assert re.search(r"pulled toward the mean frame by a_h .*the raw rollout's mean ratio is \d", note.inner_text())
    page.wait_for_function(
        "(document.getElementById('eval-chart')?.data || []).some((t) => t.name === 'raw rollout (uncalibrated)')"
    )
    names = page.evaluate("document.getElementById('eval-chart').data.map((t) => t.name)")
    assert names[0] == "model rollout (calibrated)" and "mean training frame" in names, names
    shot("run-calibrated-eval")
