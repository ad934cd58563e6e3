// Panels of the run page: evaluation per horizon step, rollout videos, checkpoints, log tail, config.
// Each panel shows a loading state at once and fills itself from its own request; only the charts wait for plotly.
import { api } from "./api.js";
import { baseLayout, ensurePlotly, PLOT_CONFIG } from "./charts.js";
import { clear, fmtBytes, fmtNum, h } from "./ui.js";

export function downloadUrl(artifact) {
  return `/api/artifacts/${artifact.id}/download`;
}

export function loading(text = "Loading…") {
  return h("div.skeleton", { "aria-busy": "true" }, h("span.small.muted", text));
}

// Rollout error per horizon step against both trivial baselines (copy-last frame, mean training frame), over all
// pixels, the moving pixels or the physics state (through the linear probe), for a chosen evaluation.
export class EvalPanel {
  constructor(runId) {
    this.runId = runId;
    this.evals = []; // eval payloads (GET /api/runs/{id}/history?kind=eval), oldest first
    this.pinned = false; // the user picked an evaluation: stop following the newest
    this.select = h("select#eval-step", { "aria-label": "Evaluation step", hidden: true, onchange: () => {
      this.pinned = true;
      this.choose(this.select.value);
    } });
    this.metric = h("select", { "aria-label": "Error measure", hidden: true, onchange: () => this.draw() },
      h("option", { value: "mse" }, "MSE, all pixels"), h("option", { value: "mse_moving" }, "MSE, moving pixels"),
      h("option", { value: "state" }, "state error (linear probe)"), h("option", { value: "psnr" }, "PSNR dB"));
    this.plot = h("div.chart.chart-slot#eval-chart", { hidden: true });
    this.summary = h("p.small", loading("Loading evaluations…"));
    this.onChoose = null;
    this.el = h("div.card#eval-panel", h("div.controls", h("h2.inline", "Evaluation: open-loop rollout"),
      this.select, this.metric), this.summary, this.plot);
  }

  async load() {
    const rows = await api(`/runs/${this.runId}/history`, { query: { kind: "eval" } });
    this.evals = rows.map((e) => e.payload);
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
    this.select.hidden = this.metric.hidden = this.plot.hidden = !e;
    if (!e) {
      clear(this.summary, "No evaluation yet: the trainer evaluates every `eval_every` epochs and at the end.");
      window.Plotly?.purge(this.plot);
      return;
    }
    const m = this.metric.value;
    const H = e.horizon;
    // Each measure: the model's series and its baselines, as the evaluation event names them.
    const series = {
      mse: ["rollout_mse", "copy_last_mse", "mean_frame_mse", "ratio"],
      mse_moving: ["rollout_mse_moving", "copy_last_mse_moving", "mean_frame_mse_moving", "ratio_moving"],
      state: ["state_mse", "copy_last_state_mse", "mean_state_mse", "state_ratio"],
      psnr: ["rollout_psnr", "copy_last_psnr", "mean_frame_psnr", null],
    }[m];
    const [model, copyLast, meanFrame, ratio] = series.map((k) => (k ? e[k] : undefined));
    const copy = copyLast ?? (m === "mse" ? e.baseline_mse : m === "psnr" ? e.baseline_psnr : undefined); // older runs
    const mean = (a) => a.reduce((s, v) => s + v, 0) / Math.max(1, a.length);
    if (!model) { // an evaluation from before this measure existed, or a dataset without physics states
      clear(this.summary, m === "state" ? "This dataset has no physics states: recollect it to score rollouts in "
        + "state space." : "This evaluation predates this measure.");
      window.Plotly?.purge(this.plot);
      return;
    }
    const r = ratio ? mean(ratio) : null;
    const verdict = r === null ? null : h(r < 1 ? "b.good" : "b.bad", r < 1
      ? `model beats both baselines (mean ratio ${fmtNum(r)})`
      : `a trivial baseline is better (mean ratio ${fmtNum(r)})`);
    // A calibrated run (rollout_shrinkage): the rollout is pulled toward the mean frame by a_h; the raw one is shown too.
    const raw = e.shrinkage && { mse: e.rollout_raw_mse, mse_moving: e.rollout_raw_mse_moving }[m];
    const rawRatio = raw && (m === "mse" ? e.ratio_raw : e.ratio_raw_moving);
    const calibration = raw ? h("span.calibration", ` Calibrated rollout: pulled toward the mean frame by a_h per `
      + `step (fitted on training clips; a_h from ${fmtNum(e.shrinkage[0])} to ${fmtNum(e.shrinkage.at(-1))}); `
      + `the raw rollout's mean ratio is ${fmtNum(mean(rawRatio))}.`) : null;
    clear(this.summary, `Context ${e.context_frames} frames, ${e.clips} held-out clips; reconstruction MSE `,
      `${fmtNum(e.recon_mse)}, PSNR ${fmtNum(e.psnr)} dB, SSIM ${fmtNum(e.ssim)}. Ratio = rollout / the better of `,
      "copy-last frame and mean training frame at each step: ", verdict ?? "higher PSNR is better.", calibration);
    const traces = [
      { x: H, y: model, name: raw ? "model rollout (calibrated)" : "model rollout", mode: "lines+markers", line: { color: "#1f77b4", width: 2 } },
      { x: H, y: copy, name: "copy-last frame", mode: "lines+markers", line: { color: "#888", dash: "dash" } },
    ];
    if (raw) traces.push({ x: H, y: raw, name: "raw rollout (uncalibrated)", mode: "lines",
      line: { color: "#1f77b4", dash: "dot", width: 1 } });
    if (meanFrame) traces.push({ x: H, y: meanFrame, name: m === "state" ? "mean training state" : "mean training frame",
      mode: "lines", line: { color: "#d62728", dash: "dot" } });
    // Only the chart waits for plotly; the numbers above are already there.
    ensurePlotly().then((Plotly) => Plotly.react(this.plot, traces,
      baseLayout({ height: 300, legend: { orientation: "h", yanchor: "top", y: -0.28, x: 0 },
        xaxis: { title: { text: "steps after the context", standoff: 4 }, dtick: H.length > 20 ? undefined : 1,
          gridcolor: "#eee", automargin: true },
        yaxis: { title: { text: m === "psnr" ? "PSNR dB" : m === "state" ? "state MSE (std units)" : "MSE" },
          gridcolor: "#eee", automargin: true } }), PLOT_CONFIG));
  }
}

// The numbered checkpoints beyond the newest are folded away: best and last (what one downloads) stay in view.
function checkpointRows(files) {
  const numbered = files.filter((a) => a.kind === "checkpoint" && /^epoch_/.test(a.meta.tag ?? ""));
  const keep = new Set(files.filter((a) => !numbered.includes(a)));
  const newest = numbered.reduce((b, a) => ((a.step ?? 0) >= (b?.step ?? -1) ? a : b), null);
  if (newest) keep.add(newest);
  const folded = numbered.filter((a) => a !== newest);
  return { shown: files.filter((a) => keep.has(a)), folded };
}

function fileTable(rows, id) {
  return h("table", { id },
    h("thead", h("tr", ["File", "Kind", "Step", "Size", ""].map((t, i) => h(i === 2 || i === 3 ? "th.num" : "th", t)))),
    h("tbody", rows.map((a) => h("tr",
      h("td.small", a.meta.tag ? h("b", `${a.meta.tag} `) : null, a.path.split("/").pop()),
      h("td", a.kind), h("td.num", a.step ?? "—"), h("td.num", fmtBytes(a.bytes)),
      h("td", h("a", { href: downloadUrl(a), download: "" }, "download"))))));
}

// Checkpoints (with download) and rollout videos (truth | prediction | error) of the run.
export class ArtifactsPanel {
  constructor(run, evalPanel) {
    this.run = run;
    this.runId = run.id;
    this.evalPanel = evalPanel;
    this.items = [];
    this.loaded = false;
    this.onLoad = null;
    this.table = h("div", loading("Loading files…"));
    this.el = h("div.card#files-panel", h("h2", run.kind === "train" ? "Checkpoints and files" : "Files"), this.table);
    this.pinned = false;
    this.videoSel = h("select#video-step", { "aria-label": "Evaluation step of the video", hidden: true, onchange: () => {
      this.pinned = true;
      this.showVideo(Number(this.videoSel.value), true);
    } });
    // Our own controls under the picture: the browser's overlay would cover the bottom clip.
    this.video = h("video#rollout-video", { muted: true, loop: true, playsInline: true, preload: "auto", hidden: true });
    this.playBtn = h("button#video-play", { type: "button", onclick: () => this.toggle() }, "Pause");
    this.seek = h("input#video-seek", { type: "range", min: 0, max: 1000, value: 0, "aria-label": "Position in the video",
      oninput: () => this.video.duration && (this.video.currentTime = (this.seek.value / 1000) * this.video.duration) });
    this.speed = h("select#video-speed", { "aria-label": "Playback speed", onchange: () => (this.video.playbackRate = Number(this.speed.value)) },
      [0.25, 0.5, 1, 2].map((r) => h("option", { value: r, selected: r === 1 }, `${r}×`)));
    this.frameBtns = [["◀ frame", -1], ["frame ▶", 1]].map(([t, d]) => h("button", { type: "button", onclick: () => this.stepFrame(d) }, t));
    this.time = h("span.small.muted#video-time");
    this.controls = h("div.video-controls", { hidden: true }, this.playBtn, this.frameBtns[0], this.frameBtns[1], this.seek,
      this.time, h("label.small", "speed ", this.speed));
    this.video.addEventListener("timeupdate", () => this.tick());
    this.video.addEventListener("play", () => (this.playBtn.textContent = "Pause"));
    this.video.addEventListener("pause", () => (this.playBtn.textContent = "Play"));
    this.legend = h("div.video-legend#video-legend", { hidden: true },
      h("span", h("b", "Columns: "), "ground truth | prediction | absolute error (×2). One row per clip."),
      h("span", h("i.sw.sw-observed"), "observed context (reconstruction)"),
      h("span", h("i.sw.sw-generated"), "open loop (prediction)"),
      h("span", h("i.sw.sw-beyond"), "open loop past the training clip length"));
    this.videoNote = h("p.small.muted", loading("Loading videos…"));
    this.videoEl = h("div.card.video-card#video-panel", h("div.controls", h("h2.inline", "Rollout video"), this.videoSel),
      this.videoNote, this.legend, h("div.video-frame", this.video), this.controls);
    evalPanel.onChoose = (e) => {
      const i = this.videos().findIndex((v) => v.step === e.step);
      if (i >= 0) {
        this.pinned = true;
        this.showVideo(i, false);
      }
    };
  }

  videos() {
    return this.items.filter((a) => a.kind === "video").sort((a, b) => (a.step ?? 0) - (b.step ?? 0));
  }

  checkpoints() {
    return this.items.filter((a) => a.kind === "checkpoint");
  }

  async load() {
    this.items = await api(`/runs/${this.runId}/artifacts`);
    this.loaded = true;
    const files = this.items.filter((a) => a.kind !== "video");
    const { shown, folded } = checkpointRows(files);
    let empty;
    if (this.run.kind === "collect") {
      empty = h("p.muted", "A collection writes no checkpoint: its episodes go straight to the dataset file ",
        h("code", this.run.config.data_path ?? "?"), " (an interrupted one resumes from the episodes already written).");
    } else {
      empty = h("p.muted", `No checkpoint yet: one is saved every ${this.run.config.save_every ?? "`save_every`"} `,
        "epoch(s), plus `last` and `best` at each epoch end.");
    }
    clear(this.table, files.length ? [fileTable(shown, "artifacts"),
      folded.length ? h("details#older-checkpoints", h("summary.small", `${folded.length} older numbered checkpoint${folded.length > 1 ? "s" : ""}`),
        fileTable(folded.sort((a, b) => (b.step ?? 0) - (a.step ?? 0)), "artifacts-older")) : null] : empty);
    this.onLoad?.();
    const vids = this.videos();
    const cur = this.videoSel.value;
    clear(this.videoSel, vids.map((v, i) => h("option", { value: i }, `epoch ${v.meta.epoch ?? "?"} · step ${v.step ?? "?"}`)));
    this.videoSel.hidden = this.video.hidden = this.controls.hidden = this.legend.hidden = !vids.length;
    if (!vids.length) {
      clear(this.videoNote, "No rollout video yet: one is rendered at each evaluation.");
      return;
    }
    clear(this.videoNote, "The first frames are the observed context, the rest open loop on the recorded actions.");
    this.showVideo(this.pinned && cur !== "" ? Number(cur) : vids.length - 1, false);
  }

  toggle() {
    if (this.video.paused) this.video.play().catch(() => {});
    else this.video.pause();
  }

  stepFrame(dir) {
    this.video.pause();
    const fps = 4; // aime_core/video.py writes 4 frames per second
    this.video.currentTime = Math.max(0, Math.min(this.video.duration || 0, this.video.currentTime + dir / fps));
  }

  tick() {
    const d = this.video.duration;
    if (!d) return;
    this.seek.value = String(Math.round((this.video.currentTime / d) * 1000));
    this.time.textContent = `frame ${Math.floor(this.video.currentTime * 4) + 1} of ${Math.round(d * 4)}`;
  }

  showVideo(i, fromUser) {
    const v = this.videos()[i];
    if (!v) return;
    this.videoSel.value = String(i);
    const src = downloadUrl(v);
    if (!this.video.src.endsWith(src)) {
      this.video.src = src;
      this.video.play().catch(() => (this.playBtn.textContent = "Play")); // autoplay may be refused
    }
    if (fromUser) {
      const j = this.evalPanel.evals.findIndex((e) => e.step === v.step);
      if (j >= 0) this.evalPanel.choose(j, true);
    }
  }
}

// The last lines the run logged, followed live. Repeats of one line (the same report sent by several sinks or
// for several keys) are shown once with a count.
export class LogPanel {
  constructor(runId) {
    this.runId = runId;
    this.lines = [];
    this.pre = h("pre.log#log-tail", { tabindex: 0, "aria-label": "Log tail" }, "loading…");
    this.el = h("div.card", h("h2", "Log tail"), this.pre);
  }

  async load() {
    const resp = await api(`/runs/${this.runId}/log`, { query: { tail: 200 } });
    this.lines = resp.lines;
    this.render();
  }

  render() {
    const atBottom = this.pre.scrollTop + this.pre.clientHeight >= this.pre.scrollHeight - 4;
    const merged = [];
    for (const l of this.lines) {
      const prev = merged[merged.length - 1];
      if (prev && prev.message === l.message && prev.level === l.level) prev.count += 1;
      else merged.push({ ...l, count: 1 });
    }
    clear(this.pre, merged.length ? merged.map((l) =>
      h("div", { class: l.level }, `${l.time ? `${fmtClock(l.time)} ` : ""}[${l.level}] ${l.message}`, l.count > 1 ? h("span.repeat", ` (×${l.count})`) : null))
      : "(nothing logged yet)");
    if (atBottom) this.pre.scrollTop = this.pre.scrollHeight;
  }
}

function fmtClock(t) {
  return new Date(t * 1000).toLocaleTimeString();
}

export function configTable(cfg) {
  const rows = Object.entries(cfg).sort(([a], [b]) => a.localeCompare(b));
  if (!rows.length) return h("p.muted", "No configuration stored.");
  return h("details", h("summary", `${rows.length} fields`),
    h("table.small", h("tbody", rows.map(([k, v]) => h("tr", h("td", k), h("td", v === null ? "—" : String(v)))))));
}
