// Run page: header and actions, lineage, NaN banner, live loss/grad/DPGMM/speed charts, evaluation, videos,
// checkpoints, logs. Every panel shows a loading state at once and is fetched in parallel; only charts wait for
// plotly. A queued run shows where it waits instead of empty axes.
import { api, subscribe } from "./api.js";
import { ensurePlotly, MetricChart } from "./charts.js";
import { lineageBox, loadLineage } from "./lineage.js";
import { ArtifactsPanel, EvalPanel, LogPanel, configTable, loading } from "./runpanels.js";
import { etaOf, latestLoss, progressOf, progressText } from "./runsummary.js";
import { clear, debounce, envName, errorText, fmtDuration, fmtNum, fmtTime, h, keepFocus, runDuration, statusBadge, toast } from "./ui.js";

const TERMS = ["recon", "kl_z", "kl_sticks", "kl_alpha", "context_pred", "overshoot"]; // overshoot: newer runs only
// [id, title, keys, options]
const CHART_GROUPS = [
  ["losses", "Training loss (total and each term)", ["loss", ...TERMS.map((t) => `loss/${t}`)], { log: true }],
  ["val", "Validation loss (total and each term, per epoch)", ["val/loss", ...TERMS.map((t) => `val/loss/${t}`)], { log: true }],
  ["beta", "β (KL weight)", ["beta"], {}],
  ["lr", "Learning rate", ["lr"], {}],
  ["grads", "Gradient norm per module", ["grad_norm", "grad_norm/encoder", "grad_norm/context", "grad_norm/posterior",
    "grad_norm/prior", "grad_norm/dynamics", "grad_norm/decoder"], { log: true }],
  ["dpgmm", "DPGMM prior: effective components, entropy of π, α",
    ["dpgmm/effective_components", "dpgmm/pi_entropy", "dpgmm/alpha"], {}],
  ["perf", "Speed per step", ["perf/step_time", "perf/clips_per_s"],
    { axes: { "perf/clips_per_s": "y2" }, yTitle: "seconds per step", y2Title: "clips per second" }],
  ["epoch", "Time per epoch", ["perf/epoch_time"], { yTitle: "seconds per epoch" }],
];
const ACTIVE = ["queued", "running"];
// Charts of per-epoch series: they appear with their first point (an epoch end), not as empty axes before it.
const LAZY = new Set(["val", "epoch"]);
const FINISHED = ["failed", "cancelled", "lost", "succeeded"];

export async function mount(root, { params }) {
  const id = Number(params[0]);
  clear(root, h("div.head", h("h1", `run ${id}`), h("span.badge", "loading…")), loading("Loading the run…"));
  let run = await api(`/runs/${id}`);
  const train = run.kind === "train"; // a collection has no curves, evaluations or videos
  const charts = new Map();
  const header = h("div");
  const lineage = h("div");
  const banner = h("div#nan-banner");
  const waiting = h("div");
  const chartsBox = h("div.grid2#charts");
  const evalPanel = new EvalPanel(id);
  const artifacts = new ArtifactsPanel(run, evalPanel);
  const logs = new LogPanel(id);
  const cfgBox = h("div.card", h("h2", "Configuration"), configTable(run.config));
  let alerts = [];
  let stepTimes = []; // the last step times seen live: the time left uses their median
  let rel = { parent: null, children: [], group: null };
  let queueInfo = null; // where a queued run waits (GET /api/queue)

  const smooth = h("input#ema", { type: "range", min: 0, max: 0.99, step: 0.01, value: 0, "aria-label": "EMA smoothing" });
  const smoothVal = h("span.small", "0.00");
  // Log scale by default: on a linear axis the reconstruction term flattens every KL term to zero.
  const logBox = h("input#logy", { type: "checkbox", checked: true, "aria-label": "Logarithmic y axis for losses and gradients" });
  smooth.addEventListener("input", () => {
    smoothVal.textContent = Number(smooth.value).toFixed(2);
    for (const c of charts.values()) c.setSmoothing(Number(smooth.value));
  });
  logBox.addEventListener("change", () => {
    for (const [name, c] of charts) if (CHART_GROUPS.find((g) => g[0] === name)[3].log) c.setLog(logBox.checked);
  });
  const controls = train ? h("div.card#curve-controls", h("div.controls",
    h("h2.inline", "Curves"),
    h("label", "EMA smoothing ", smooth, " ", smoothVal),
    h("label", logBox, " log scale (losses, gradients)"),
    h("span.small.muted", "Drag to zoom (finer data is fetched); double-click to reset. ✕ marks non-finite steps; ",
      "dots mark series with few points."))) : null;

  clear(root, header, lineage, banner, waiting, controls, chartsBox,
    train && h("div.grid2", evalPanel.el, artifacts.videoEl),
    h("div.grid2", artifacts.el, logs.el),
    cfgBox);

  function renderHeader() {
    keepFocus(header, drawHeader);
  }

  // Made once and updated in place: the header is redrawn on every progress event, and a button replaced between
  // a press and its release loses the click (a Cancel that would not take while a run logged every step).
  const buttons = {
    cancel: h("button.danger#btn-cancel", { type: "button", onclick: () => act("cancel") }, "Cancel"),
    retry: h("button#btn-retry", { type: "button", title: "Start again from scratch as a new run",
      onclick: () => act("retry") }, "Retry"),
    resume: train ? h("button#btn-resume", { type: "button", onclick: () => act("resume") }, "Resume") : null,
  };

  function drawHeader() {
    const { done, total } = progressOf(run);
    const pct = total ? Math.min(100, (100 * (done ?? 0)) / total) : 0;
    const canCancel = ACTIVE.includes(run.status);
    const finished = FINISHED.includes(run.status);
    const hasCkpt = artifacts.checkpoints().length > 0;
    const resumeWhy = !finished ? "Only an ended run can be resumed (cancel it first)"
      : run.status === "succeeded" ? "The run finished: retry to train it again"
      : !artifacts.loaded ? "Checking for a checkpoint…"
      : !hasCkpt ? "No checkpoint was saved before it ended: retry it from scratch instead"
      : "Continue from the last checkpoint as a new run";
    const eta = etaOf(run, Date.now(), stepTimes);
    const open = openAlertGroups().length;
    buttons.cancel.disabled = !canCancel;
    buttons.retry.disabled = !finished;
    if (buttons.resume) {
      buttons.resume.disabled = !finished || run.status === "succeeded" || !hasCkpt;
      buttons.resume.title = resumeWhy;
      buttons.resume.setAttribute("aria-label", `Resume: ${resumeWhy}`);
    }
    clear(header,
      h("div.head",
        h("h1", run.name, h("span.muted.light", ` #${id}`)),
        statusBadge(run.status),
        open ? h("a.badge.alert-badge", { href: "#nan-banner" }, `⚠ ${open} open alert${open > 1 ? "s" : ""}`) : null,
        h("span.spacer"),
        buttons.cancel, buttons.retry, buttons.resume),
      h("div.card", h("div.grid3",
        h("dl.kv",
          h("dt", "Kind"), h("dd", `${run.kind} · tier ${run.tier}${run.preset ? ` · ${run.preset}` : ""}`),
          h("dt", "Environment"), h("dd", envName(run)),
          h("dt", "Seed"), h("dd", String(run.seed)),
          h("dt", "Tags"), h("dd", run.tags.join(", ") || "—")),
        h("dl.kv",
          h("dt", "Worker"), h("dd#worker", run.worker_host ?? "—", run.worker_pid ? ` (pid ${run.worker_pid})` : ""),
          h("dt", "GPU"), h("dd#gpu", run.worker_gpu ?? (run.worker_host ? "none (CPU)" : "—")),
          h("dt", "Dataset"), h("dd", run.dataset_id ? h("a", { href: "/datasets", title: `dataset #${run.dataset_id}` },
            run.config.data_path) : run.config.data_path ?? "—",
          run.waits_for_id ? h("div.small", "waits for its collection: ",
            h("a", { href: `/runs/${run.waits_for_id}` }, `run ${run.waits_for_id}`)) : null)),
        h("dl.kv",
          h("dt", "Created"), h("dd", fmtTime(run.created_at)),
          h("dt", "Started"), h("dd", fmtTime(run.started_at)),
          h("dt", "Duration"), h("dd#duration", fmtDuration(runDuration(run))),
          h("dt", "Time left"), h("dd#eta", { title: eta ? `estimated from ${eta.basis}` : "" },
            eta ? [`≈ ${fmtDuration(eta.seconds)} `, h("span.small.muted", `(from ${eta.basis})`)]
              : run.status === "running" ? h("span.muted", "measuring…") : "—"),
          train ? [h("dt", "Latest loss"), h("dd#latest-loss", fmtNum(latestLoss(run)))]
            : [h("dt", "Frames/s"), h("dd", fmtNum(run.progress["frames/s"]))])),
      total ? h("div.progress-row", h("span.small#progress-text", progressText(run)),
        h("div.progress", h("span", { style: { width: `${pct}%` } }))) : null,
      run.error && run.status === "failed" ? h("pre.small#run-error", run.error)
        : run.error ? h("p.small.muted.note", `Note: ${run.error}`) : null));
  }

  function renderLineage() {
    clear(lineage, lineageBox(run, rel));
  }

  async function act(what) {
    try {
      const r = await api(`/runs/${id}/${what}`, { method: "POST" });
      if (what === "cancel") {
        toast("Cancel requested: the run saves a checkpoint and stops within seconds.");
        await reloadRun();
        return;
      }
      toast(`${what === "retry" ? "Retrying" : "Resuming"} as run ${r.id}.`);
      location.href = `/runs/${r.id}`;
    } catch (e) {
      toast(`${what} failed: ${errorText(e)}`, "error");
    }
  }

  async function reloadRun() {
    const before = run.latest;
    run = await api(`/runs/${id}`);
    // Keep a newer value this page already got live (a reply can be a moment older than the event stream).
    for (const [k, v] of Object.entries(before)) {
      if (!run.latest[k] || run.latest[k][0] < v[0]) run.latest[k] = v;
    }
    artifacts.run = run;
    renderHeader();
    if (run.status !== "queued") queueInfo = null;
    renderWaiting();
    if (run.status !== "queued" && !charts.size) buildCharts().catch(showChartError);
    rel = await loadLineage(run);
    renderLineage();
  }

  // A queued run: which queue, at what position, or which collection it waits for; no empty axes.
  async function loadQueue() {
    if (run.status !== "queued") return;
    try {
      queueInfo = await api("/queue");
    } catch {
      queueInfo = null;
    }
    renderWaiting();
  }

  function renderWaiting() {
    if (controls) controls.hidden = run.status === "queued"; // nothing to smooth or scale yet
    if (run.status !== "queued") {
      clear(waiting);
      return;
    }
    let where = "Waiting for a worker.";
    if (run.held) where = "Held by its sweep until a slot under the sweep's parallel limit frees up.";
    else if (run.waits_for_id) {
      where = ["Waiting for its dataset: collection ", h("a", { href: `/runs/${run.waits_for_id}` }, `run ${run.waits_for_id}`),
        " must finish first; the run is queued for training then."];
    } else if (queueInfo) {
      for (const [name, q] of Object.entries(queueInfo.queues)) {
        const mine = q.waiting.find((w) => w.run_id === id);
        if (mine) {
          where = [`In queue “${name}” at position ${mine.position} of ${q.waiting.length}. `,
            h("a", { href: "/queue" }, "See the queue"), "."];
        }
      }
    }
    clear(waiting, h("div.card.queued-state#queued-state", h("h2", "Queued: not started yet"), h("p", where),
      h("p.small.muted", "Curves, evaluations and videos appear here live once a worker starts it.")));
  }

  // The alert rows (one per run, kind and key) plus the trainer's own reports (terms, modules) from the history.
  async function loadAlerts() {
    const [rows, reports] = await Promise.all([api(`/runs/${id}/alerts`),
      api(`/runs/${id}/history`, { query: { kind: "alert" } })]);
    const payloads = reports.map((r) => r.payload).filter((p) => p.terms || p.modules);
    alerts = rows.map((a) => {
      const same = payloads.filter((p) => p.kind === a.kind || p.key === a.key);
      const report = same.find((p) => p.step === a.step) ?? same[same.length - 1];
      return report ? { ...a, report } : a;
    });
    renderBanner();
    renderHeader();
  }

  // One non-finite step raises an alert per key (loss, loss/kl_z, ...) and one trainer report: shown once.
  function openAlertGroups() {
    const groups = new Map();
    for (const a of alerts.filter((x) => !x.acknowledged)) {
      const nonfinite = a.kind === "nan" || a.kind === "inf";
      const k = nonfinite ? `nf|${a.step}` : `${a.kind}|${a.id}`;
      if (!groups.has(k)) groups.set(k, { nonfinite, step: a.step, alerts: [], report: null });
      const g = groups.get(k);
      g.alerts.push(a);
      g.report = g.report ?? a.report ?? null;
    }
    return [...groups.values()];
  }

  function renderBanner() {
    const groups = openAlertGroups();
    const bad = groups.filter((g) => g.nonfinite);
    const other = groups.filter((g) => !g.nonfinite);
    for (const g of bad) {
      const c = charts.get("losses");
      if (c && g.step != null) c.addNanReport(g.step, reportText(g));
    }
    clear(banner,
      bad.length ? h("div.banner.nan", { role: "alert" },
        h("h2", `Non-finite values at ${bad.length} step${bad.length > 1 ? "s" : ""}`),
        bad.map((g) => h("div.row",
          h("span", h("b", `${[...new Set(g.alerts.map((a) => a.kind.toUpperCase()))].join("/")} `),
            `at step ${g.step ?? "?"} in ${g.alerts.map((a) => a.key || "?").join(", ")}`,
            g.report?.epoch != null ? ` (epoch ${g.report.epoch})` : ""),
          g.report ? h("span.small", h("b", "Trainer's report: "), reportText(g), h("br"), h("span.muted", g.report.message))
            : h("span.small", g.alerts[0].message),
          h("button", { type: "button", onclick: () => ack(g.alerts) }, "Acknowledge")))) : null,
      other.map((g) => h("div.banner.info", h("b", `${g.alerts[0].kind}: `), g.alerts[0].message,
        " ", h("button", { type: "button", onclick: () => ack(g.alerts) }, "Acknowledge"))));
  }

  function reportText(g) {
    const r = g.report;
    if (!r) return g.alerts[0].message;
    return [r.terms?.length ? `loss terms: ${r.terms.join(", ")}` : "",
      r.modules?.length ? `non-finite gradients in: ${r.modules.join(", ")}` : ""].filter(Boolean).join(" · ") || r.message;
  }

  async function ack(list) {
    try {
      await Promise.all(list.map((a) => api(`/alerts/${a.id}/ack`, { method: "POST" })));
      for (const a of list) a.acknowledged = true;
      renderBanner();
      renderHeader();
    } catch (e) {
      toast(`Could not acknowledge: ${errorText(e)}`, "error");
    }
  }

  function showChartError(e) {
    chartsBox.prepend(h("div.error-box", "Could not draw the charts: ", errorText(e)));
  }

  let building = null;
  function buildCharts() {
    if (building) return building;
    building = (async () => {
      const meta = await api(`/runs/${id}/metrics`);
      const known = new Set(meta.map((m) => m.key));
      // A training run shows its per-step panels from the start (they fill live); a collection only what it has;
      // the per-epoch charts wait for their first point.
      for (const [name, title, keys, opts] of CHART_GROUPS) {
        if ((!train || LAZY.has(name)) && !keys.some((k) => known.has(k))) continue;
        addChart(name, title, keys, opts).setPresent(keys.filter((k) => known.has(k)));
      }
      await ensurePlotly();
      await Promise.all([...charts.values()].map((c) => c.load()));
      renderBanner(); // NaN markers need the loss chart
    })();
    return building;
  }

  function addChart(name, title, keys, opts) {
    const div = h("div.chart", { id: `chart-${name}`, role: "img", "aria-label": `${title}: ${keys.join(", ")}` },
      loading(`${title}: loading…`));
    const card = h("div.card", div);
    const after = CHART_GROUPS.findIndex((g) => g[0] === name);
    const next = [...chartsBox.children].find((el) => CHART_GROUPS.findIndex((g) => `chart-${g[0]}` === el.firstChild?.id) > after);
    chartsBox.insertBefore(card, next ?? null);
    const c = new MetricChart(div, id, keys, { title, height: keys.length > 2 ? 320 : 260, logY: Boolean(opts.log) && logBox.checked,
      axes: opts.axes, yTitle: opts.yTitle, y2Title: opts.y2Title });
    charts.set(name, c);
    return c;
  }

  function onMetrics(d) {
    for (const p of d.points) {
      if (p.key === "perf/step_time" && Number.isFinite(Number(p.value))) stepTimes = [...stepTimes, Number(p.value)].slice(-20);
      const old = run.latest[p.key];
      if (!old || p.step >= old[0]) run.latest[p.key] = [p.step, p.value];
      // A per-epoch chart appears with its first point.
      const lazy = building && CHART_GROUPS.find((g) => LAZY.has(g[0]) && !charts.has(g[0]) && g[2].includes(p.key));
      if (lazy) addChart(...lazy).load();
      for (const c of charts.values()) c.push(p.key, p.step, p.value);
    }
    const el = document.getElementById("latest-loss");
    if (el) el.textContent = fmtNum(latestLoss(run));
    if (d.points.some((p) => p.key.startsWith("perf/"))) renderHeader(); // the ETA's inputs
  }

  // Subscribe before the first fetch so no point falls between the two; points wait until the charts exist
  // (a replayed point the fetch already had is ignored by the chart).
  let pending = [];
  const reloadLog = debounce(() => logs.load(), 300); // the server merges log lines, statuses and alerts
  subscribe(`/runs/${id}/events`, {
    metrics: (d) => (pending ? pending.push(d) : onMetrics(d)),
    // The server is subscribed from here on. Charts fetched before this may lack points sent in between.
    ready: () => {
      if (!pending) {
        api(`/runs/${id}/metrics`).then((meta) => {
          const known = new Set(meta.map((m) => m.key));
          for (const c of charts.values()) {
            c.setPresent(c.keys.filter((k) => known.has(k)));
            c.refetch();
          }
        }).catch(() => {});
      }
      // A status change in that gap (a queued run that started) would be missed: read the run again; the same
      // for an alert raised between the first fetch of the alerts and now (its banner would never show).
      reloadRun();
      loadAlerts().catch(() => {});
      reloadLog();
    },
    status: () => {
      reloadRun();
      reloadLog();
    },
    progress: (d) => {
      run.progress = d.progress;
      renderHeader();
    },
    alert: () => {
      loadAlerts().then(reloadRun);
      reloadLog();
    },
    alert_ack: () => loadAlerts(),
    artifact: () => artifacts.load().then(renderHeader),
    eval: (d) => evalPanel.add(d.payload),
    log: reloadLog,
  });
  renderHeader();
  renderWaiting();
  artifacts.onLoad = renderHeader; // Resume needs to know whether a checkpoint exists
  const panelError = (el, what) => (e) => clear(el, h("p.error-box", `Could not load ${what}: `, errorText(e)));
  // Everything at once: the panels do not wait for the charts, nor the charts for plotly before fetching keys.
  const jobs = [
    loadAlerts().catch((e) => toast(`Could not load alerts: ${errorText(e)}`, "error")),
    artifacts.load().catch(panelError(artifacts.table, "the files")),
    logs.load().catch(panelError(logs.pre, "the log")),
    loadLineage(run).then((r) => {
      rel = r;
      renderLineage();
    }),
    loadQueue(),
  ];
  if (train) jobs.push(evalPanel.load().catch(panelError(evalPanel.summary, "the evaluations")));
  if (run.status !== "queued") {
    jobs.push(buildCharts().then(() => {
      for (const d of pending) onMetrics(d);
      pending = null;
    }).catch(showChartError));
  } else {
    // Charts are built when the run starts (reloadRun); points before that are in the first fetch.
    pending = null;
  }
  await Promise.all(jobs);
  if (pending) {
    for (const d of pending) onMetrics(d);
    pending = null;
  }
  // Tick the duration and the queue position.
  setInterval(() => {
    const el = document.getElementById("duration");
    if (el && ACTIVE.includes(run.status)) el.textContent = fmtDuration(runDuration(run));
    if (run.status === "queued" && document.visibilityState === "visible") loadQueue();
  }, 5000);
}
