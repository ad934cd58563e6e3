// Panels of the run page: evaluation per horizon step, rollout videos, checkpoints, log tail, config.
import { apiOr } from "./api.js";
import { baseLayout, ensurePlotly, PLOT_CONFIG } from "./charts.js";
import { clear, fmtBytes, fmtNum, h } from "./ui.js";

function listOf(resp) {
  return Array.isArray(resp) ? resp : resp?.items ?? resp?.events ?? [];
}

export function downloadUrl(artifact) {
  return `/api/artifacts/${artifact.id}/download`;
}

// Rollout error per horizon step against the copy-last-frame baseline, for a chosen evaluation.
export class EvalPanel {
  constructor(runId) {
    this.runId = runId;
    this.evals = []; // eval payloads, oldest first
    this.pinned = false; // the user picked an evaluation: stop following the newest
    this.select = h("select#eval-step", { "aria-label": "Evaluation step", onchange: () => {
      this.pinned = true;
      this.choose(this.select.value);
    } });
    this.metric = h("select", { "aria-label": "Error measure", onchange: () => this.draw() },
      h("option", { value: "mse" }, "MSE (lower is better)"), h("option", { value: "psnr" }, "PSNR dB (higher is better)"));
    this.plot = h("div.chart#eval-chart");
    this.summary = h("p.small");
    this.onChoose = null;
    this.el = h("div.card", h("div.controls", h("h2", { style: { margin: 0 } }, "Evaluation: open-loop rollout"),
      this.select, this.metric), this.summary, this.plot);
  }

  async load() {
    const resp = await apiOr(`/runs/${this.runId}/history`, [], { query: { kind: "eval" } });
    this.evals = listOf(resp).map((e) => e.payload ?? e);
    await ensurePlotly();
    this.fill();
  }

  add(payload) {
    if (this.evals.some((e) => e.step === payload.step)) return;
    this.evals.push(payload);
    this.fill();
  }

  fill() {
    const cur = this.select.value;
    clear(this.select, this.evals.map((e, i) => h("option", { value: i }, `epoch ${e.epoch} · step ${e.step}`)));
    this.select.value = this.pinned && cur !== "" ? cur : String(this.evals.length - 1);
    this.draw();
  }

  choose(i, fromVideo = false) {
    if (fromVideo) this.pinned = true;
    this.select.value = String(i);
    this.draw();
    if (!fromVideo && this.onChoose) this.onChoose(this.evals[Number(i)]);
  }

  draw() {
    const e = this.evals[Number(this.select.value)];
    this.select.hidden = this.metric.hidden = !e;
    if (!e) {
      clear(this.summary, "No evaluation yet: the trainer evaluates every `eval_every` epochs.");
      window.Plotly?.purge(this.plot);
      return;
    }
    const m = this.metric.value;
    const H = e.horizon ?? e[`rollout_${m}`].map((_, i) => i + 1);
    const model = e[`rollout_${m}`] ?? [];
    const base = e[`baseline_${m}`] ?? [];
    const mean = (a) => a.reduce((s, v) => s + v, 0) / Math.max(1, a.length);
    const better = m === "mse" ? mean(model) < mean(base) : mean(model) > mean(base);
    clear(this.summary, `Context ${e.context_frames ?? "?"} frames; reconstruction MSE ${fmtNum(e.recon_mse)}, `,
      `PSNR ${fmtNum(e.psnr)} dB, SSIM ${fmtNum(e.ssim)}. Mean rollout ${m.toUpperCase()} ${fmtNum(mean(model))} vs `,
      `baseline ${fmtNum(mean(base))}: `, h("b", { style: { color: better ? "#1a7f37" : "#c62828" } },
        better ? "model beats copy-last-frame" : "copy-last-frame is better"));
    window.Plotly.react(this.plot, [
      { x: H, y: model, name: "model rollout", mode: "lines+markers", line: { color: "#1f77b4", width: 2 } },
      { x: H, y: base, name: "copy-last-frame baseline", mode: "lines+markers", line: { color: "#888", dash: "dash" } },
    ], baseLayout({ height: 300, legend: { orientation: "h", yanchor: "top", y: -0.28, x: 0 },
      xaxis: { title: { text: "steps after the context", standoff: 4 }, dtick: 1, gridcolor: "#eee", automargin: true },
      yaxis: { title: { text: m.toUpperCase() }, gridcolor: "#eee", automargin: true } }), PLOT_CONFIG);
  }
}

// Checkpoints (with download) and rollout videos (truth | prediction | error) of the run.
export class ArtifactsPanel {
  constructor(runId, evalPanel) {
    this.runId = runId;
    this.evalPanel = evalPanel;
    this.items = [];
    this.table = h("div");
    this.el = h("div.card", h("h2", "Checkpoints and files"), this.table);
    this.pinned = false;
    this.videoSel = h("select#video-step", { "aria-label": "Evaluation step of the video", onchange: () => {
      this.pinned = true;
      this.showVideo(Number(this.videoSel.value), true);
    } });
    this.video = h("video#rollout-video", { controls: true, muted: true, loop: true, playsInline: true, preload: "auto" });
    this.videoNote = h("p.small.muted");
    this.videoEl = h("div.card", h("div.controls", h("h2", { style: { margin: 0 } }, "Rollout video"), this.videoSel),
      this.videoNote, this.video);
    evalPanel.onChoose = (e) => {
      const i = this.videos().findIndex((v) => v.step === e.step || v.meta?.epoch === e.epoch);
      if (i >= 0) {
        this.pinned = true;
        this.showVideo(i, false);
      }
    };
  }

  videos() {
    return this.items.filter((a) => a.kind === "video").sort((a, b) => (a.step ?? 0) - (b.step ?? 0));
  }

  async load() {
    this.items = listOf(await apiOr(`/runs/${this.runId}/artifacts`, []));
    const files = this.items.filter((a) => a.kind !== "video");
    clear(this.table, files.length ? h("table#artifacts",
      h("thead", h("tr", ["File", "Kind", "Step", "Size", ""].map((t) => h("th", t)))),
      h("tbody", files.map((a) => h("tr",
        h("td.small", a.meta?.tag ? h("b", `${a.meta.tag} `) : null, a.path.split("/").pop()),
        h("td", a.kind), h("td.num", a.step ?? "—"), h("td.num", fmtBytes(a.bytes)),
        h("td", h("a", { href: downloadUrl(a), download: "" }, "download"))))))
      : h("p.muted", "No checkpoint yet: one is saved every `save_every` epochs, plus `last` and `best`."));
    const vids = this.videos();
    const cur = this.videoSel.value;
    clear(this.videoSel, vids.map((v, i) => h("option", { value: i }, `epoch ${v.meta?.epoch ?? "?"} · step ${v.step ?? "?"}`)));
    this.videoSel.hidden = this.video.hidden = !vids.length;
    if (!vids.length) {
      this.videoNote.textContent = "No rollout video yet: one is rendered at each evaluation.";
      return;
    }
    this.videoNote.textContent = "Left to right: ground truth | prediction | absolute error. The first frames are the observed context, the rest open loop.";
    this.showVideo(this.pinned && cur !== "" ? Number(cur) : vids.length - 1, false);
  }

  showVideo(i, fromUser) {
    const v = this.videos()[i];
    if (!v) return;
    this.videoSel.value = String(i);
    const src = downloadUrl(v);
    if (!this.video.src.endsWith(src)) {
      this.video.src = src;
      this.video.play().catch(() => {}); // autoplay may be refused; the controls are there
    }
    if (fromUser) {
      const j = this.evalPanel.evals.findIndex((e) => e.step === v.step || e.epoch === v.meta?.epoch);
      if (j >= 0) this.evalPanel.choose(j, true);
    }
  }
}

// The last lines the run logged, followed live.
export class LogPanel {
  constructor(runId) {
    this.runId = runId;
    this.lines = [];
    this.pre = h("pre.log#log-tail", { tabindex: 0, "aria-label": "Log tail" });
    this.el = h("div.card", h("h2", "Log tail"), this.pre);
  }

  async load() {
    const resp = await apiOr(`/runs/${this.runId}/log`, { lines: [] }, { query: { tail: 200 } });
    this.lines = resp.lines ?? [];
    this.render();
  }

  render() {
    const atBottom = this.pre.scrollTop + this.pre.clientHeight >= this.pre.scrollHeight - 4;
    clear(this.pre, this.lines.length ? this.lines.slice(-200).map((l) =>
      h("div", { class: l.level || "info" }, `${l.time ? `${fmtClock(l.time)} ` : ""}[${l.level || "info"}] ${l.message ?? JSON.stringify(l)}`))
      : "(nothing logged yet)");
    if (atBottom) this.pre.scrollTop = this.pre.scrollHeight;
  }
}

function fmtClock(t) {
  return new Date(typeof t === "number" ? t * 1000 : t).toLocaleTimeString();
}

export function configTable(cfg) {
  const rows = Object.entries(cfg).sort(([a], [b]) => a.localeCompare(b));
  if (!rows.length) return h("p.muted", "No configuration stored.");
  return h("details", h("summary", `${rows.length} fields`),
    h("table.small", h("tbody", rows.map(([k, v]) => h("tr", h("td", k), h("td", v === null ? "—" : String(v)))))));
}
