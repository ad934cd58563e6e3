// Launch page: kind, tier (with its preset), environment, seeds, every field overridable, resolved config preview.
import { api, ApiError, subscribe } from "./api.js";
import { parseNumber, parseSeeds } from "./forms.js";
import { median } from "./runsummary.js";
import { clear, debounce, errorText, fmtDuration, h, parseTime, toast } from "./ui.js";

// Chosen at the top of the form rather than in the field grid.
const TOP_FIELDS = new Set(["kind", "tier", "preset", "domain", "task", "seed", "synthetic"]);
// Shown first, outside the "all fields" section: the issue asks for them by name.
const KEY_FIELDS = ["debug", "nan_policy", "use_3d_conv", "temporal_downsample"];
// Fields with a closed set of values get a select (device stays free text: cuda:N is allowed).
const CHOICES = { nan_policy: ["stop", "skip"], data_on_gpu: ["auto", "always", "never"], compression: ["lzf", "gzip"] };

// GET /api/tiers: {tiers: {N: {preset, train, collect}}, presets: {debug}, domains, synthetic, fields, choices}.
// Presets are looked up as tierN or by name (debug).
export function presetsOf(t) {
  const out = { ...t.presets };
  for (const [n, v] of Object.entries(t.tiers)) out[`tier${n}`] = v.preset;
  return out;
}

// The field's type as the API names it (TrainConfig/CollectConfig annotations): int, float, bool, str.
function fieldType(f) {
  return ["int", "float", "bool"].includes(f.type) ? f.type : "str";
}

export async function mount(root, { query }) {
  const t = await api("/tiers");
  const tiers = { presets: presetsOf(t), fields: t.fields, tasks: t.domains, synthetic: t.synthetic, choices: t.choices };
  const st = {
    kind: query.get("kind") || "train",
    tier: Number(query.get("tier") || 1),
    preset: query.get("preset") || "",
    synthetic: ["1", "true"].includes(query.get("synthetic") || ""),
    domain: query.get("domain") || "",
    task: query.get("task") || "",
    seeds: query.get("seeds") || "0",
    tags: "",
    overrides: {},
    resolved: null,
    errors: {},
    localErrors: {}, // field -> message for text that is not a number (never sent, never silently replaced)
  };
  // Any other query parameter naming a config field is an override (the datasets page's "train on this" sets
  // data_path, tier, domain and task).
  const known = new Set([...t.fields.train, ...t.fields.collect].map((f) => f.name));
  for (const [k, v] of query.entries()) {
    if (!TOP_FIELDS.has(k) && k !== "seeds" && known.has(k)) st.overrides[k] = v;
  }
  // Finished runs measured on this machine: the launch estimate comes from them.
  let measured = [];
  const loadMeasured = async () => {
    measured = (await api("/runs", { query: { status: "succeeded", limit: 1000 } })).items;
  };
  const inputs = new Map(); // field -> {input, err, wrap}

  const fieldBox = (name, label, input, help) => {
    const err = h("span.err", { id: `err-${name}`, role: "alert" });
    input.id = input.id || `f-${name}`;
    input.setAttribute("aria-describedby", `err-${name}`);
    const wrap = h("div.field", { dataset: { field: name } }, h("label", { for: input.id }, label), input,
      help ? h("span.help", help) : null, err);
    inputs.set(name, { input, err, wrap });
    return wrap;
  };

  const kindSel = h("select", { onchange: () => set({ kind: kindSel.value }) },
    h("option", { value: "train" }, "train: fit a world model"),
    h("option", { value: "collect" }, "collect: record episodes to HDF5"));
  const tierSel = h("select", { onchange: () => set({ tier: Number(tierSel.value) }) },
    [1, 2, 3].map((t) => h("option", { value: t }, `tier ${t}`)));
  const presetSel = h("select", { onchange: () => set({ preset: presetSel.value }) },
    h("option", { value: "" }, "none (full tier)"), h("option", { value: "debug" }, "debug (tiny, seconds on a CPU)"));
  const synthBox = h("input", { type: "checkbox", onchange: () => set({ synthetic: synthBox.checked }) });
  // A new domain starts on its first task, so the pair is always valid.
  const domainSel = h("select", { onchange: () => set({ domain: domainSel.value, task: tiers.tasks[domainSel.value]?.[0] ?? "" }) });
  const taskSel = h("select", { onchange: () => set({ task: taskSel.value }) });
  const seedsInput = h("input", { type: "text", placeholder: "0, 1, 2 or 0-4", oninput: () => set({ seeds: seedsInput.value }) });
  const tagsInput = h("input", { type: "text", placeholder: "comma separated", oninput: () => (st.tags = tagsInput.value) });
  kindSel.value = st.kind;
  tierSel.value = String(st.tier);
  presetSel.value = st.preset;
  synthBox.checked = st.synthetic;
  seedsInput.value = st.seeds;

  const presetView = h("div.small#preset-values");
  const keyFields = h("div.form-grid");
  const allFields = h("div.form-grid");
  const resolvedView = h("pre#resolved", "…");
  const summary = h("p.small.muted");
  const submitBtn = h("button.primary#submit", { type: "submit" }, "Launch");
  const formErrors = h("div.form-errors#form-errors", { role: "alert", hidden: true });
  const estimateView = h("p.estimate#estimate", "Estimating…");

  const form = h("form#launch-form", { onsubmit: submit, novalidate: true },
    h("div.grid2",
      h("fieldset", h("legend", "What to run"),
        h("div.form-grid",
          fieldBox("kind", "Kind", kindSel),
          fieldBox("tier", "Tier", tierSel, "Presets from the seed's tier guide."),
          fieldBox("preset", "Extra preset", presetSel),
          fieldBox("synthetic", "Synthetic environment", synthBox, "Procedural bouncing ball: no MuJoCo, no dataset needed."),
          fieldBox("domain", "Domain", domainSel),
          fieldBox("task", "Task", taskSel),
          fieldBox("seeds", "Seeds (one run per seed)", seedsInput),
          fieldBox("tags", "Tags", tagsInput))),
      h("fieldset", h("legend", "Preset values"), presetView)),
    h("fieldset#key-fields", h("legend", "Debugging and architecture"), keyFields),
    h("fieldset", h("details", h("summary", "All fields (override any preset value)"), allFields)),
    h("fieldset", h("legend", "Resolved configuration (what the worker will run)"), summary, resolvedView),
    formErrors,
    h("div.row.launch-row", submitBtn, h("a.btn", { href: "/" }, "Cancel"), estimateView),
    h("p.small.muted", "One run per seed; several seeds go to the runs list."));
  clear(root, h("div.head", h("h1", "Launch a run")), form);

  function set(patch) {
    Object.assign(st, patch);
    if ("kind" in patch) buildFields();
    if ("synthetic" in patch || "kind" in patch || "tier" in patch || "domain" in patch) fillEnv();
    refresh();
  }

  function fillEnv() {
    const synth = st.synthetic;
    domainSel.disabled = taskSel.disabled = synth;
    if (synth) {
      clear(domainSel, h("option", tiers.synthetic.domain));
      clear(taskSel, h("option", tiers.synthetic.task));
      return;
    }
    const domains = Object.keys(tiers.tasks).sort();
    const preset = tiers.presets[`tier${st.tier}`] ?? {};
    clear(domainSel, h("option", { value: "" }, `tier default (${preset.domain ?? "?"})`),
      domains.map((d) => h("option", { value: d }, d)));
    domainSel.value = st.domain;
    const tasks = st.domain ? tiers.tasks[st.domain] ?? [] : [];
    clear(taskSel, st.domain ? null : h("option", { value: "" }, `tier default (${preset.task ?? "?"})`),
      tasks.map((t) => h("option", { value: t }, t)));
    taskSel.value = st.task;
  }

  function buildFields() {
    const fields = tiers.fields[st.kind] ?? [];
    for (const name of [...inputs.keys()]) if (inputs.get(name).wrap.dataset.dyn) inputs.delete(name);
    clear(keyFields);
    clear(allFields);
    for (const f of fields) {
      if (TOP_FIELDS.has(f.name)) continue;
      const type = fieldType(f);
      let input;
      if (type === "bool") input = h("input", { type: "checkbox" });
      else if (CHOICES[f.name]) input = h("select", (tiers.choices[f.name] ?? CHOICES[f.name]).map((c) => h("option", { value: c }, c)));
      // Numbers are typed as text and checked here: an <input type=number> reports "1e" or "--4" as empty, which
      // would silently fall back to the preset.
      else input = h("input", { type: "text", inputmode: type === "int" ? "numeric" : type === "float" ? "decimal" : "text",
        autocomplete: "off", spellcheck: false });
      input.addEventListener(type === "bool" || input.tagName === "SELECT" ? "change" : "input", () => {
        const raw = type === "bool" ? input.checked : input.value;
        delete st.localErrors[f.name];
        if (raw === "" && type !== "str") delete st.overrides[f.name]; // empty: the preset's value again
        else if (type === "int" || type === "float") {
          const n = parseNumber(raw, type);
          if (n.error) {
            st.localErrors[f.name] = n.error;
            delete st.overrides[f.name];
          } else st.overrides[f.name] = n.value;
        } else st.overrides[f.name] = raw;
        refresh();
      });
      const box = fieldBox(f.name, f.name, input, f.help);
      box.dataset.dyn = "1";
      (KEY_FIELDS.includes(f.name) ? keyFields : allFields).append(box);
    }
    st.overrides = Object.fromEntries(Object.entries(st.overrides).filter(([k]) => fields.some((f) => f.name === k)));
    keyFields.parentElement.hidden = !keyFields.children.length; // a collection has none of them
  }

  function body(seeds) {
    const b = { kind: st.kind, tier: st.tier, overrides: { ...st.overrides } };
    if (st.preset) b.preset = st.preset;
    if (st.synthetic) b.synthetic = true;
    else {
      if (st.domain) b.domain = st.domain;
      if (st.task) b.task = st.task;
    }
    if (seeds.length === 1) b.seed = seeds[0];
    else if (seeds.length > 1) b.seeds = seeds;
    const tags = st.tags.split(",").map((t) => t.trim()).filter(Boolean);
    if (tags.length) b.tags = tags;
    return b;
  }

  function showErrors(serverErrors) {
    const errors = { ...serverErrors, ...st.localErrors };
    st.errors = errors;
    for (const [name, { input, err }] of inputs) {
      err.textContent = errors[name] ?? "";
      input.classList.toggle("invalid", Boolean(errors[name]));
    }
    const orphan = Object.entries(errors).filter(([k]) => !inputs.has(k));
    if (orphan.length) summary.textContent = orphan.map(([k, v]) => `${k}: ${v}`).join("; ");
    const n = Object.keys(errors).length;
    submitBtn.disabled = n > 0;
    formErrors.hidden = !n;
    clear(formErrors, n ? [h("b", `Fix ${n} field${n > 1 ? "s" : ""} to launch: `),
      Object.keys(errors).map((k, i) => [i ? ", " : "", h("a", { href: `#f-${k}`, onclick: (e) => {
        e.preventDefault();
        const box = inputs.get(k)?.wrap;
        box?.closest("details")?.setAttribute("open", "");
        inputs.get(k)?.input.focus();
      } }, k)])] : null);
  }

  function showPreset() {
    const p = { ...(tiers.presets[`tier${st.tier}`] ?? {}), ...(st.preset ? tiers.presets[st.preset] ?? {} : {}) };
    const names = new Set((tiers.fields[st.kind] ?? []).map((f) => f.name));
    const rows = Object.entries(p).filter(([k]) => !names.size || names.has(k));
    clear(presetView, h("table", h("tbody", rows.map(([k, v]) => h("tr", { dataset: { field: k } }, h("td", k),
      h("td.num", String(v), st.synthetic && (k === "domain" || k === "task") ? h("span.muted", " (synthetic instead)") : null))))));
  }

  let seq = 0;
  const refresh = debounce(async () => {
    showPreset();
    let seeds;
    try {
      seeds = parseSeeds(st.seeds);
    } catch (e) {
      showErrors({ seeds: e.message.replace(/^seeds: /, "") });
      return;
    }
    const mine = ++seq;
    try {
      const r = await api("/runs/resolve", { method: "POST", body: body(seeds) });
      if (mine !== seq) return;
      const cfgs = r.runs;
      st.resolved = cfgs[0];
      showErrors({});
      const n = Math.max(1, seeds.length);
      submitBtn.textContent = n > 1 ? `Launch ${n} runs` : "Launch";
      summary.textContent = `${n} ${st.kind} run${n > 1 ? "s" : ""}: ${cfgs.map((c) => c.name ?? "").filter(Boolean).join(", ")}`;
      resolvedView.textContent = JSON.stringify(st.resolved.config, null, 2);
      if (st.kind === "train" && !st.synthetic && !st.resolved.data_exists) {
        summary.append(h("br"), h("b", "No dataset yet: "), "the server queues its collection first.");
      }
      fillResolved(st.resolved.config);
      showEstimate(cfgs.map((c) => c.config), !st.synthetic && st.kind === "train" && !st.resolved.data_exists);
    } catch (e) {
      if (mine !== seq) return;
      if (e instanceof ApiError && e.status === 422) {
        const errs = e.fieldErrors();
        showErrors(Object.keys(errs).length ? errs : { kind: errorText(e) });
      } else summary.textContent = `Could not resolve: ${errorText(e)}`;
    }
  }, 200);

  function fillResolved(cfg) {
    for (const [name, { input, wrap }] of inputs) {
      if (!wrap.dataset.dyn || !(name in cfg)) continue;
      wrap.classList.toggle("changed", name in st.overrides);
      if ((name in st.overrides && document.activeElement === input) || name in st.localErrors) continue;
      const v = cfg[name];
      if (input.type === "checkbox") input.checked = Boolean(v);
      else if (document.activeElement !== input) input.value = v ?? "";
    }
  }

  async function submit(ev) {
    ev.preventDefault();
    let seeds;
    try {
      seeds = parseSeeds(st.seeds);
    } catch (e) {
      showErrors({ seeds: e.message });
      return;
    }
    submitBtn.disabled = true;
    try {
      const r = await api("/runs", { method: "POST", body: body(seeds) });
      const runs = Array.isArray(r) ? r : r.runs ?? [r];
      toast(`Launched ${runs.length} run${runs.length > 1 ? "s" : ""}.`);
      location.href = runs.length === 1 ? `/runs/${runs[0].id}` : "/";
    } catch (e) {
      submitBtn.disabled = false;
      if (e instanceof ApiError && e.status === 422) showErrors(e.fieldErrors());
      else toast(`Launch failed: ${errorText(e)}`, "error");
    }
  }

  // How long the run will take here, from finished runs of the same kind, tier, preset and environment measured
  // on this server's workers (their wall time per epoch or per episode, scaled to this run's budget).
  function measure(kind, cfg) {
    const same = measured.filter((r) => r.kind === kind && r.tier === cfg.tier && (r.preset ?? null) === (cfg.preset ?? null)
      && r.domain === cfg.domain && r.task === cfg.task && r.started_at && r.finished_at && !r.config.resume);
    const per = same.map((r) => (parseTime(r.finished_at) - parseTime(r.started_at)) / 1000 /
      (kind === "train" ? r.config.num_epochs : r.config.num_episodes));
    const unit = kind === "train" ? "epoch" : "episode";
    const count = kind === "train" ? cfg.num_epochs : cfg.num_episodes;
    const hw = [...new Set(same.map((r) => r.worker_gpu || "CPU"))].join(", ");
    return same.length ? { seconds: median(per) * count, per: median(per), n: same.length, unit, count, hw } : null;
  }

  function showEstimate(cfgs, needsData) {
    const cfg = cfgs[0];
    const env = `${cfg.domain}-${cfg.task}`;
    const what = `tier ${cfg.tier}${cfg.preset ? ` ${cfg.preset}` : ""} ${st.kind} on ${env}`;
    const m = measure(st.kind, cfg);
    const parts = [];
    if (!m) {
      clear(estimateView, h("span.muted", `No estimate yet: no finished ${what} run on this machine to measure from.`,
        cfg.preset === "debug" ? "" : " A debug-preset run takes seconds and shows the machine works."));
      return;
    }
    let total = m.seconds * cfgs.length;
    parts.push(`${fmtDuration(m.per)} per ${m.unit} × ${m.count} ${m.unit}s`);
    if (needsData) {
      // The collection the server queues for it: the tier's collect config with the same extra preset.
      const collect = { ...t.tiers[cfg.tier].collect, ...(cfg.preset ? t.presets[cfg.preset] : {}) };
      const c = measure("collect", { ...cfg, num_episodes: collect.num_episodes });
      if (c && Number.isFinite(c.seconds)) {
        total += c.seconds;
        parts.push(`plus ${fmtDuration(c.seconds)} to collect its dataset`);
      } else parts.push("plus its dataset collection (not measured here yet)");
    }
    clear(estimateView, h("b", `Estimated ≈ ${fmtDuration(total)} on this machine`),
      h("span.small.muted", ` (${parts.join(", ")}${cfgs.length > 1 ? `, × ${cfgs.length} runs one after another on one worker` : ""}; `,
        `median of ${m.n} finished run${m.n > 1 ? "s" : ""} like it here: ${what}, on ${m.hw})`));
  }

  buildFields();
  fillEnv();
  await loadMeasured().catch(() => {});
  refresh();
  // Live: the estimate follows runs that finish meanwhile; the top bar shows the connection.
  subscribe("/events", { status: (d) => {
    if (["succeeded"].includes(d.status)) loadMeasured().then(refresh).catch(() => {});
  } });
}
