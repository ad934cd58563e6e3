// Runs page: filterable table of runs, updated live from /api/events; select runs to compare.
import { api, subscribe } from "./api.js";
import { alertCount, etaOf, latestLoss, progressOf, workerOf } from "./runsummary.js";
import { clear, coalesce, debounce, emptyState, envName, errorText, fmtDuration, fmtNum, h, keepFocus, runDuration, statusBadge } from "./ui.js";

const STATUSES = ["queued", "running", "succeeded", "failed", "cancelled", "lost"];
const COLUMNS_KEY = "aime_run_columns";

function configValue(v) {
  if (v === undefined) return "—";
  if (typeof v === "number") return fmtNum(v);
  return v === null ? "—" : String(v);
}

function progressCell(run) {
  const { done, total, unit, epoch, epochs } = progressOf(run);
  if (done == null || !total) return h("td", "—");
  const pct = Math.max(0, Math.min(100, (100 * done) / total));
  const text = run.kind === "train" && epochs
    ? `epoch ${epoch ?? "?"}/${epochs} · step ${done}/${total}`
    : `${done}/${total} ${unit}s`;
  const eta = etaOf(run);
  return h("td", { title: `${pct.toFixed(0)}%` }, h("span.small", text),
    eta ? h("span.small.muted.eta", { title: `time left, from ${eta.basis}` }, ` · ${fmtDuration(eta.seconds)} left`) : null,
    h("div.progress", h("span", { style: { width: `${pct}%` } })));
}

export async function mount(root, { query }) {
  const state = { runs: new Map(), selected: new Set(), filters: Object.fromEntries(query.entries()) };
  const tbody = h("tbody");
  const count = h("span.muted.small");
  const compareBtn = h("button.primary", { type: "button", disabled: true, onclick: () => {
    location.href = `/compare?runs=${[...state.selected].sort((a, b) => a - b).join(",")}`;
  } }, "Compare selected");

  const sel = (name, label, options) => h("select", { name, "aria-label": label, onchange: onFilter },
    h("option", { value: "" }, `${label}: all`), options.map((o) => h("option", { value: o }, o)));
  const tierSel = sel("tier", "Tier", ["1", "2", "3"]);
  const statusSel = sel("status", "Status", STATUSES);
  const kindSel = sel("kind", "Kind", ["train", "collect"]);
  const envSel = sel("environment", "Environment", []);
  const tagInput = h("input", { type: "text", name: "tag", placeholder: "tag", "aria-label": "Tag", size: 10,
    oninput: debounce(onFilter, 300) });
  const textInput = h("input", { type: "search", name: "text", placeholder: "Search name, environment, error…",
    "aria-label": "Free text search", oninput: debounce(onFilter, 300) });
  for (const el of [tierSel, statusSel, kindSel, tagInput, textInput]) el.value = state.filters[el.name] ?? "";

  // Config columns the user picked (kept in this browser): e.g. lr, batch_size, latent_dim.
  let columns = [];
  try {
    columns = JSON.parse(localStorage.getItem(COLUMNS_KEY) || "[]").filter((c) => typeof c === "string");
  } catch {
    columns = [];
  }
  const thead = h("thead");
  const table = h("table#runs-table", thead, tbody);
  const colList = h("div.column-list");
  const colFilter = h("input", { type: "search", placeholder: "field…", "aria-label": "Find a config field",
    oninput: () => fillColumns() });
  const colSummary = h("summary");
  const colPicker = h("details.column-picker#column-picker", colSummary,
    h("div.column-pop", h("p.small.muted", "Config fields shown as columns (kept in this browser)."), colFilter, colList));
  const body = h("div");
  clear(root,
    h("div.head", h("h1", "Runs"), count, h("span.spacer"),
      compareBtn, h("a.btn", { href: "/launch" }, "Launch a run")),
    h("div.filters", tierSel, statusSel, kindSel, envSel, tagInput, textInput, h("span.spacer"), colPicker),
    body);

  function drawHead() {
    clear(thead, h("tr",
      h("th", h("input", { type: "checkbox", "aria-label": "Select all", onchange: (e) => selectAll(e.target.checked) })),
      ["Name", "Kind", "Tier", "Environment", "Seed", "Status", "Progress"].map((t) => h("th", t)),
      h("th.num", "Latest loss"), h("th", "Alerts"), h("th.num", "Duration"), h("th", "Worker"),
      columns.map((c) => h("th.num.config-col", { dataset: { column: c } }, c))));
    colSummary.textContent = `Columns${columns.length ? ` (${columns.length})` : ""}`;
  }

  function fillColumns() {
    const keys = new Set();
    for (const r of state.runs.values()) for (const k of Object.keys(r.config)) keys.add(k);
    for (const c of columns) keys.add(c);
    const q = colFilter.value.trim().toLowerCase();
    clear(colList, [...keys].sort().filter((k) => !q || k.includes(q)).map((k) => h("label.small",
      h("input", { type: "checkbox", checked: columns.includes(k), dataset: { column: k }, onchange: (e) => {
        columns = e.target.checked ? [...columns, k] : columns.filter((c) => c !== k);
        localStorage.setItem(COLUMNS_KEY, JSON.stringify(columns));
        drawHead();
        render();
      } }), ` ${k}`)));
  }
  colPicker.addEventListener("toggle", () => colPicker.open && fillColumns());
  drawHead();

  function onFilter() {
    state.filters = {
      tier: tierSel.value, status: statusSel.value, kind: kindSel.value, tag: tagInput.value.trim(),
      text: textInput.value.trim(),
    };
    const [domain, task] = envSel.value ? envSel.value.split("-") : [];
    Object.assign(state.filters, { domain, task });
    const url = new URL(location.href);
    url.search = new URLSearchParams(Object.entries(state.filters).filter(([, v]) => v)).toString();
    history.replaceState(null, "", url);
    load();
  }

  function selectAll(on) {
    for (const id of state.runs.keys()) on ? state.selected.add(id) : state.selected.delete(id);
    render();
  }

  function row(run) {
    const id = run.id;
    const checked = state.selected.has(id);
    const alerts = alertCount(run);
    const loss = latestLoss(run);
    return h("tr", { class: checked ? "selected" : "", dataset: { runId: id, status: run.status } },
      h("td", h("input", { type: "checkbox", id: `sel-${id}`, checked, "aria-label": `Select run ${run.name || id}`,
        onchange: (e) => {
          e.target.checked ? state.selected.add(id) : state.selected.delete(id);
          render();
        } })),
      // Names repeat (a retry, another launch of one config): the id tells them apart.
      h("td", h("span.muted.small", `#${id} `), h("a", { href: `/runs/${id}` }, run.name || `run ${id}`),
        run.tags.map((t) => h("span.badge.small", { style: { marginLeft: "4px" } }, t))),
      h("td", run.kind), h("td", run.tier), h("td", envName(run)),
      h("td", run.seed),
      h("td", statusBadge(run.status)),
      progressCell(run),
      h("td.num", { class: `num loss ${Number.isFinite(Number(loss)) ? "" : "nonfinite"}` }, fmtNum(loss)),
      h("td", alerts ? h("a.badge.alert-badge", { href: `/runs/${id}#nan-banner`, title: "Open alerts" }, `⚠ ${alerts}`) : ""),
      h("td.num", fmtDuration(runDuration(run))),
      h("td.small", workerOf(run)),
      columns.map((c) => h("td.num.config-col", configValue(run.config[c]))));
  }

  function render() {
    const runs = [...state.runs.values()].sort((a, b) => b.id - a.id);
    compareBtn.disabled = state.selected.size < 2;
    compareBtn.textContent = `Compare selected (${state.selected.size})`;
    count.textContent = state.total > runs.length ? `newest ${runs.length} of ${state.total} runs (filter to narrow)`
      : `${runs.length} run${runs.length === 1 ? "" : "s"}`;
    const anyFilter = Object.values(state.filters).some(Boolean);
    // An empty state already on screen is left as it is: rebuilding it (every reload finds the list still empty)
    // would drop the keyboard focus from its button.
    const shown = !runs.length ? (anyFilter ? "no-match" : "no-runs") : "table";
    if (shown !== "table" && body.dataset.shown === shown) return;
    body.dataset.shown = shown;
    if (!runs.length && !anyFilter) {
      clear(body, emptyState("No runs yet",
        h("p", "Start with a tiny synthetic training run: it needs no dataset and finishes in seconds on a CPU. ",
          "It proves the queue, the worker and the live charts work."),
        h("p", h("a.btn.primary", { href: "/launch?kind=train&tier=1&preset=debug&synthetic=1" },
          "Launch a synthetic debug run")),
        h("p.muted.small", "Then collect real data: Launch → kind collect → tier 1 → cartpole swingup. ",
          "From a shell: ", h("code", "aime collect --tier 1"), ".")));
      return;
    }
    if (!runs.length) {
      clear(body, emptyState("No run matches these filters", h("p", "Clear a filter above to see more runs.")));
      return;
    }
    keepFocus(tbody, () => clear(tbody, runs.map(row)));
    if (!body.contains(table)) clear(body, h("div.card.table-wrap", table));
  }

  // Live changes redraw only the rows they touch, at most a few times a second.
  const dirty = new Set();
  const flush = coalesce(() => {
    for (const id of dirty) {
      const tr = tbody.querySelector(`tr[data-run-id="${id}"]`);
      const run = state.runs.get(id);
      if (tr && run) keepFocus(tr, () => tr.replaceWith(row(run)));
    }
    dirty.clear();
  }, 250);
  function touch(id) {
    dirty.add(id);
    flush();
  }

  async function load() {
    try {
      const resp = await api("/runs", { query: { ...state.filters, limit: 500 } });
      const list = resp.items;
      state.total = resp.total;
      state.runs = new Map(list.map((r) => [r.id, r]));
      const envs = new Set(list.map(envName));
      if (envSel.options.length <= 1 || envs.size > envSel.options.length - 1) {
        const cur = envSel.value;
        clear(envSel, h("option", { value: "" }, "Environment: all"),
          [...envs].filter((e) => e !== "—").sort().map((e) => h("option", { value: e }, e)));
        envSel.value = cur;
      }
      render();
    } catch (e) {
      clear(body, h("div.error-box", "Could not list runs: ", errorText(e)));
    }
  }

  const reload = coalesce(load, 400); // not debounce: live progress events would postpone it forever
  await load();
  // Live: patch the row in place; a run we do not know yet (just launched) triggers a reload.
  subscribe("/events", {
    // Runs created between the first fetch and the server's subscription send no event we will see: fetch the
    // list again when the server says it is subscribed (`ready`), so nothing falls in the gap.
    ready: () => reload(),
    status: (d) => patch(d),
    progress: (d) => patch(d),
    metrics: (d) => metric(d),
    deleted: (d) => {
      state.runs.delete(d.run_id);
      state.selected.delete(d.run_id);
      render();
    },
    alert: (d) => {
      const run = state.runs.get(d.run_id);
      if (!run) return;
      run.open_alerts = alertCount(run) + 1;
      touch(run.id);
    },
  });

  function patch(d) {
    const id = d.run_id;
    const run = state.runs.get(id);
    if (!run) return reload();
    // status events carry {status, ...changed fields}; progress events {progress}.
    Object.assign(run, Object.fromEntries(Object.entries(d).filter(([k]) => k !== "run_id" && k !== "type")));
    if (d.status && !run.started_at && d.status === "running") run.started_at = new Date().toISOString();
    if (d.status && ["succeeded", "failed", "cancelled", "lost"].includes(d.status) && !run.finished_at) {
      run.finished_at = new Date().toISOString();
    }
    touch(id);
  }

  function metric(d) {
    const run = state.runs.get(d.run_id);
    if (!run) return;
    for (const p of d.points) {
      const old = run.latest[p.key];
      if (!old || p.step >= old[0]) run.latest[p.key] = [p.step, p.value];
    }
    touch(run.id);
  }

  // Durations tick for the running ones.
  setInterval(() => {
    if (document.visibilityState !== "visible") return;
    for (const r of state.runs.values()) if (r.status === "running") touch(r.id);
  }, 5000);
}
