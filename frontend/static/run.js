// Run page: header and actions, NaN banner, live loss/grad/DPGMM charts, evaluation, videos, checkpoints, logs.
import { api, apiOr, subscribe } from "./api.js";
import { MetricChart } from "./charts.js";
import { latestLoss, progressOf } from "./runs.js";
import { ArtifactsPanel, EvalPanel, LogPanel, configTable } from "./runpanels.js";
import { lineageBox } from "./sweeps.js";
import { clear, debounce, envName, errorText, fmtDuration, keepFocus, fmtNum, fmtTime, h, runDuration, statusBadge, toast } from "./ui.js";

const LOSS_KEYS = ["loss", "loss/recon", "loss/kl_z", "loss/kl_sticks", "loss/kl_alpha", "loss/context_pred", "val/loss"];
const CHART_GROUPS = [
  ["losses", "Loss terms (total and each term)", LOSS_KEYS, true],
  ["beta", "β (KL weight)", ["beta"], false],
  ["lr", "Learning rate", ["lr"], false],
  ["grads", "Gradient norm per module", ["grad_norm", "grad_norm/encoder", "grad_norm/context", "grad_norm/posterior",
    "grad_norm/prior", "grad_norm/dynamics", "grad_norm/decoder"], true],
  ["dpgmm", "DPGMM prior: effective components, entropy of π, α",
    ["dpgmm/effective_components", "dpgmm/pi_entropy", "dpgmm/alpha"], true],
  ["perf", "Speed: step time (s), clips/s, epoch time (s)", ["perf/step_time", "perf/clips_per_s", "perf/epoch_time"], true],
];
const ACTIVE = ["queued", "running"];

export async function mount(root, { params }) {
  const id = Number(params[0]);
  let run = await api(`/runs/${id}`);
  const charts = new Map();
  const header = h("div");
  const banner = h("div#nan-banner");
  const chartsBox = h("div.grid2");
  const evalPanel = new EvalPanel(id);
  const artifacts = new ArtifactsPanel(id, evalPanel);
  const logs = new LogPanel(id);
  const cfgBox = h("div.card", h("h2", "Configuration"), configTable(run.config || {}));
  let alerts = [];

  const smooth = h("input#ema", { type: "range", min: 0, max: 0.99, step: 0.01, value: 0, "aria-label": "EMA smoothing" });
  const smoothVal = h("span.small", "0.00");
  const logBox = h("input#logy", { type: "checkbox", "aria-label": "Logarithmic y axis" });
  smooth.addEventListener("input", () => {
    smoothVal.textContent = Number(smooth.value).toFixed(2);
    for (const c of charts.values()) c.setSmoothing(Number(smooth.value));
  });
  logBox.addEventListener("change", () => {
    for (const [name, c] of charts) if (name !== "beta" && name !== "dpgmm") c.setLog(logBox.checked);
  });

  const train = run.kind === "train"; // a collection has no curves, evaluations or videos
  clear(root, header, banner,
    train && h("div.card", h("div.controls",
      h("h2", { style: { margin: 0 } }, "Curves"),
      h("label", "EMA smoothing ", smooth, " ", smoothVal),
      h("label", logBox, " log scale"),
      h("span.small.muted", "Drag to zoom (finer data is fetched); double-click to reset. ✕ marks non-finite steps."))),
    chartsBox,
    train && h("div.grid2", evalPanel.el, artifacts.videoEl),
    h("div.grid2", artifacts.el, logs.el),
    cfgBox);

  function renderHeader() {
    keepFocus(header, drawHeader);
  }

  function drawHeader() {
    const { done, total, epoch, epochs, unit } = progressOf(run);
    const pct = total ? Math.min(100, (100 * (done ?? 0)) / total) : 0;
    const canCancel = ACTIVE.includes(run.status);
    const finished = ["failed", "cancelled", "lost", "succeeded"].includes(run.status);
    clear(header,
      h("div.head",
        h("h1", run.name || `run ${id}`, h("span.muted", { style: { fontWeight: 400 } }, ` #${id}`)),
        statusBadge(run.status),
        openAlerts() ? h("a.badge.alert-badge", { href: "#nan-banner" }, `⚠ ${openAlerts()} open alert(s)`) : null,
        h("span.spacer"),
        h("button.danger#btn-cancel", { type: "button", disabled: !canCancel, onclick: () => act("cancel") }, "Cancel"),
        h("button#btn-retry", { type: "button", disabled: !finished, title: "Start again from scratch as a new run",
          onclick: () => act("retry") }, "Retry"),
        run.kind === "train" && h("button#btn-resume", { type: "button", disabled: !finished || run.status === "succeeded",
          title: "Continue from the last checkpoint", onclick: () => act("resume") }, "Resume")),
      h("div.card", h("div.grid3",
        h("dl.kv",
          h("dt", "Kind"), h("dd", `${run.kind} · tier ${run.tier}${run.preset ? ` · ${run.preset}` : ""}`),
          h("dt", "Environment"), h("dd", envName(run)),
          h("dt", "Seed"), h("dd", String(run.seed ?? "—")),
          h("dt", "Tags"), h("dd", (run.tags || []).join(", ") || "—")),
        h("dl.kv",
          h("dt", "Worker"), h("dd#worker", run.worker_host ?? "—", run.worker_pid ? ` (pid ${run.worker_pid})` : ""),
          h("dt", "GPU"), h("dd#gpu", run.worker_gpu ?? "none (CPU)"),
          h("dt", "Dataset"), h("dd", run.dataset_id ? h("a", { href: "/datasets", title: `dataset #${run.dataset_id}` },
            run.config?.data_path ?? `#${run.dataset_id}`) : run.config?.data_path ?? "—",
          run.waits_for_id ? h("div.small", "waits for its collection: ",
            h("a", { href: `/runs/${run.waits_for_id}` }, `run ${run.waits_for_id}`)) : null)),
        h("dl.kv",
          h("dt", "Created"), h("dd", fmtTime(run.created_at)),
          h("dt", "Started"), h("dd", fmtTime(run.started_at)),
          h("dt", "Duration"), h("dd#duration", fmtDuration(runDuration(run))),
          run.kind === "train" ? [h("dt", "Latest loss"), h("dd#latest-loss", fmtNum(latestLoss(run)))]
            : [h("dt", "Frames/s"), h("dd", fmtNum(run.progress?.["frames/s"]))])),
      total ? h("div", { style: { marginTop: "10px" } },
        h("span.small#progress-text", run.kind === "train" && epochs
          ? `epoch ${epoch ?? "?"} of ${epochs} · step ${done ?? 0} of ${total}`
          : `${done ?? 0} of ${total} ${unit}s`),
        h("div.progress", h("span", { style: { width: `${pct}%` } }))) : null,
      lineageBox(run),
      run.error && run.status === "failed" ? h("pre.small#run-error", { style: { marginTop: "10px" } }, run.error)
        : run.error ? h("p.small.muted", { style: { margin: "8px 0 0" } }, `Note: ${run.error}`) : null));
  }

  async function act(what) {
    try {
      const r = await api(`/runs/${id}/${what}`, { method: "POST" });
      const newId = r && r.id !== undefined && r.id !== id ? r.id : null;
      toast(newId ? `${what === "retry" ? "Retrying" : "Resuming"} as run ${newId}.`
        : "Cancel requested: the run saves a checkpoint and stops within seconds.");
      if (newId) location.href = `/runs/${newId}`;
      else await reloadRun();
    } catch (e) {
      toast(`${what} failed: ${errorText(e)}`, "error");
    }
  }

  async function reloadRun() {
    run = await api(`/runs/${id}`);
    renderHeader();
  }

  // The alert rows (one per run, kind and key) plus the trainer's own reports (terms, modules) from the history.
  async function loadAlerts() {
    const [rows, reports] = await Promise.all([apiOr(`/runs/${id}/alerts`, []),
      apiOr(`/runs/${id}/history`, [], { query: { kind: "alert" } })]);
    const payloads = reports.map((r) => r.payload ?? r).filter((p) => p.terms || p.modules);
    alerts = rows.map((a) => {
      const same = payloads.filter((p) => p.kind === a.kind || p.key === a.key);
      const report = same.find((p) => p.step === a.step) ?? same[same.length - 1];
      return report ? { ...a, report } : a;
    });
    renderBanner();
    renderHeader();
  }

  function renderBanner() {
    const bad = alerts.filter((a) => (a.kind === "nan" || a.kind === "inf") && !a.acknowledged);
    const other = alerts.filter((a) => !(a.kind === "nan" || a.kind === "inf") && !a.acknowledged);
    for (const a of bad) {
      const c = charts.get("losses");
      if (c && a.step != null) c.addNanReport(a.step, reportText(a));
    }
    clear(banner,
      bad.length ? h("div.banner.nan", { role: "alert" },
        h("h2", `Non-finite values: ${bad.length} alert${bad.length > 1 ? "s" : ""}`),
        bad.map((a) => h("div.row",
          h("span", h("b", `${a.kind.toUpperCase()} `), `in ${a.key || "?"} at step ${a.step ?? "?"}`,
            a.report?.epoch != null ? ` (epoch ${a.report.epoch})` : ""),
          a.report ? h("span.small", h("b", "Trainer's report: "), reportText(a), h("br"), h("span.muted", a.report.message))
            : h("span.small", a.message),
          h("button", { type: "button", onclick: () => ack(a) }, "Acknowledge")))) : null,
      other.map((a) => h("div.banner.info", h("b", `${a.kind}: `), a.message,
        " ", h("button", { type: "button", onclick: () => ack(a) }, "Acknowledge"))));
  }

  function openAlerts() {
    return alerts.filter((a) => !a.acknowledged).length;
  }

  function reportText(a) {
    const r = a.report;
    if (!r) return a.message;
    return [r.terms?.length ? `loss terms: ${r.terms.join(", ")}` : "",
      r.modules?.length ? `non-finite gradients in: ${r.modules.join(", ")}` : ""].filter(Boolean).join(" · ") || r.message;
  }

  async function ack(a) {
    try {
      await api(`/alerts/${a.id}/ack`, { method: "POST" });
      a.acknowledged = true;
      renderBanner();
      renderHeader();
    } catch (e) {
      toast(`Could not acknowledge: ${errorText(e)}`, "error");
    }
  }

  async function buildCharts() {
    const meta = await apiOr(`/runs/${id}/metrics`, {});
    const known = new Set(Array.isArray(meta) ? meta.map((m) => m.key) : Object.keys(meta.keys ?? meta));
    // A training run shows every panel from the start (they fill live); a collection only what it has.
    for (const [name, title, keys, multi] of CHART_GROUPS) {
      if (run.kind !== "train" && !keys.some((k) => known.has(k))) continue;
      const div = h("div.chart", { id: `chart-${name}`, role: "img", "aria-label": `${title}: ${keys.join(", ")}` });
      chartsBox.append(h("div.card", div));
      const c = new MetricChart(div, id, keys, { title, height: multi ? 320 : 240 });
      charts.set(name, c);
    }
    await Promise.all([...charts.values()].map((c) => c.load()));
  }

  function onMetrics(d) {
    const pts = d.points ?? (d.key ? [d] : []);
    for (const p of pts) {
      for (const c of charts.values()) c.push(p.key, p.step, p.value);
      if (p.key === "loss") run.latest = { ...(run.latest || {}), loss: [p.step, p.value] };
    }
    const el = document.getElementById("latest-loss");
    if (el) el.textContent = fmtNum(latestLoss(run));
  }

  // Subscribe before the first fetch so no point falls between the two; points wait until the charts exist
  // (a replayed point the fetch already had is ignored by the chart).
  let pending = [];
  const reloadLog = debounce(() => logs.load(), 300); // the server merges log lines, statuses and alerts
  subscribe(`/runs/${id}/events`, {
    metrics: (d) => (pending ? pending.push(d) : onMetrics(d)),
    // The server is subscribed from here on. Charts fetched before this may lack points sent in between.
    ready: () => {
      if (!pending) for (const c of charts.values()) c.refetch();
    },
    status: () => {
      reloadRun();
      reloadLog();
    },
    progress: (d) => {
      run.progress = d.progress ?? run.progress;
      renderHeader();
    },
    alert: () => {
      loadAlerts().then(reloadRun);
      reloadLog();
    },
    alert_ack: () => loadAlerts(),
    artifact: () => artifacts.load(),
    eval: (d) => evalPanel.add(d.payload ?? d),
    log: reloadLog,
  });
  renderHeader();
  await buildCharts();
  for (const d of pending) onMetrics(d);
  pending = null;
  await Promise.all([loadAlerts(), evalPanel.load(), artifacts.load(), logs.load()]);
  // Tick the duration.
  setInterval(() => {
    const el = document.getElementById("duration");
    if (el && ACTIVE.includes(run.status)) el.textContent = fmtDuration(runDuration(run));
  }, 5000);
}
