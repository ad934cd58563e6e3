// Datasets page: the HDF5 files collected so far, with the run that made each.
import { api } from "./api.js";
import { clear, emptyState, errorText, fmtBytes, fmtTime, h } from "./ui.js";

export async function mount(root) {
  const body = h("div");
  clear(root, h("div.head", h("h1", "Datasets"), h("span.spacer"),
    h("a.btn", { href: "/launch?kind=collect" }, "Collect a dataset")), body);
  let list;
  try {
    const resp = await api("/datasets");
    list = Array.isArray(resp) ? resp : resp.items ?? [];
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
  clear(body, h("div.card.table-wrap", h("table#datasets",
    h("thead", h("tr", ["Environment", "Tier", "Seed", "Episodes", "Frames", "Image", "Size", "Created", "Made by", "Path"]
      .map((t) => h("th", t)))),
    h("tbody", list.map((d) => h("tr",
      h("td", `${d.domain}-${d.task}`), h("td", d.tier), h("td", d.seed), h("td.num", d.episodes),
      h("td.num", d.frames), h("td", d.img_size ? `${d.img_size}px` : "—"), h("td.num", fmtBytes(d.bytes)),
      h("td.small", fmtTime(d.created_at)),
      h("td", d.run_id ? h("a", { href: `/runs/${d.run_id}` }, `run ${d.run_id}`) : "—"),
      h("td.small", d.path)))))));
}
