// One sweep's page: leaderboard (mean ± std over seeds per configuration), parallel coordinates of the varied fields
// against the metric, curves per configuration (with the copy-last reference), runs, promotion and lineage.
import { api, subscribe } from "./api.js";
import { COLORS, PLOT_CONFIG, baseLayout, ensurePlotly, hexA, lineMode } from "./charts.js";
import { countsText } from "./sweepsummary.js";
import { clear, debounce, errorText, fmtNum, fmtTime, h, statusBadge, toast } from "./ui.js";

// A model metric and its copy-last-frame reference, drawn dashed beside it.
const REFERENCE = { "eval/rollout_mse": "eval/baseline_mse", "eval/rollout_psnr": "eval/baseline_psnr" };

export async function mount(root, { params }) {
  return mountSweep(root, Number(params[0]));
}


async function mountSweep(root, id) {
  const header = h("div");
  const lineage = h("div");
  const board = h("div.card");
  const plot = h("div#parcoords", { role: "img", "aria-label": "Parallel coordinates: varied fields against the metric" });
  const runsBox = h("div.card.table-wrap");
  const curveKey = h("select#curve-key", { "aria-label": "Metric of the group curves" },
    ["loss", "val/loss", "eval/rollout_ratio", "eval/rollout_mse", "eval/rollout_psnr"].map((k) => h("option", { value: k }, k)));
  const curveNote = h("p.small.muted#curve-note");
  const curves = h("div#group-curves", { role: "img", "aria-label": "Mean ± std over seeds per configuration" });
  curveKey.addEventListener("change", () => drawCurves());
  clear(root, header, lineage, board, h("div.card", h("h2", "Parameters against the metric"), plot),
    h("div.card", h("div.controls", h("h2.inline", "Curves per configuration: mean ± std over seeds"),
      h("label", "metric ", curveKey),
      h("span.small.muted", "Computed on the server from every stored point, at the steps all seeds logged.")), curveNote, curves),
    runsBox);
  let sweep = null;

  async function load() {
    try {
      sweep = await api(`/sweeps/${id}`);
    } catch (e) {
      clear(root, h("div.error-box", h("h2", `Sweep ${id}`), h("p", errorText(e))));
      return;
    }
    drawHeader();
    drawLineage();
    drawBoard();
    drawRuns();
    await drawPlot();
    await drawCurves();
  }

  async function drawCurves() {
    const s = sweep;
    const key = curveKey.value;
    let Plotly;
    let groups;
    let refs;
    try {
      Plotly = await ensurePlotly();
      const one = (c, k) => api("/aggregate", { query: { group: `sweep${id}-${c.key}`, key: k } });
      [groups, refs] = await Promise.all([Promise.all(s.configs.map((c) => one(c, key))),
        REFERENCE[key] ? Promise.all(s.configs.map((c) => one(c, REFERENCE[key]))) : []]);
    } catch (e) {
      clear(curves, h("p.muted", errorText(e)));
      return;
    }
    const traces = [];
    s.configs.forEach((c, i) => {
      const g = groups[i];
      if (!g.steps.length) return;
      const color = COLORS[i % COLORS.length];
      const lo = g.mean.map((m, j) => m - g.std[j]);
      const hi = g.mean.map((m, j) => m + g.std[j]);
      traces.push({ x: g.steps, y: hi, mode: "lines", line: { width: 0 }, hoverinfo: "skip", showlegend: false, legendgroup: c.key });
      traces.push({ x: g.steps, y: lo, mode: "lines", line: { width: 0 }, fill: "tonexty", fillcolor: hexA(color, 0.18),
        hoverinfo: "skip", showlegend: false, legendgroup: c.key });
      traces.push({ x: g.steps, y: g.mean, mode: lineMode(g.steps.length), name: `${c.key} ${JSON.stringify(c.params)} (n=${Math.max(...g.n)})`,
        line: { color, width: 1.6 }, marker: { size: 7 }, legendgroup: c.key });
      const ref = refs[i];
      if (ref?.steps.length) {
        traces.push({ x: ref.steps, y: ref.mean, mode: lineMode(ref.steps.length), name: `${c.key} copy-last-frame`,
          line: { color, width: 1.2, dash: "dash" }, marker: { size: 5, symbol: "diamond-open" }, legendgroup: c.key,
          meta: { reference: REFERENCE[key] } });
      }
    });
    if (!traces.length) {
      clear(curves, h("p.muted", `No ${key} points yet.`));
      return;
    }
    curves.querySelector("p")?.remove();
    curveNote.textContent = traces.some((t) => t.meta?.reference)
      ? `Dashed: each configuration's copy-last-frame baseline (${REFERENCE[key]}, mean over seeds) from the same evaluations.` : "";
    const xs = traces.flatMap((t) => t.x);
    const short = xs.length && Math.max(...xs) - Math.min(...xs) <= 12; // whole steps only, not 1.5, 2.5, ...
    await Plotly.react(curves, traces, baseLayout({ height: 340, yaxis: { title: { text: key }, gridcolor: "#eee" },
      xaxis: { title: { text: "step", standoff: 4 }, gridcolor: "#eee", automargin: true, ...(short ? { dtick: 1 } : {}) } }),
    PLOT_CONFIG);
  }

  function drawHeader() {
    const s = sweep;
    const topK = h("input#promote-k", { type: "number", min: 1, value: Math.min(3, s.configs.length), style: { width: "4em" } });
    const tier = h("input#promote-tier", { type: "number", min: s.tier + 1, max: 3, value: Math.min(3, s.tier + 1), style: { width: "4em" } });
    const seeds = h("input#promote-seeds", { placeholder: s.tier + 1 >= 3 ? "1,2,3,4,5" : s.seeds.join(","), style: { width: "9em" } });
    const promote = async () => {
      const bodyReq = { top_k: Number(topK.value), tier: Number(tier.value) };
      if (seeds.value.trim()) bodyReq.seeds = seeds.value.split(",").map((x) => Number(x.trim()));
      try {
        const child = await api(`/sweeps/${id}/promote`, { method: "POST", body: bodyReq });
        location.href = `/sweeps/${child.id}`;
      } catch (e) {
        toast(`Promotion failed: ${errorText(e)}`, "error");
      }
    };
    const cancel = async () => {
      try {
        sweep = await api(`/sweeps/${id}/cancel`, { method: "POST" });
        toast("Sweep cancelled: held and queued runs will not start; running ones stop.");
        await load();
      } catch (e) {
        toast(`Cancel failed: ${errorText(e)}`, "error");
      }
    };
    const es = s.early_stop || {};
    clear(header,
      h("div.head", h("h1", s.name || `sweep ${id}`), statusBadge(s.status), h("span.spacer"),
        h("button.danger#sweep-cancel", { type: "button", disabled: s.status !== "running", onclick: cancel }, "Cancel sweep")),
      h("div.card", h("div.grid3",
        h("dl.kv",
          h("dt", "Base"), h("dd", `tier ${s.tier}${s.base.preset ? ` · ${s.base.preset}` : ""}${s.base.synthetic ? " · synthetic" : ""}`),
          h("dt", "Overrides"), h("dd.small", JSON.stringify(s.base.overrides || {})),
          h("dt", "Space"), h("dd.small", JSON.stringify({ ...s.grid, ...s.random }))),
        h("dl.kv",
          h("dt", "Ranked by"), h("dd", `${s.metric} (${s.mode === "min" ? "lower" : "higher"} is better)`),
          h("dt", "Seeds"), h("dd", s.seeds.join(", ")),
          h("dt", "Parallel"), h("dd", String(s.parallel))),
        h("dl.kv",
          h("dt", "Runs"), h("dd#sweep-counts", `${s.total_runs}: ${countsText(s.counts)}`),
          h("dt", "Early stop"), h("dd.small", es.enabled ? `loss > ${es.k} × median for ${es.patience} points, or non-finite` : "off"),
          h("dt", "Created"), h("dd", fmtTime(s.created_at))))),
      h("div.card", h("div.controls", h("b", "Promote"),
        h("label", "best ", topK), h("label", "to tier ", tier), h("label", "seeds ", seeds),
        h("button#promote-btn", { type: "button", onclick: promote, disabled: s.tier >= 3 }, "Launch at the next tier"),
        h("span.small.muted", "The next tier's preset for every field the sweep did not vary."))));
  }

  function drawLineage() {
    const s = sweep;
    const parts = [];
    if (s.parent_id) {
      parts.push(h("p", "Promoted from ", h("a", { href: `/sweeps/${s.parent_id}` }, `sweep ${s.parent_id}`), ": ",
        (s.promotion.picks || []).map((p, i) => [i ? "; " : "", `${p.key} ← ${p.config} (rank ${p.rank}, runs `,
          p.runs.map((r, j) => [j ? ", " : "", h("a", { href: `/runs/${r}` }, String(r))]), ")"])));
    }
    for (const c of s.children || []) {
      parts.push(h("p", "Promoted to ", h("a", { href: `/sweeps/${c.id}` }, `sweep ${c.id}`), ` at tier ${c.tier}: `,
        c.picks.map((p) => `${p.config} → ${p.key}`).join(", ")));
    }
    clear(lineage, parts.length ? h("div.card#sweep-lineage", h("h2", "Lineage"), parts) : null);
  }

  function drawBoard() {
    const s = sweep;
    const varied = s.varied || [];
    clear(board, h("h2", `Leaderboard: ${s.metric} at the last evaluation, mean ± std over seeds`),
      h("div.table-wrap", h("table#leaderboard",
        h("thead", h("tr", h("th.num", "Rank"), h("th", "Config"), varied.map((v) => h("th.num", v)),
          h("th.num", "Mean ± std"), h("th.num", "Seeds counted"), h("th.num", "Stopped early"), h("th", "Runs"))),
        h("tbody", s.leaderboard.map((r) => h("tr", { dataset: { config: r.key } },
          h("td.num", r.rank ?? "—"), h("td", r.key),
          varied.map((v) => h("td.num", fmtParam(r.params[v]))),
          h("td.num", r.mean === null ? "—" : `${fmtNum(r.mean)} ± ${fmtNum(r.std)}`),
          h("td.num", `${r.n} of ${r.runs.length - (r.replaced || []).length}`), h("td.num", r.stopped || ""),
          h("td.small", r.runs.map((x, i) => [i ? ", " : "", h("a", { href: `/runs/${x}` }, String(x))]))))))));
  }

  function drawRuns() {
    const s = sweep;
    clear(runsBox, h("h2", "Runs"), h("table#sweep-runs",
      h("thead", h("tr", ["Run", "Config", "Seed", "Status"].map((t) => h("th", t)), h("th.num", `Last ${s.metric}`),
        h("th", "Note"))),
      h("tbody", s.runs.map((r) => h("tr",
        h("td", h("a", { href: `/runs/${r.id}` }, `${r.id}`)), h("td", r.sweep_config), h("td", r.seed),
        h("td", statusBadge(r.status === "queued" && r.held ? "held" : r.status)),
        h("td.num", fmtNum((r.latest || {})[s.metric]?.[1])),
        h("td.small", runNote(r)))))));
  }

  function runNote(r) {
    const why = r.stop_reason ? `stopped early: ${r.stop_reason}` : r.status === "failed" ? (r.error || "").slice(0, 160) : "";
    const lineage = [];
    if (r.parent_id) lineage.push("retry/resume of ", h("a", { href: `/runs/${r.parent_id}` }, `run ${r.parent_id}`), " ");
    if (r.replaced_by) lineage.push("replaced by ", h("a", { href: `/runs/${r.replaced_by}` }, `run ${r.replaced_by}`), " (not counted) ");
    return [...lineage, why];
  }

  async function drawPlot() {
    const s = sweep;
    const rows = s.leaderboard.filter((r) => r.mean !== null);
    if (!rows.length) {
      clear(plot, h("p.muted", `No configuration has a finite ${s.metric} yet.`));
      return;
    }
    let Plotly;
    try {
      Plotly = await ensurePlotly();
    } catch (e) {
      clear(plot, h("p.muted", errorText(e)));
      return;
    }
    const dims = (s.varied || []).map((v) => dimension(v, rows.map((r) => r.params[v])));
    const metric = rows.map((r) => r.mean);
    dims.push({ label: `${s.metric} (mean)`, values: metric });
    plot.replaceChildren();
    await Plotly.react(plot, [{
      type: "parcoords",
      line: { color: metric, colorscale: "Viridis", reversescale: s.mode === "min", showscale: true },
      dimensions: dims,
      labelfont: { size: 14, color: "#1d2330" },
      tickfont: { size: 12, color: "#1d2330" },
      rangefont: { size: 1, color: "rgba(0,0,0,0)" }, // the range ends repeat the end ticks: hidden
    }], { margin: { l: 80, r: 80, t: 56, b: 24 }, height: 360, paper_bgcolor: "rgba(0,0,0,0)",
      font: { family: "system-ui, sans-serif", size: 13 } }, PLOT_CONFIG);
  }

  await load();
  const reload = debounce(load, 500);
  subscribe("/events", { status: (d) => (!d || !d.run_id || sweep?.runs.some((r) => r.id === d.run_id) ? reload() : null) });
}

// Numbers stay numbers (log axis is not available in parcoords, so lr shows as its value); anything else
// (true/false, strings) becomes categories.
function dimension(label, values) {
  if (values.every((v) => typeof v === "number")) {
    const distinct = [...new Set(values)].sort((a, b) => a - b);
    // Few distinct values (a grid): ticks exactly there; else plotly's own ticks.
    return distinct.length <= 8 ? { label, values, tickvals: distinct, ticktext: distinct.map(fmtParam) } : { label, values };
  }
  const cats = [...new Set(values.map(String))];
  return { label, values: values.map((v) => cats.indexOf(String(v))), tickvals: cats.map((_, i) => i), ticktext: cats };
}

function fmtParam(v) {
  return typeof v === "number" ? fmtNum(v) : String(v);
}
