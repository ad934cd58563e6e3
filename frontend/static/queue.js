// Queue page: waiting jobs per queue in order, each worker's active job, GPU name/utilisation/memory; live.
import { api, subscribe } from "./api.js";
import { etaOf, progressText } from "./runsummary.js";
import { clear, coalesce, emptyState, errorText, fmtDuration, fmtNum, h, parseTime } from "./ui.js";

const QUEUE_NOTES = {
  collect: "Collections of DeepMind Control episodes (CPU).",
  synthetic: "Synthetic datasets, generated in seconds by their own worker: never behind a real collection.",
  train: "Training runs, one at a time per training worker.",
};

// Queue entries, active jobs and worker jobs all name their run by run_id.
function runLink(r) {
  return h("a", { href: `/runs/${r.run_id}` }, r.name || `run ${r.run_id}`);
}

// Progress and time left of a running run (its full record from GET /api/runs?status=running).
function progressCell(run) {
  if (!run) return h("td.small", "—");
  const eta = etaOf(run);
  return h("td.small", progressText(run) || "starting…",
    eta ? h("span.eta", { title: `from ${eta.basis}` }, ` · ≈ ${fmtDuration(eta.seconds)} left`) : null);
}

function pct(v) {
  return v == null ? "—" : `${fmtNum(v, 3)}%`;
}

// The worker's GPUs as NVML reports them: name, utilisation, memory.
export function gpuCell(w) {
  const gpus = w.gpus;
  if (!gpus.length) return h("td", h("span.muted", "none (CPU)"));
  return h("td", gpus.map((g) => h("div",
    h("b", g.name), ` #${g.index}`, " · util ", pct(g.util_percent),
    " · memory ", g.mem_used_mb != null ? `${fmtNum(g.mem_used_mb / 1024, 3)} / ${fmtNum(g.mem_total_mb / 1024, 3)} GiB` : "—")));
}

export async function mount(root) {
  const body = h("div");
  const stamp = h("span.small.muted");
  clear(root, h("div.head", h("h1", "Queue"), stamp, h("span.spacer"), h("a.btn", { href: "/launch" }, "Launch a run")), body);

  async function load() {
    let q;
    let running;
    try {
      [q, running] = await Promise.all([api("/queue"), api("/runs", { query: { status: "running", limit: 200 } })]);
    } catch (e) {
      clear(body, h("div.error-box", "Could not read the queue: ", errorText(e)));
      return;
    }
    stamp.textContent = `updated ${new Date().toLocaleTimeString()}`;
    const queues = Object.entries(q.queues).map(([name, v]) => ({ name, ...v }));
    const workers = q.workers;
    const active = q.active;
    const full = new Map(running.items.map((r) => [r.id, r]));
    const hostOf = (w) => w.hostname;
    // A worker reports the run it is on ({run_id, name, kind}).
    const jobsOf = (w) => (w.active ? [w.active] : []);
    clear(body,
      h("div.card", h("h2", `Workers (${workers.length})`),
        workers.length ? h("div.table-wrap", h("table#workers",
          h("thead", h("tr", ["Worker", "Queues", "Active job", "GPU", "Last seen"].map((t) => h("th", t)))),
          h("tbody", workers.map((w) => {
            const jobs = jobsOf(w);
            return h("tr", { dataset: { worker: hostOf(w) } },
              h("td", h("b", hostOf(w)), w.machine ? h("div.small.muted", `${w.machine} · pid ${w.pid ?? "?"}`) : null),
              h("td", w.queues.join(", ") || "—"),
              h("td", jobs.length ? jobs.map((r) => {
                const run = full.get(r.run_id);
                const eta = run && etaOf(run);
                return h("div", runLink(r), run ? h("span.small.muted", ` ${progressText(run)}`) : null,
                  eta ? h("span.small.eta", ` · ≈ ${fmtDuration(eta.seconds)} left`) : null);
              }) : h("span.muted", "idle")),
              gpuCell(w),
              h("td.small", lastSeen(w)));
          }))))
          : emptyState("No worker is connected",
            h("p", "Runs wait in the queue until a worker takes them. ", h("code", "aime up"),
              " starts one collect and one train worker; on another machine run ", h("code", "aime worker"), "."))),
      active.length ? h("div.card", h("h2", `Running now (${active.length})`), h("table#active",
        h("thead", h("tr", ["Run", "Kind", "Worker", "GPU", "Progress and time left"].map((t) => h("th", t)))),
        h("tbody", active.map((r) => h("tr", { dataset: { runId: r.run_id } }, h("td", runLink(r)), h("td", r.kind),
          h("td", r.worker_host ?? "—"), h("td", r.worker_gpu ?? "CPU"), progressCell(full.get(r.run_id))))))) : null,
      h("div.grid3", queues.map((qu) => {
        const waiting = qu.waiting;
        const blocked = qu.waiting_for_data ?? []; // only the train queue has runs waiting for their dataset
        return h("div.card", { dataset: { queue: qu.name } },
          h("h2", `Queue “${qu.name}” · ${waiting.length} waiting`),
          QUEUE_NOTES[qu.name] ? h("p.small.muted", QUEUE_NOTES[qu.name]) : null,
          waiting.length ? h("table",
            h("thead", h("tr", h("th.num", "Position"), h("th", "Run"), h("th", "Queued for"))),
            h("tbody", waiting.map((r, i) => h("tr",
              h("td.num", String(r.position)), h("td", runLink(r)),
              h("td.small", fmtDuration((Date.now() - parseTime(r.created_at)) / 1000))))))
            : h("p.muted", "Nothing waiting."),
          blocked.length ? h("div", h("h3", { style: { marginTop: "10px" } }, `Waiting for their dataset (${blocked.length})`),
            h("ul.small", blocked.map((r) => h("li", runLink(r), " waits for collection ",
              h("a", { href: `/runs/${r.waits_for}` }, `run ${r.waits_for}`))))) : null);
      })));
  }

  function lastSeen(w) {
    return `${fmtDuration(Math.max(0, Date.now() - w.seen * 1000) / 1000)} ago`;
  }

  await load();
  const reload = coalesce(load, 300);
  // ready: no gap after the first fetch; progress moves the ETA.
  subscribe("/events", { ready: reload, status: reload, deleted: reload, progress: coalesce(load, 2000) });
  setInterval(() => document.visibilityState === "visible" && load(), 3000); // GPU utilisation changes silently
}
