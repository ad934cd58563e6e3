// Plotly helpers: lazy loading, EMA smoothing, server-downsampled series with min/max bands and NaN markers.
import { api } from "./api.js";

let plotlyPromise = null;

// plotly.min.js is 3.5 MB: load it only on pages that draw charts.
export function ensurePlotly() {
  if (window.Plotly) return Promise.resolve(window.Plotly);
  if (!plotlyPromise) {
    plotlyPromise = new Promise((resolve, reject) => {
      const s = document.createElement("script");
      s.src = "/static/vendor/plotly.min.js";
      s.onload = () => resolve(window.Plotly);
      s.onerror = () => reject(new Error("could not load /static/vendor/plotly.min.js"));
      document.head.append(s);
    });
  }
  return plotlyPromise;
}

export const COLORS = [
  "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
  "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f",
];

export const PLOT_CONFIG = { responsive: true, displaylogo: false, modeBarButtonsToRemove: ["lasso2d", "select2d"] };

export function baseLayout(extra = {}) {
  return {
    margin: { l: 56, r: 16, t: 32, b: 24 },
    height: 300,
    font: { family: "system-ui, sans-serif", size: 12 },
    // Legend under the axis title, never on top of it.
    legend: { orientation: "h", yanchor: "top", y: -0.16, x: 0 },
    hovermode: "x unified",
    paper_bgcolor: "rgba(0,0,0,0)",
    plot_bgcolor: "#fff",
    xaxis: { title: { text: "step", standoff: 4 }, gridcolor: "#eee", automargin: true },
    yaxis: { gridcolor: "#eee", exponentformat: "e", automargin: true },
    ...extra,
  };
}

export function isFiniteNum(v) {
  return typeof v === "number" && Number.isFinite(v);
}

// Exponential moving average with TensorBoard's debiasing; non-finite values pass through as gaps.
export function ema(values, alpha) {
  if (!alpha) return values.map((v) => (isFiniteNum(v) ? v : null));
  let acc = 0;
  let n = 0;
  return values.map((v) => {
    if (!isFiniteNum(v)) return null;
    acc = acc * alpha + (1 - alpha) * v;
    n += 1;
    return acc / (1 - alpha ** n);
  });
}

function num(v) {
  if (typeof v === "number") return v;
  if (typeof v === "string") {
    const s = v.toLowerCase();
    if (s === "nan") return NaN;
    if (s === "inf" || s === "infinity" || s === "+inf") return Infinity;
    if (s === "-inf" || s === "-infinity") return -Infinity;
    return Number(v);
  }
  return NaN; // null: the server's encoding of a non-finite value
}

// The server's downsampled answer (GET /api/runs/{id}/metrics/{key}, and each run of GET /api/metrics): column
// arrays per bucket (step = the bucket's last step, min/max of its finite values, last value, n points, wall =
// its latest wall time) and every non-finite step. Normalized to
//   {x: steps, y: last value, lo: min, hi: max, wall: wall times (s), nan: [steps], inf: [steps]}
export function normalizeSeries(resp) {
  const out = { x: [], y: [], lo: [], hi: [], wall: [], nan: [], inf: [], bucketed: false, total: 0 };
  if (!resp || !resp.count) return out;
  out.x = resp.step.slice();
  out.y = resp.last.map(num);
  // min/max are null when a bucket held only non-finite values: fall back to its last value.
  out.lo = resp.min.map((v, i) => (v === null ? out.y[i] : v));
  out.hi = resp.max.map((v, i) => (v === null ? out.y[i] : v));
  out.wall = resp.wall;
  out.bucketed = resp.n.some((n) => n > 1);
  resp.nonfinite.steps.forEach((st, i) => (Number.isNaN(num(resp.nonfinite.values[i])) ? out.nan : out.inf).push(st));
  out.total = resp.count;
  return out;
}

export async function fetchSeries(runId, key, { buckets = 800, stepMin, stepMax } = {}) {
  const query = { buckets, step_min: stepMin, step_max: stepMax };
  const resp = await api(`/runs/${runId}/metrics/${encodeURIComponent(key)}`, { query });
  return normalizeSeries(resp);
}

// A series with few points is drawn with markers too: one logged point (a run at step 17 with log_every 10, a
// 1-epoch run's val/loss) would otherwise be an invisible line of length zero.
export const FEW_POINTS = 30;
export function lineMode(points) {
  return points <= FEW_POINTS ? "lines+markers" : "lines";
}

// y for a marker at `step`: the nearest finite value before it (else after), so the marker sits on the curve.
function yNear(s, step) {
  let best = null;
  for (let i = 0; i < s.x.length; i++) {
    if (s.x[i] > step && best !== null) break;
    if (isFiniteNum(s.y[i])) best = s.y[i];
  }
  return best ?? 0;
}

// A live chart of several keys of one run. Zooming re-fetches finer buckets for the visible step range.
export class MetricChart {
  // axes: {key: "y2"} puts a key on a right-hand axis (another unit); yTitle/y2Title name the units.
  constructor(div, runId, keys, { title = "", logY = false, smoothing = 0, height = 300, buckets, axes = {},
    yTitle = "", y2Title = "" } = {}) {
    this.div = div;
    this.axes = axes;
    this.yTitle = yTitle;
    this.y2Title = y2Title;
    this.runId = runId;
    this.keys = keys;
    this.title = title;
    this.logY = logY;
    this.smoothing = smoothing;
    this.height = height;
    this.series = new Map(); // key -> normalized series
    this.range = null; // [stepMin, stepMax] when zoomed
    this.buckets = buckets ?? Math.max(200, Math.min(1500, Math.round((div.clientWidth || 600) * 1.5)));
    this.reports = new Map(); // step -> trainer's NaN report text
    this.pending = null;
    this.fetching = false;
  }

  async load() {
    await ensurePlotly();
    await this.refetch();
    this.div.on("plotly_relayout", (ev) => this.onRelayout(ev));
  }

  // Only the keys the run has (`present`, from GET /api/runs/{id}/metrics) or that arrived live are fetched: a
  // chart's other keys (a term this run does not log) would be requests for nothing.
  setPresent(keys) {
    this.present = new Set(keys);
  }

  async refetch() {
    this.fetching = true;
    const [lo, hi] = this.range ?? [undefined, undefined];
    const wanted = this.present ? this.keys.filter((k) => this.present.has(k) || this.series.has(k)) : this.keys;
    const results = await Promise.all(
      wanted.map((k) =>
        fetchSeries(this.runId, k, { buckets: this.buckets, stepMin: lo, stepMax: hi }).catch(() => null),
      ),
    );
    wanted.forEach((k, i) => results[i] && this.series.set(k, results[i]));
    this.fetching = false;
    this.draw();
  }

  onRelayout(ev) {
    if (this.drawing) return;
    if (ev["xaxis.autorange"]) {
      this.range = null;
    } else if (ev["xaxis.range[0]"] !== undefined) {
      this.range = [Math.floor(ev["xaxis.range[0]"]), Math.ceil(ev["xaxis.range[1]"])];
    } else if (Array.isArray(ev["xaxis.range"])) {
      this.range = ev["xaxis.range"].map(Math.round);
    } else {
      return;
    }
    this.refetch();
  }

  // A live point from the event stream.
  push(key, step, value) {
    if (!this.keys.includes(key)) return;
    if (this.range && step > this.range[1]) return; // off screen while zoomed; the reset re-fetches everything
    let s = this.series.get(key);
    if (!s) {
      s = normalizeSeries(null);
      this.series.set(key, s);
    }
    const v = num(value);
    if (s.x.length && step <= s.x[s.x.length - 1]) return; // already have it (replayed event)
    s.x.push(step);
    s.y.push(v);
    s.lo.push(v);
    s.hi.push(v);
    if (Number.isNaN(v)) s.nan.push(step);
    else if (!Number.isFinite(v)) s.inf.push(step);
    // Too many raw points on top of the buckets: ask the server for a fresh downsampled view.
    if (s.x.length > this.buckets * 3 && !this.fetching) this.refetch();
    else this.scheduleDraw();
  }

  // The trainer's report of a non-finite step: shown on the marker's hover, and as a marker of its own.
  addNanReport(step, text) {
    this.reports.set(step, text);
    this.scheduleDraw();
  }

  scheduleDraw() {
    if (this.pending) return;
    this.pending = requestAnimationFrame(() => {
      this.pending = null;
      this.draw();
    });
  }

  setSmoothing(a) {
    this.smoothing = a;
    this.draw();
  }

  setLog(on) {
    this.logY = on;
    this.draw();
  }

  traces() {
    const traces = [];
    const markX = [];
    const markY = [];
    const markText = [];
    this.keys.forEach((key, i) => {
      const s = this.series.get(key);
      if (!s || !s.x.length) return;
      const color = COLORS[i % COLORS.length];
      const yaxis = this.axes[key] ?? "y";
      if (s.bucketed) {
        // min/max envelope of each bucket, so a downsampled spike is never hidden.
        traces.push({ x: s.x, y: s.hi.map(fin), mode: "lines", line: { width: 0 }, hoverinfo: "skip",
          showlegend: false, legendgroup: key, name: `${key} max`, yaxis });
        traces.push({ x: s.x, y: s.lo.map(fin), mode: "lines", line: { width: 0 }, fill: "tonexty",
          fillcolor: hexA(color, 0.15), hoverinfo: "skip", showlegend: false, legendgroup: key,
          name: `${key} min`, yaxis });
      }
      if (this.smoothing > 0) {
        traces.push({ x: s.x, y: s.y.map(fin), mode: "lines", line: { color: hexA(color, 0.3), width: 1 },
          hoverinfo: "skip", showlegend: false, legendgroup: key, name: `${key} raw`, yaxis });
      }
      const label = yaxis === "y2" && this.y2Title ? `${key} (right axis)` : key;
      traces.push({ x: s.x, y: ema(s.y, this.smoothing), mode: lineMode(s.x.length), name: label, legendgroup: key,
        line: { color, width: 2 }, marker: { color, size: 7 }, connectgaps: false, yaxis, meta: { key } });
      for (const [kind, steps] of [["NaN", s.nan], ["Inf", s.inf]]) {
        for (const st of steps) {
          markX.push(st);
          markY.push(yNear(s, st));
          markText.push(`${kind} in ${key} at step ${st}${this.reports.has(st) ? `<br>${this.reports.get(st)}` : ""}`);
        }
      }
    });
    // Steps the trainer reported as non-finite but never logged (nan_policy=skip drops the step's metrics).
    const first = this.keys.map((k) => this.series.get(k)).find((s) => s && s.x.length);
    for (const [st, text] of this.reports) {
      if (markX.includes(st) || !first) continue;
      markX.push(st);
      markY.push(yNear(first, st));
      markText.push(`non-finite at step ${st}<br>${text}`);
    }
    if (markX.length) {
      traces.push({ x: markX, y: markY, mode: "markers", name: "NaN/Inf", text: markText, hoverinfo: "text",
        marker: { symbol: "x", size: 12, color: "#c00", line: { width: 2, color: "#c00" } } });
    }
    return traces;
  }

  draw() {
    if (!window.Plotly) return;
    const layout = baseLayout({
      title: { text: this.title, font: { size: 14 }, x: 0.01 },
      height: this.height,
      // nticks: a log axis spanning less than a decade would otherwise label every minor tick.
      yaxis: { gridcolor: "#eee", type: this.logY ? "log" : "linear", exponentformat: "e", nticks: this.logY ? 6 : undefined,
        ...(this.yTitle ? { title: { text: this.yTitle, standoff: 4 } } : {}) },
      ...(this.y2Title ? { yaxis2: { overlaying: "y", side: "right", showgrid: false, exponentformat: "e",
        type: this.logY ? "log" : "linear", title: { text: this.y2Title, standoff: 4 }, automargin: true } } : {}),
      xaxis: { title: { text: "step", standoff: 4 }, gridcolor: "#eee", automargin: true,
        ...(this.range ? { range: this.range } : {}) },
      uirevision: "keep", // keep the user's zoom across live redraws
    });
    const traces = this.traces();
    if (this.logY) {
      // Over two decades or more: a label per power of ten only (else plotly labels the 2s and 5s between them).
      const ys = traces.filter((t) => t.meta?.key && (t.yaxis ?? "y") === "y").flatMap((t) => t.y)
        .filter((v) => isFiniteNum(v) && v > 0);
      if (ys.length && Math.log10(Math.max(...ys) / Math.min(...ys)) >= 2) layout.yaxis.dtick = 1;
    }
    // A short run: whole steps only (plotly would put ticks at 1.5, 2.5, ...).
    const xs = traces.flatMap((t) => [t.x[0], t.x[t.x.length - 1]]).filter((v) => v != null);
    if (xs.length && Math.max(...xs) - Math.min(...xs) <= 12) layout.xaxis.dtick = 1;
    if (!traces.length) {
      layout.annotations = [{ text: "no data yet", showarrow: false, xref: "paper", yref: "paper", x: 0.5, y: 0.5,
        font: { color: "#888" } }];
    }
    this.div.querySelector(":scope > .skeleton")?.remove(); // the placeholder shown until the first draw
    this.drawing = true;
    window.Plotly.react(this.div, traces, layout, PLOT_CONFIG).finally(() => (this.drawing = false));
  }
}

function fin(v) {
  return isFiniteNum(v) ? v : null;
}

export function hexA(hex, alpha) {
  const n = parseInt(hex.slice(1), 16);
  return `rgba(${(n >> 16) & 255},${(n >> 8) & 255},${n & 255},${alpha})`;
}

// mean and population std of arrays at each index, ignoring missing values.
export function meanStd(columns) {
  const mean = [];
  const std = [];
  const len = Math.max(0, ...columns.map((c) => c.length));
  for (let i = 0; i < len; i++) {
    const vals = columns.map((c) => c[i]).filter(isFiniteNum);
    if (!vals.length) {
      mean.push(null);
      std.push(null);
      continue;
    }
    const m = vals.reduce((a, b) => a + b, 0) / vals.length;
    mean.push(m);
    std.push(Math.sqrt(vals.reduce((a, b) => a + (b - m) ** 2, 0) / vals.length));
  }
  return { mean, std };
}
