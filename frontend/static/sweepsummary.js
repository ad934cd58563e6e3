// Sweep helpers shared by the sweeps list and one sweep's page.

// The server counts runs by status (`counts`) and, separately, the queued ones a sweep holds back under its parallel
// limit (`counts.held`, also inside `counts.queued`): show held runs once, not as queued too.
export function countsText(counts) {
  const held = counts.held ?? 0;
  const shown = { ...counts, queued: (counts.queued ?? 0) - held, held };
  const order = ["running", "queued", "held", "succeeded", "failed", "cancelled", "lost"];
  return order.filter((k) => shown[k] > 0).map((k) => `${shown[k]} ${k}`).join(", ") || "no runs yet";
}
