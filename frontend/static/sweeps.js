// Sweeps: the list, and a new-sweep builder (base launch, grid rows, seeds, metric, parallel limit) that shows how
// many runs it creates and keeps the POST /api/sweeps JSON beside it, editable. One sweep's page is sweep.js.
import { api, subscribe } from "./api.js";
import { parseNumber, parseSeeds, parseValues } from "./forms.js";
import { countsText } from "./sweepsummary.js";
import { clear, debounce, emptyState, errorText, fmtTime, h, statusBadge } from "./ui.js";

// eval/rollout_ratio first: rollout MSE over the better of copy-last and mean frame, comparable across tasks.
const METRICS = ["eval/rollout_ratio", "eval/rollout_mse", "val/loss", "loss", "eval/psnr"];

export async function mount(root) {
  const body = h("div");
  const tiers = await api("/tiers");
  const fields = tiers.fields.train.map((f) => f.name).filter((n) => !["seed", "kind", "tier"].includes(n)).sort();
  const typeOf = Object.fromEntries(tiers.fields.train.map((f) => [f.name, f.type]));

  // --- the builder
  const tierSel = h("select#sw-tier", [1, 2, 3].map((t) => h("option", { value: t }, `tier ${t}`)));
  const presetSel = h("select#sw-preset", h("option", { value: "debug" }, "debug (tiny, seconds on a CPU)"),
    h("option", { value: "" }, "none (full tier)"));
  const synthBox = h("input#sw-synthetic", { type: "checkbox", checked: true });
  const epochsIn = h("input#sw-epochs", { type: "text", inputmode: "numeric", value: "1", size: 5 });
  const seedsIn = h("input#sw-seeds", { type: "text", value: "0, 1", size: 10 });
  const metricSel = h("select#sw-metric", METRICS.map((m) => h("option", { value: m }, m)));
  const modeSel = h("select#sw-mode", h("option", { value: "min" }, "lower is better"), h("option", { value: "max" }, "higher is better"));
  const parallelIn = h("input#sw-parallel", { type: "text", inputmode: "numeric", value: "2", size: 4 });
  const rows = h("div.grid-rows#sw-grid");
  const addRow = (field = "latent_dim", values = "4, 8") => {
    const sel = h("select", { "aria-label": "Field to vary", onchange: sync }, fields.map((f) => h("option", { value: f, selected: f === field }, f)));
    const vals = h("input", { type: "text", value: values, "aria-label": "Values, comma separated", placeholder: "e.g. 1e-3, 3e-4", oninput: sync });
    const row = h("div.grid-row", sel, h("span.small.muted", "values"), vals,
      h("button.linklike.remove", { type: "button", "aria-label": "Remove this field", onclick: () => { row.remove(); sync(); } }, "remove"));
    rows.append(row);
  };
  addRow();
  const addBtn = h("button#sw-add", { type: "button", onclick: () => { addRow(fields[0], ""); sync(); } }, "+ vary another field");
  for (const el of [tierSel, presetSel, synthBox, metricSel, modeSel]) el.addEventListener("change", sync);
  for (const el of [epochsIn, seedsIn, parallelIn]) el.addEventListener("input", sync);

  const text = h("textarea#sweep-body", { rows: 14, spellcheck: false, "aria-label": "Sweep request (JSON)" });
  text.addEventListener("input", debounce(preview, 200));
  const count = h("p#sweep-preview.preview");
  const err = h("div#sweep-error", { role: "alert" });
  const create = h("button.primary#sweep-create", { type: "button", onclick: submit }, "Create sweep");
  const builderErrors = h("div.small.err-list");

  clear(root, h("div.head", h("h1", "Sweeps")),
    h("details.card#new-sweep", h("summary", h("b", "New sweep")),
      h("div.grid2.sweep-form",
        h("div",
          h("div.form-grid.compact",
            h("label.field", h("span", "Tier"), tierSel), h("label.field", h("span", "Preset"), presetSel),
            h("label.field", h("span", "Epochs per run"), epochsIn),
            h("label.field.check", synthBox, h("span", " synthetic data (no MuJoCo, no dataset)"))),
          h("h3", "Fields to vary (a grid: every combination)"), rows, addBtn,
          h("div.form-grid.compact",
            h("label.field", h("span", "Seeds per configuration"), seedsIn),
            h("label.field", h("span", "Rank by"), metricSel), h("label.field", h("span", "Mode"), modeSel),
            h("label.field", h("span", "Runs at a time"), parallelIn)),
          builderErrors),
        h("div",
          h("p.small.muted", "The request sent to POST /api/sweeps; the builder writes it, and you may edit it here ",
            "(random search: {\"random\": {field: {choice|uniform|loguniform|int: [..]}, \"count\": N}}; early stop: ",
            "loss above k × the sweep median for `patience` logged points)."),
          text)),
      count, h("div.controls", create), err),
    body);

  function sync() {
    const problems = [];
    let seeds = [];
    try {
      seeds = parseSeeds(seedsIn.value);
    } catch (e) {
      problems.push(e.message);
    }
    const grid = {};
    for (const row of rows.children) {
      const [sel, , vals] = row.children;
      const v = parseValues(vals.value);
      const numeric = ["int", "float"].includes(typeOf[sel.value]);
      const bad = numeric ? vals.value.split(",").map((x) => x.trim()).filter(Boolean)
        .map((x) => parseNumber(x, typeOf[sel.value]).error).filter(Boolean) : [];
      vals.classList.toggle("invalid", bad.length > 0);
      if (bad.length) problems.push(`${sel.value}: ${bad.join("; ")}`);
      else if (!v.length) problems.push(`${sel.value}: give at least one value`);
      else if (grid[sel.value]) problems.push(`${sel.value} is listed twice`);
      else grid[sel.value] = v;
    }
    const epochs = Number(epochsIn.value);
    if (!/^\d+$/.test(epochsIn.value.trim()) || epochs < 1) problems.push(`epochs: “${epochsIn.value}” is not a whole number ≥ 1`);
    const parallel = Number(parallelIn.value);
    if (!/^\d+$/.test(parallelIn.value.trim()) || parallel < 1) problems.push(`runs at a time: “${parallelIn.value}” is not a whole number ≥ 1`);
    clear(builderErrors, problems.map((p) => h("div.err", p)));
    const base = { kind: "train", tier: Number(tierSel.value), overrides: { num_epochs: epochs } };
    if (presetSel.value) base.preset = presetSel.value;
    if (synthBox.checked) base.synthetic = true;
    const req = { base, grid, random: {}, seeds, metric: metricSel.value, mode: modeSel.value, parallel,
      early_stop: { k: 3, patience: 3 } };
    text.value = JSON.stringify(req, null, 2);
    preview();
  }

  // How many runs the request creates: grid combinations (times `random.count` samples), times seeds.
  function preview() {
    let req;
    try {
      req = JSON.parse(text.value);
    } catch (e) {
      clear(count, h("span.bad", `The JSON does not parse: ${e.message}`));
      create.disabled = true;
      return;
    }
    const gridSizes = Object.values(req.grid || {}).map((v) => (Array.isArray(v) ? v.length : 0));
    const combos = gridSizes.reduce((a, b) => a * b, 1);
    const randomCount = Object.keys(req.random || {}).some((k) => k !== "count") ? Number(req.random.count || 0) : 1;
    const configs = combos * randomCount;
    const seeds = Array.isArray(req.seeds) ? req.seeds.length : 1;
    const runs = configs * seeds;
    clear(count, h("b", `${runs} run${runs === 1 ? "" : "s"}`),
      `: ${configs} configuration${configs === 1 ? "" : "s"}`,
      gridSizes.length ? ` (${gridSizes.join(" × ")}${randomCount !== 1 ? ` × ${randomCount} random` : ""})` : "",
      ` × ${seeds} seed${seeds === 1 ? "" : "s"}, ${req.parallel ?? 2} at a time.`);
    create.disabled = runs < 1 || builderErrors.children.length > 0;
    create.textContent = runs > 0 ? `Create sweep (${runs} runs)` : "Create sweep";
  }

  async function submit() {
    let req;
    try {
      req = JSON.parse(text.value);
    } catch (e) {
      showError(`The request is not valid JSON: ${e.message}`);
      return;
    }
    create.disabled = true;
    try {
      const s = await api("/sweeps", { method: "POST", body: req });
      location.href = `/sweeps/${s.id}`;
    } catch (e) {
      const d = e.detail;
      showError(d && d.field ? `${d.field}: ${d.message}` : errorText(e),
        d && d.config ? `in configuration ${d.config}: ${JSON.stringify(d.params)}` : "");
    } finally {
      create.disabled = false;
    }
  }

  function showError(message, where = "") {
    clear(err, h("div.error-box", h("b", "The sweep was not created. "), message, where ? h("div.small", where) : null));
  }

  sync();

  async function load() {
    let list;
    try {
      list = await api("/sweeps");
    } catch (e) {
      clear(body, h("div.error-box", "Could not list sweeps: ", errorText(e)));
      return;
    }
    if (!list.length) {
      clear(body, emptyState("No sweep yet", h("p", "Open “New sweep” above, or run ", h("code", "aime sweep create"), ".")));
      return;
    }
    clear(body, h("div.card.table-wrap", h("table#sweeps",
      h("thead", h("tr", ["Sweep", "Status", "Tier", "Runs", "Metric", "From", "Created"].map((t) => h("th", t)))),
      h("tbody", list.map((s) => h("tr",
        h("td", h("a", { href: `/sweeps/${s.id}` }, s.name || `sweep ${s.id}`)),
        h("td", statusBadge(s.status)), h("td", s.tier),
        h("td.small", `${s.total_runs}: `, countsText(s.counts)),
        h("td.small", `${s.metric} (${s.mode})`),
        h("td", s.parent_id ? h("a", { href: `/sweeps/${s.parent_id}` }, `sweep ${s.parent_id}`) : "—"),
        h("td.small", fmtTime(s.created_at))))))));
  }
  await load();
  const later = debounce(load, 500);
  subscribe("/events", { ready: later, status: later }); // ready: no gap after the first fetch
}
