// The seed's "Performance Comparison" table (epoch time per environment × tier), built from measured runs.
import { api } from "./api.js";
import { normalizeSeries } from "./charts.js";
import { clear, envName, errorText, fmtDuration, h, parseTime } from "./ui.js";

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

// Median epoch time of one run from its `perf/epoch_time` series, counting only the epochs this run's own process
// trained: a resumed run carries its parent's points (they count in the parent's measurement), and its first own
// epoch is the rest of the interrupted one. The first own epoch is dropped when there are more (warm-up); a
// resumed run with a single own epoch is not counted (that epoch is partial). `wall`: seconds since the epoch.
export function runEpochTime(values, wall, startedAt, resumed) {
  const start = startedAt == null ? -Infinity : startedAt / 1000;
  const own = values.filter((x, i) => Number.isFinite(x) && (wall[i] == null || wall[i] >= start));
  if (!own.length) return null;
  if (own.length >= 2) return median(own.slice(1));
  return resumed ? null : own[0];
}

function secs(s) {
  return s < 60 ? `${s.toFixed(s < 10 ? 2 : 1)} s` : fmtDuration(s);
}

export async function epochTimeTable(card) {
  const title = card.querySelector("h2");
  try {
    const resp = await api("/runs", { query: { kind: "train", limit: 1000 } });
    const runs = resp.items.filter((r) => r.latest["perf/epoch_time"]);
    if (!runs.length) {
      clear(card, title, h("p.muted", "No measurement yet: every finished training epoch records ",
        h("code", "perf/epoch_time"), ". Train a run (any tier) and its time per epoch appears here."));
      return;
    }
    const series = await api("/metrics", { query: { runs: runs.map((r) => r.id).join(","), key: "perf/epoch_time", buckets: 20000 } });
    // cell key: environment | hardware -> tier -> [per-run epoch times]
    const cells = new Map();
    for (const r of runs) {
      const s = normalizeSeries(series.runs[String(r.id)]);
      const t = runEpochTime(s.y, s.wall, parseTime(r.started_at), Boolean(r.config.resume));
      if (t === null) continue;
      const hw = r.worker_gpu || "CPU";
      const row = `${envName(r)}|${hw}${r.preset ? ` · ${r.preset} preset` : ""}`;
      if (!cells.has(row)) cells.set(row, new Map());
      const byTier = cells.get(row);
      if (!byTier.has(r.tier)) byTier.set(r.tier, []);
      byTier.get(r.tier).push(t);
    }
    const rows = [...cells.keys()].sort();
    clear(card, title,
      h("p.small.muted", "Median seconds per epoch over the epochs each run trained itself (its first epoch dropped when ",
        "it has more, as it pays for warm-up; a resumed run's copied history and its partial first epoch never count), ",
        "then the median over runs; n = runs measured. Rows split by hardware, since the seed's table is for an RTX 3090."),
      h("table#epoch-time-table",
        h("thead", h("tr", h("th", "Environment"), h("th", "Hardware"),
          [1, 2, 3].map((t) => h("th.num", `Tier ${t}`)))),
        h("tbody", rows.map((row) => {
          const [env, hw] = row.split("|");
          const byTier = cells.get(row);
          return h("tr", { dataset: { env } }, h("td", env), h("td.small", hw), [1, 2, 3].map((t) => {
            const v = byTier.get(t);
            return h("td.num", v ? `${secs(median(v))} · n=${v.length}` : "—");
          }));
        }))));
  } catch (e) {
    clear(card, title, h("p.error-box", "Could not build the table: ", errorText(e)));
  }
}
