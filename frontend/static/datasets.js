// Datasets page: the HDF5 files collected so far, each with a strip of frames from one episode, its size, the run
// that made it and "train on this"; follows new collections live.
import { api, subscribe } from "./api.js";
import { clear, coalesce, emptyState, errorText, fmtBytes, fmtNum, fmtTime, h } from "./ui.js";

// The launch form, filled for training on this file (its tier, environment and image size; the debug preset when
// the file was collected with it, as its name says).
export function trainUrl(d) {
  const q = new URLSearchParams({ kind: "train", tier: String(d.tier), data_path: d.path });
  if (/-debug\.hdf5$/.test(d.path)) q.set("preset", "debug");
  if (d.domain === "synthetic") q.set("synthetic", "1");
  else {
    q.set("domain", d.domain);
    q.set("task", d.task);
  }
  if (d.img_size) q.set("img_size", String(d.img_size));
  return `/launch?${q}`;
}

function card(d) {
  const ep = h("input", { type: "number", min: 0, max: Math.max(0, d.episodes - 1), value: 0, "aria-label": "Episode",
    class: "ep-input" });
  const img = h("img.strip", { alt: `Frames of episode 0 of ${d.domain}-${d.task}`, loading: "lazy",
    src: `/api/datasets/${d.id}/frames.png?episode=0&count=8` });
  const note = h("span.small.muted");
  img.addEventListener("error", () => (note.textContent = "no preview: the file cannot be read"));
  ep.addEventListener("change", () => {
    const i = Math.max(0, Math.min(d.episodes - 1, Math.round(Number(ep.value) || 0)));
    ep.value = String(i);
    img.src = `/api/datasets/${d.id}/frames.png?episode=${i}&count=8`;
    img.alt = `Frames of episode ${i} of ${d.domain}-${d.task}`;
  });
  const perEp = d.episodes ? d.frames / d.episodes : null;
  return h("div.card.dataset", { dataset: { datasetId: d.id } },
    h("div.dataset-head",
      h("h2", `${d.domain}-${d.task}`, h("span.muted.light", ` · tier ${d.tier} · seed ${d.seed}`)),
      h("span.spacer"),
      h("a.btn.primary.train-on", { href: trainUrl(d) }, "Train on this")),
    h("div.strip-wrap", img),
    h("div.controls.small", h("label", "episode ", ep, ` (0–${Math.max(0, d.episodes - 1)})`), note,
      h("span.muted", "8 frames evenly spaced over the episode")),
    h("dl.kv.stats",
      h("dt", "Episodes"), h("dd.num", fmtNum(d.episodes)),
      h("dt", "Frames"), h("dd.num", `${fmtNum(d.frames)}${perEp ? ` (${fmtNum(perEp, 3)} per episode)` : ""}`),
      h("dt", "Image"), h("dd", d.img_size ? `${d.img_size} × ${d.img_size} px` : "—"),
      h("dt", "Size"), h("dd.num", fmtBytes(d.bytes)),
      h("dt", "Made by"), h("dd", d.run_id ? h("a", { href: `/runs/${d.run_id}` }, `run ${d.run_id}`) : "—",
        ` · ${fmtTime(d.created_at)}`),
      h("dt", "Path"), h("dd.small.path", d.path)));
}

export async function mount(root) {
  const body = h("div");
  clear(root, h("div.head", h("h1", "Datasets"), h("span.spacer"),
    h("a.btn", { href: "/launch?kind=collect" }, "Collect a dataset")), body);

  async function load() {
    let list;
    try {
      list = await api("/datasets");
    } catch (e) {
      clear(body, h("div.error-box", "Could not list datasets: ", errorText(e)));
      return;
    }
    if (!list.length) {
      clear(body, emptyState("No dataset yet",
        h("p", "A training run needs an HDF5 file of episodes. Launch a ", h("b", "collect"), " run (tier 1, cartpole ",
          "swingup is the quickest real one), or train with ", h("b", "synthetic"), " on, which needs none."),
        h("p", h("a.btn.primary", { href: "/launch?kind=collect&tier=1" }, "Collect tier-1 data"))));
      return;
    }
    clear(body, h("div.dataset-grid#datasets", list.map(card)));
  }
  await load();
  // Live: a collection that finishes registers its dataset (event `dataset`).
  subscribe("/events", { ready: coalesce(load, 300), dataset: coalesce(load, 300) });
}
