// Compare page: overlay runs' metrics (x = step, epoch, wall time or budget fraction), seed groups as mean ± std
// from the server's exact aggregate (GET /api/aggregate: every stored point, aligned steps), config diff, final
// metrics, and the measured epoch-time table per environment × tier.
import { api, subscribe } from "./api.js";
import { baseLayout, COLORS, ema, ensurePlotly, hexA, isFiniteNum, lineMode, normalizeSeries, PLOT_CONFIG } from "./charts.js";
import { latestLoss, latestOf } from "./runsummary.js";
import { clear, coalesce, emptyState, errorText, fmtDuration, fmtNum, h, runDuration, statusBadge } from "./ui.js";
import { epochTimeTable } from "./perftable.js";

// Fields that differ between seeds of one experiment without making it a different configuration.
const PER_SEED = new Set(["seed", "checkpoint_dir", "data_path", "resume", "wandb_project"]);
// eval/rollout_ratio: rollout error over the better trivial baseline (below 1: the model wins); absent in older runs.
const FINAL_KEYS = ["loss", "val/loss", "eval/rollout_mse", "eval/baseline_mse", "eval/rollout_ratio", "eval/psnr", "eval/ssim"];
// A model metric and its copy-last-frame reference, drawn dashed beside it (absent in runs without evaluations).
export const REFERENCE = { "eval/rollout_mse": "eval/baseline_mse", "eval/rollout_psnr": "eval/baseline_psnr" };
const X_MODES = { step: "step", epoch: "epoch", wall: "wall time (s)", fraction: "fraction of the run's budget" };
const ALIGNS = { common: "steps every seed logged", all: "every step (n varies)" };

export function configKey(cfg) {
  return JSON.stringify(Object.entries(cfg || {}).filter(([k]) => !PER_SEED.has(k)).sort());
}

// Config fields whose values differ between the runs (each run's own directory always does: left out).
export function diffFields(runs) {
  const keys = new Set(runs.flatMap((r) => Object.keys(r.config || {})));
  keys.delete("checkpoint_dir");
  return [...keys].sort().filter((k) => new Set(runs.map((r) => JSON.stringify(r.config?.[k] ?? null))).size > 1);
}

function totalSteps(run) {
  return run.progress.total ?? null;
}

// Linear interpolation of (xs, ys) at `grid`; null outside the run's own range.
export function interp(xs, ys, grid) {
  const out = [];
  let j = 0;
  for (const g of grid) {
    if (!xs.length || g < xs[0] || g > xs[xs.length - 1]) {
      out.push(null);
      continue;
    }
    while (j < xs.length - 2 && xs[j + 1] < g) j++;
    const [x0, x1, y0, y1] = [xs[j], xs[j + 1] ?? xs[j], ys[j], ys[j + 1] ?? ys[j]];
    if (!isFiniteNum(y0) || !isFiniteNum(y1)) out.push(null);
    else out.push(x1 === x0 ? y0 : y0 + ((y1 - y0) * (g - x0)) / (x1 - x0));
  }
  return out;
}

export async function mount(root, { query }) {
  const ids = (query.get("runs") || "").split(",").map(Number).filter((n) => Number.isInteger(n) && n > 0);
  const st = { key: query.get("key") || "loss", x: query.get("x") || "step", group: query.get("group") === "1",
    align: query.get("align") === "all" ? "all" : "common" };
  const body = h("div");
  clear(root, h("div.head", h("h1", "Compare runs")), body);
  const later = coalesce(() => reloadLive(), 1000);
  let reloadLive = () => {};
  // Live: a run of this comparison that logs or ends redraws (a finished comparison stays still).
  subscribe("/events", { status: (d) => ids.includes(d.run_id) && later(),
    metrics: (d) => ids.includes(d.run_id) && later() });

  const perf = h("div.card#epoch-times", h("h2", "Epoch time per environment × tier (measured)"), h("p.muted", "Loading…"));
  if (ids.length < 2) {
    clear(body, emptyState("Choose runs to compare",
      h("p", "On the Runs page tick two or more runs and press “Compare selected”, or open ",
        h("code", "/compare?runs=1,2"), "."), h("p", h("a.btn.primary", { href: "/" }, "Pick runs"))), perf);
    epochTimeTable(perf);
    return;
  }

  let runs;
  try {
    runs = await Promise.all(ids.map((id) => api(`/runs/${id}`)));
  } catch (e) {
    clear(body, h("div.error-box", "Could not load the runs: ", errorText(e)));
    return;
  }
  const keyLists = await Promise.all(ids.map((id) => api(`/runs/${id}/metrics`).catch(() => [])));
  const keys = [...new Set(keyLists.flat().map((k) => k.key))].sort();
  if (!keys.includes(st.key) && keys.length) st.key = keys[0];
  const color = new Map(runs.map((r, i) => [r.id, COLORS[i % COLORS.length]]));

  const keySel = h("select#cmp-key", { "aria-label": "Metric" }, keys.map((k) => h("option", { value: k }, k)));
  const xSel = h("select#cmp-x", { "aria-label": "x axis" }, Object.entries(X_MODES).map(([v, t]) => h("option", { value: v }, t)));
  const groupBox = h("input#cmp-group", { type: "checkbox", checked: st.group });
  const alignSel = h("select#cmp-align", { "aria-label": "Steps the group bands use" },
    Object.entries(ALIGNS).map(([v, t]) => h("option", { value: v }, t)));
  alignSel.value = st.align;
  const smooth = h("input", { type: "range", min: 0, max: 0.99, step: 0.01, value: 0, "aria-label": "EMA smoothing" });
  const logBox = h("input", { type: "checkbox", "aria-label": "log scale" });
  keySel.value = st.key;
  xSel.value = st.x;
  const plot = h("div.chart#cmp-chart");
  const note = h("p.small.muted");

  const diff = diffFields(runs);
  const diffTable = h("table.diff#config-diff",
    h("thead", h("tr", h("th", "Field"), runs.map((r) => h("th", h("span.swatch", { style: { background: color.get(r.id) } }), r.name)))),
    h("tbody", diff.map((k) => h("tr", { dataset: { field: k } }, h("td", h("b", k)),
      runs.map((r) => h("td.differs", JSON.stringify(r.config?.[k] ?? null)))))));

  const finalTable = h("table#final-metrics",
    h("thead", h("tr", h("th", "Run"), h("th", "Status"), h("th.num", "Steps"), h("th.num", "Duration"),
      FINAL_KEYS.map((k) => h("th.num", k)))),
    h("tbody", runs.map((r) => h("tr",
      h("td", h("span.swatch", { style: { background: color.get(r.id) } }), h("a", { href: `/runs/${r.id}` }, r.name)),
      // The trainer's own last step (logged points are every `log_every` steps: the last may be earlier).
      h("td", statusBadge(r.status)), h("td.num", r.progress.done != null ? `${r.progress.done} of ${r.progress.total}` : "—"),
      h("td.num", fmtDuration(runDuration(r))),
      FINAL_KEYS.map((k) => h("td.num", fmtNum(k === "loss" ? latestLoss(r) : latestOf(r, k))))))));

  clear(body,
    h("div.card", h("div.controls",
      h("label", "Metric ", keySel), h("label", "x axis ", xSel),
      h("label", groupBox, " group seeds of one config (mean ± std)"), h("label", "at ", alignSel),
      h("label", "EMA ", smooth), h("label", logBox, " log scale")), note, plot),
    h("div.card", h("h2", `Configuration differences (${diff.length} field${diff.length === 1 ? "" : "s"})`),
      diff.length ? h("div.table-wrap", diffTable) : h("p.muted", "The configurations are identical.")),
    h("div.card.table-wrap", h("h2", "Final metrics"), finalTable),
    perf);

  await ensurePlotly();
  // Seed groups: runs whose configurations match apart from the per-seed fields, in the order they appear.
  const groups = [];
  for (const r of runs) {
    const g = groups.find((x) => x.k === configKey(r.config));
    if (g) g.members.push(r);
    else groups.push({ k: configKey(r.config), members: [r] });
  }
  let data = new Map(); // run id -> normalized (downsampled) series
  let refs = new Map(); // run id -> the copy-last reference series of st.key (REFERENCE), when it has one
  let epochs = new Map(); // run id -> normalized `epoch` series
  let aggs = []; // per group: the server's exact {steps, mean, std, n, missing} for st.key and st.align
  let aggFor = ""; // the key|align `aggs` was fetched for
  let refAggs = []; // per group: the same for the reference key (REFERENCE), when st.key has one
  async function fetchData() {
    const q = { runs: ids.join(","), key: st.key, buckets: 600 };
    const ref = REFERENCE[st.key];
    const [resp, ep, rr] = await Promise.all([api("/metrics", { query: q }),
      st.x === "epoch" ? api("/metrics", { query: { ...q, key: "epoch" } }) : null,
      ref ? api("/metrics", { query: { ...q, key: ref } }) : null, fetchAggregates()]);
    data = new Map(ids.map((id) => [id, normalizeSeries(resp.runs[String(id)])]));
    refs = new Map(rr ? ids.map((id) => [id, normalizeSeries(rr.runs[String(id)])]) : []);
    if (ep) epochs = new Map(ids.map((id) => [id, normalizeSeries(ep.runs[String(id)])]));
  }

  // Mean ± std per group over every stored point at aligned steps, computed by the server (not from the
  // downsampled points above). Fetched only while grouping is on.
  async function fetchAggregates() {
    const want = `${st.key}|${st.align}`;
    if (!st.group || aggFor === want) return;
    const one = (g) => api("/aggregate", { query: { key: st.key, runs: g.members.map((r) => r.id).join(","), align: st.align } });
    aggs = await Promise.all(groups.map((g) => one(g).catch((e) => ({ error: e }))));
    const ref = REFERENCE[st.key];
    const oneRef = (g) => api("/aggregate", { query: { key: ref, runs: g.members.map((r) => r.id).join(","), align: st.align } });
    refAggs = ref ? await Promise.all(groups.map((g) => oneRef(g).catch(() => null))) : [];
    aggFor = want;
  }

  function refNote() {
    const better = st.key.endsWith("mse") ? "below" : "above";
    return `Dashed: the copy-last-frame baseline (${REFERENCE[st.key]}) of the same evaluation; the model beats it where ` +
      `its curve is ${better} the dashed one.`;
  }

  // x under the chosen mode for `steps` of one run (`last`: the run's last logged step, when its budget is unknown).
  function stepsToX(run, steps, last) {
    if (st.x === "step") return steps;
    if (st.x === "fraction") {
      const total = totalSteps(run) ?? last;
      return steps.map((x) => x / total);
    }
    if (st.x === "epoch") {
      const e = epochs.get(run.id);
      if (e && e.x.length) {
        // `epoch` is logged at the end of each epoch; past the last one, extend at the same steps per epoch.
        const perEpoch = e.x[e.x.length - 1] / Math.max(1, e.y[e.y.length - 1]);
        return interp([0, ...e.x], [0, ...e.y], steps).map((v, i) => v ?? steps[i] / perEpoch);
      }
      const perEpoch = (totalSteps(run) ?? 0) / (run.config?.num_epochs || 1);
      return steps.map((x) => (perEpoch ? x / perEpoch : null));
    }
    return null;
  }

  // The x values of one run's own series under the chosen mode.
  function xOf(run, s) {
    if (st.x !== "wall") return stepsToX(run, s.x, s.x[s.x.length - 1]);
    // wall: seconds since the run's first point (server wall times when sent, else linear in steps)
    if (s.wall.some((w) => w != null)) return s.wall.map((w) => (w == null ? null : w - s.wall.find((v) => v != null)));
    const dur = runDuration(run) ?? 0;
    const total = totalSteps(run) ?? s.x[s.x.length - 1];
    return s.x.map((x) => (dur * x) / total);
  }

  // x of a group's aggregate steps: each member maps the steps as its own curve does, and the band sits at the
  // members' mean (identical for step, and for epoch/fraction when the seeds share a budget; for wall time the
  // mean of the seeds' elapsed seconds, interpolated from their series at those steps).
  function groupX(members, steps) {
    const cols = members.map((r) => {
      const s = data.get(r.id);
      if (!s?.x.length) return null;
      if (st.x !== "wall") return stepsToX(r, steps, s.x[s.x.length - 1]);
      // Bucket ends carry the wall times: clamp steps before the first bucket's end to it (elapsed 0).
      return interp(s.x, xOf(r, s), steps.map((x) => Math.min(Math.max(x, s.x[0]), s.x[s.x.length - 1])));
    }).filter(Boolean);
    return steps.map((_, i) => {
      const v = cols.map((c) => c[i]).filter(isFiniteNum);
      return v.length ? v.reduce((a, b) => a + b, 0) / v.length : null;
    });
  }

  function draw() {
    const alpha = Number(smooth.value);
    const traces = [];
    if (!st.group) {
      for (const r of runs) {
        const s = data.get(r.id);
        if (!s?.x.length) continue;
        traces.push({ x: xOf(r, s), y: ema(s.y, alpha), name: `${r.name} (#${r.id})`, mode: lineMode(s.x.length),
          line: { color: color.get(r.id), width: 2 }, marker: { size: 7 } });
        const ref = refs.get(r.id);
        if (ref?.x.length) {
          traces.push({ x: xOf(r, ref), y: ref.y, name: `copy-last-frame (#${r.id})`, mode: lineMode(ref.x.length),
            line: { color: color.get(r.id), width: 1.5, dash: "dash" }, marker: { size: 5, symbol: "diamond-open" },
            meta: { reference: REFERENCE[st.key] } });
        }
      }
      note.textContent = `${runs.length} runs, one colour each.` +
        (refs.size ? ` ${refNote()}` : "");
    } else {
      const problems = [];
      groups.forEach(({ members }, gi) => {
        const g = aggs[gi];
        const name = `${members[0].name.replace(/-seed\d+/, "")} · seeds ${members.map((r) => r.seed).join(",")}`;
        if (!g || g.error) {
          problems.push(`${name}: ${g ? errorText(g.error) : "not loaded"}`);
          return;
        }
        if (g.missing.length) problems.push(`${name}: no ${st.key} points in run(s) ${g.missing.join(", ")}`);
        if (!g.steps.length) return;
        const c = COLORS[gi % COLORS.length];
        const x = groupX(members, g.steps);
        // EMA is linear, so smoothing the mean equals the mean of the smoothed seeds; the std is smoothed alike.
        const mean = ema(g.mean, alpha);
        const std = ema(g.std, alpha);
        const meta = { runs: members.map((r) => r.id), key: st.key, align: st.align };
        traces.push({ x, y: mean.map((m, i) => m + std[i]), mode: "lines", line: { width: 0 }, name: `${name} +std`,
          meta: { ...meta, band: "upper" }, showlegend: false, hoverinfo: "skip", legendgroup: name });
        traces.push({ x, y: mean.map((m, i) => m - std[i]), mode: "lines", line: { width: 0 }, name: `${name} −std`,
          meta: { ...meta, band: "lower" }, fill: "tonexty", fillcolor: hexA(c, 0.2), showlegend: false,
          hoverinfo: "skip", legendgroup: name });
        traces.push({ x, y: mean, name: `${name} (mean ± std, n=${Math.max(...g.n)})`,
          meta: { ...meta, band: "mean" }, customdata: g.n, hovertemplate: "%{y:.4g} (n=%{customdata})",
          line: { color: c, width: 2 }, legendgroup: name, mode: lineMode(g.steps.length), marker: { size: 7 } });
        const ref = refAggs[gi];
        if (ref?.steps.length) {
          traces.push({ x: groupX(members, ref.steps), y: ref.mean, name: `${name} copy-last-frame (mean)`,
            mode: lineMode(ref.steps.length), line: { color: c, width: 1.5, dash: "dash" },
            marker: { size: 5, symbol: "diamond-open" }, meta: { reference: REFERENCE[st.key] } });
        }
      });
      note.textContent = `${groups.length} configuration group(s) from ${runs.length} runs; band = ± 1 std (ddof 0) ` +
        `across seeds, computed on the server from every stored point at ${ALIGNS[st.align]}.` +
        (problems.length ? ` ${problems.join("; ")}.` : "") + (refAggs.some((r) => r?.steps.length) ? ` ${refNote()}` : "");
    }
    window.Plotly.react(plot, traces, baseLayout({ height: 420, title: { text: st.key, x: 0.01, font: { size: 14 } },
      xaxis: { title: { text: X_MODES[st.x] }, gridcolor: "#eee" },
      yaxis: { type: logBox.checked ? "log" : "linear", gridcolor: "#eee", exponentformat: "e" } }), PLOT_CONFIG);
  }

  function sync() {
    const url = new URL(location.href);
    url.searchParams.set("key", st.key);
    url.searchParams.set("x", st.x);
    url.searchParams.set("group", st.group ? "1" : "0");
    url.searchParams.set("align", st.align);
    history.replaceState(null, "", url);
  }

  keySel.addEventListener("change", async () => {
    st.key = keySel.value;
    sync();
    await fetchData();
    draw();
  });
  xSel.addEventListener("change", async () => {
    st.x = xSel.value;
    sync();
    await fetchData();
    draw();
  });
  groupBox.addEventListener("change", async () => {
    st.group = groupBox.checked;
    sync();
    await fetchAggregates();
    draw();
  });
  alignSel.addEventListener("change", async () => {
    st.align = alignSel.value;
    sync();
    await fetchAggregates();
    draw();
  });
  smooth.addEventListener("input", draw);
  logBox.addEventListener("change", draw);
  reloadLive = async () => {
    runs = await Promise.all(ids.map((id) => api(`/runs/${id}`)));
    await fetchData();
    draw();
  };
  await fetchData();
  draw();
  epochTimeTable(perf);
}
