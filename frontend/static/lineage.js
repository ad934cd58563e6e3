// Where a run comes from and what came of it: retry/resume parent and children, a resumed collection, its seed
// group (a link to compare the seeds), its sweep configuration and a promotion. Used by the run page.
import { api } from "./api.js";
import { fmtNum, h } from "./ui.js";

const link = (id, text = `run ${id}`) => h("a", { href: `/runs/${id}` }, text);

// A retry starts from scratch; a resume continues from a checkpoint (its config names it in `resume`).
function howMade(run) {
  return run.kind === "train" && run.config?.resume ? "resume" : "retry";
}

/** The related runs of `run`: {parent, children, group} (children and group members with their status). */
export async function loadLineage(run) {
  const [parent, children, group] = await Promise.all([
    run.parent_id ? api(`/runs/${run.parent_id}`).catch(() => null) : null,
    Promise.all(run.children.map((c) => api(`/runs/${c}`).catch(() => null))),
    run.group_id ? api(`/groups/${encodeURIComponent(run.group_id)}`).catch(() => null) : null,
  ]);
  return { parent, children: children.filter(Boolean), group };
}

export function lineageBox(run, rel = { parent: null, children: [], group: null }) {
  const lin = run.lineage;
  const rows = [];
  if (run.parent_id) {
    const how = howMade(run);
    rows.push(h("dt", how === "resume" ? "Resumed from" : "Retry of"), h("dd#lineage-parent",
      link(run.parent_id), rel.parent ? ` (${rel.parent.status})` : "",
      how === "resume" ? h("span.small.muted", ` · continues from its checkpoint ${String(run.config.resume).split("/").pop()};`,
        " the history up to that step is copied") : null,
      run.kind === "collect" ? h("span.small.muted", " · continues the episodes already written to its file") : null));
  }
  const resumedEpisodes = run.result?.resumed_episodes;
  if (run.kind === "collect" && resumedEpisodes > 0) {
    rows.push(h("dt", "Resumed"), h("dd#collect-resumed",
      `${resumedEpisodes} episode${resumedEpisodes === 1 ? " was" : "s were"} already in the partial file; `,
      "this run collected the rest"));
  }
  if (rel.children.length) {
    rows.push(h("dt", "Continued as"), h("dd#lineage-children", rel.children.map((c, i) => [i ? ", " : "",
      `${howMade(c) === "resume" ? "resumed" : "retried"} as `, link(c.id), ` (${c.status})`])));
  }
  if (run.sweep_id) {
    rows.push(h("dt", "Sweep"), h("dd", h("a", { href: `/sweeps/${run.sweep_id}` }, `sweep ${run.sweep_id}`),
      ` · configuration ${run.sweep_config}`));
  }
  if (run.group_id) {
    const members = rel.group?.runs ?? [];
    const ids = members.map((m) => m.id);
    rows.push(h("dt", "Seed group"), h("dd#seed-group",
      ids.length > 1 ? h("a", { href: `/compare?runs=${ids.join(",")}&group=1` },
        `compare its ${ids.length} runs (seeds ${[...new Set(members.map((m) => m.seed))].join(", ")}), mean ± std`)
        : h("span.small", run.group_id)));
  }
  if (lin.sweep_id) {
    rows.push(h("dt", "Promoted from"), h("dd", h("a", { href: `/sweeps/${lin.sweep_id}` }, `sweep ${lin.sweep_id}`),
      ` configuration ${lin.config} (rank ${lin.rank}, mean ${fmtNum(lin.mean)}), runs `,
      lin.runs.map((r, i) => [i ? ", " : "", link(r, String(r))])));
  }
  if (run.stop_reason) rows.push(h("dt", "Stopped early"), h("dd#stop-reason", run.stop_reason));
  return rows.length ? h("div.card#run-lineage", h("h2", "Lineage"), h("dl.kv", rows)) : null;
}
