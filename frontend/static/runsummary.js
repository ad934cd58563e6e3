// What several pages show about one run, read from the run record the API sends (GET /api/runs, /api/runs/{id}):
// progress, latest loss, open alerts, worker, and the time left (ETA) from the run's own measured speed.
import { parseTime } from "./ui.js";

// run.progress is the worker's latest progress event: {done, total, unit, time} plus, for training,
// {epoch, num_epochs, loss} and, for a collection, {"frames/s"}. Empty until the worker reports.
export function progressOf(run) {
  const p = run.progress;
  return { done: p.done, total: p.total, unit: p.unit ?? (run.kind === "collect" ? "episode" : "step"),
    epoch: p.epoch, epochs: p.num_epochs ?? run.config?.num_epochs };
}

// run.latest maps each metric key to [step, value] (value "nan"/"inf"/"-inf" or null when non-finite).
export function latestOf(run, key) {
  const v = run.latest?.[key];
  return v ? v[1] : undefined;
}

export function latestLoss(run) {
  return latestOf(run, "loss");
}

export function alertCount(run) {
  return run.open_alerts ?? 0;
}

export function workerOf(run) {
  return run.worker_host ?? "—";
}

export function progressText(run) {
  const { done, total, unit, epoch, epochs } = progressOf(run);
  if (done == null || !total) return "";
  return run.kind === "train" && epochs ? `epoch ${epoch ?? "?"} of ${epochs} · step ${done} of ${total}`
    : `${done} of ${total} ${unit}s`;
}

function median(xs) {
  const s = xs.filter(Number.isFinite).sort((a, b) => a - b);
  if (!s.length) return null;
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/**
 * Seconds left for a running run, from its own measurements only (null while there are none):
 * - training: seconds per step measured by the run (`perf/epoch_time` over the steps of an epoch once an epoch
 *   has ended, which includes data loading; before that the trainer's `perf/step_time`) times the steps left;
 * - collection: the episodes left at the episodes per second the run has shown since it started.
 * `recentStepTimes`: step times seen live (the run page passes them; the median is steadier than the last one).
 * Returns {seconds, basis}: basis says what it was computed from.
 */
export function etaOf(run, now = Date.now(), recentStepTimes = []) {
  if (run.status !== "running") return null;
  const { done, total, epochs } = progressOf(run);
  if (done == null || !total || done >= total) return null;
  const left = total - done;
  if (run.kind === "train") {
    const epochTime = Number(latestOf(run, "perf/epoch_time"));
    if (epochs && Number.isFinite(epochTime) && epochTime > 0) {
      return { seconds: (left * epochTime * epochs) / total, basis: "its measured time per epoch" };
    }
    // The median of the step times the page saw (one step's time is noisy), else the latest one.
    const stepTime = recentStepTimes.length ? median(recentStepTimes) : Number(latestOf(run, "perf/step_time"));
    if (Number.isFinite(stepTime) && stepTime > 0) return { seconds: left * stepTime, basis: "its measured step time" };
    return null;
  }
  const started = parseTime(run.started_at);
  const at = run.progress?.time ? run.progress.time * 1000 : now;
  if (started == null || !done || at <= started) return null;
  return { seconds: (left * (at - started)) / 1000 / done, basis: "its episodes per second so far" };
}

export { median };
