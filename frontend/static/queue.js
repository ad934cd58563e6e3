// Queue page: waiting jobs per queue in order, each worker's active job, GPU name/utilisation/memory; live.
import { api, subscribe } from "./api.js";
import { clear, coalesce, emptyState, errorText, fmtDuration, fmtNum, h, parseTime } from "./ui.js";

function runLink(r) {
  const id = r.run_id ?? r.id;
  return id != null ? h("a", { href: `/runs/${id}` }, r.name || `run ${id}`) : r.name || "—";
}

function pct(v) {
  return v == null ? "—" : `${fmtNum(v, 3)}%`;
}

// The worker's GPUs as NVML reports them: name, utilisation, memory.
export function gpuCell(w) {
  const gpus = w.gpus ?? (w.gpu && typeof w.gpu === "object" ? [w.gpu] : []);
  if (!gpus.length) return h("td", typeof w.gpu === "string" ? w.gpu : h("span.muted", "none (CPU)"));
  return h("td", gpus.map((g) => h("div",
    h("b", g.name ?? "GPU"), ` #${g.index ?? 0}`, " · util ", pct(g.util_percent),
    " · memory ", g.mem_used_mb != null ? `${fmtNum(g.mem_used_mb / 1024, 3)} / ${fmtNum(g.mem_total_mb / 1024, 3)} GiB` : "—")));
}

export async function mount(root) {
  const body = h("div");
  const stamp = h("span.small.muted");
  clear(root, h("div.head", h("h1", "Queue"), stamp, h("span.spacer"), h("a.btn", { href: "/launch" }, "Launch a run")), body);

  async function load() {
    let q;
    try {
      q = await api("/queue");
    } catch (e) {
      clear(body, h("div.error-box", "Could not read the queue: ", errorText(e)));
      return;
    }
    stamp.textContent = `updated ${new Date().toLocaleTimeString()}`;
    const queues = Object.entries(q.queues ?? {}).map(([name, v]) => ({ name, ...v }));
    const workers = q.workers ?? [];
    const active = q.active ?? [];
    const hostOf = (w) => w.hostname ?? w.host ?? w.name ?? "?";
    // A worker reports the run it is on; the API's `active` list adds that run's progress.
    const jobsOf = (w) => (w.active ? [{ ...w.active, ...(active.find((r) => r.run_id === w.active.run_id) ?? {}) }] : []);
    clear(body,
      h("div.card", h("h2", `Workers (${workers.length})`),
        workers.length ? h("div.table-wrap", h("table#workers",
          h("thead", h("tr", ["Worker", "Queues", "Active job", "GPU", "Last seen"].map((t) => h("th", t)))),
          h("tbody", workers.map((w) => {
            const jobs = jobsOf(w);
            return h("tr", { dataset: { worker: hostOf(w) } },
              h("td", h("b", hostOf(w)), w.machine ? h("div.small.muted", `${w.machine} · pid ${w.pid ?? "?"}`) : null),
              h("td", (w.queues ?? (w.queue ? [w.queue] : [])).join(", ") || "—"),
              h("td", jobs.length ? jobs.map((r) => h("div", runLink(r),
                r.progress?.total ? h("span.small.muted", ` ${r.progress.done ?? 0}/${r.progress.total} ${r.progress.unit ?? ""}s`) : null))
                : h("span.muted", "idle")),
              gpuCell(w),
              h("td.small", lastSeen(w)));
          }))))
          : emptyState("No worker is connected",
            h("p", "Runs wait in the queue until a worker takes them. ", h("code", "aime up"),
              " starts one collect and one train worker; on another machine run ", h("code", "aime worker"), "."))),
      active.length ? h("div.card", h("h2", `Running now (${active.length})`), h("table#active",
        h("thead", h("tr", ["Run", "Kind", "Worker", "GPU", "Progress"].map((t) => h("th", t)))),
        h("tbody", active.map((r) => h("tr", h("td", runLink(r)), h("td", r.kind), h("td", r.worker_host ?? "—"),
          h("td", r.worker_gpu ?? "CPU"),
          h("td.small", r.progress?.total ? `${r.progress.done ?? 0} / ${r.progress.total} ${r.progress.unit ?? ""}s` : "—")))))) : null,
      h("div.grid2", queues.map((qu) => {
        const waiting = qu.waiting ?? [];
        const blocked = qu.waiting_for_data ?? [];
        return h("div.card", { dataset: { queue: qu.name } },
          h("h2", `Queue “${qu.name}” · ${waiting.length} waiting`),
          waiting.length ? h("table",
            h("thead", h("tr", h("th.num", "Position"), h("th", "Run"), h("th", "Queued for"))),
            h("tbody", waiting.map((r, i) => h("tr",
              h("td.num", String(r.position ?? i + 1)), h("td", runLink(r)),
              h("td.small", r.created_at ? fmtDuration((Date.now() - parseTime(r.created_at)) / 1000) : "—")))))
            : h("p.muted", "Nothing waiting."),
          blocked.length ? h("div", h("h3", { style: { marginTop: "10px" } }, `Waiting for their dataset (${blocked.length})`),
            h("ul.small", blocked.map((r) => h("li", runLink(r), " waits for collection ",
              h("a", { href: `/runs/${r.waits_for}` }, `run ${r.waits_for}`))))) : null);
      })));
  }

  function lastSeen(w) {
    const t = w.seen ?? w.last_seen;
    if (t == null) return "—";
    const ms = typeof t === "number" ? t * 1000 : parseTime(t);
    return `${fmtDuration(Math.max(0, Date.now() - ms) / 1000)} ago`;
  }

  await load();
  const reload = coalesce(load, 300);
  subscribe("/events", { ready: reload, status: reload, deleted: reload }); // ready: no gap after the first fetch
  setInterval(() => document.visibilityState === "visible" && load(), 3000); // GPU utilisation changes silently
}
