// Small DOM and formatting helpers shared by the pages (no framework).

// h("div.card#x", {onclick, title}, child, "text", [more children])
export function h(tag, attrs, ...children) {
  const [name, ...rest] = tag.split(/(?=[.#])/);
  const el = document.createElement(name || "div");
  for (const part of rest) {
    if (part[0] === ".") el.classList.add(part.slice(1));
    else el.id = part.slice(1);
  }
  if (attrs !== null && attrs !== undefined && (typeof attrs !== "object" || attrs instanceof Node || Array.isArray(attrs))) {
    children.unshift(attrs);
    attrs = null;
  }
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "style" && typeof v === "object") Object.assign(el.style, v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k in el && typeof v !== "string") el[k] = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export const STATUS_CLASS = {
  queued: "st-queued",
  running: "st-running",
  succeeded: "st-ok",
  failed: "st-failed",
  cancelled: "st-cancelled",
  lost: "st-lost",
  cancelling: "st-cancelled",
};

export function statusBadge(status) {
  return h("span.badge", { class: `badge ${STATUS_CLASS[status] || ""}` }, status || "?");
}

export function fmtNum(x, digits = 4) {
  if (x === null || x === undefined || x === "") return "—";
  if (typeof x === "string") {
    if (/^(nan|inf|-inf|infinity|-infinity)$/i.test(x)) return x;
    const n = Number(x);
    if (Number.isNaN(n)) return x;
    x = n;
  }
  if (typeof x !== "number") return String(x);
  if (!Number.isFinite(x)) return String(x);
  if (Number.isInteger(x) && Math.abs(x) < 1e9) return String(x);
  const a = Math.abs(x);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return x.toExponential(2);
  return String(Number(x.toPrecision(digits)));
}

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "—";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, "0")}s`;
  const hr = Math.floor(m / 60);
  return `${hr}h ${String(m % 60).padStart(2, "0")}m`;
}

export function fmtBytes(n) {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

export function parseTime(t) {
  if (!t) return null;
  // Naive ISO times from the server are UTC.
  const s = typeof t === "string" && !/[zZ]|[+-]\d\d:?\d\d$/.test(t) ? `${t}Z` : t;
  const ms = Date.parse(s);
  return Number.isNaN(ms) ? null : ms;
}

export function fmtTime(t) {
  const ms = parseTime(t);
  return ms === null ? "—" : new Date(ms).toLocaleString();
}

// Seconds a run has taken (or is taking).
export function runDuration(run) {
  const start = parseTime(run.started_at);
  if (start === null) return null;
  const end = parseTime(run.finished_at) ?? Date.now();
  return (end - start) / 1000;
}

export function envName(run) {
  return `${run.domain}-${run.task}`;
}

let toastTimer = null;
export function toast(message, kind = "info") {
  const el = document.getElementById("toast");
  if (!el) return;
  el.textContent = message;
  el.className = `show ${kind}`;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (el.className = ""), kind === "error" ? 8000 : 3000);
}

export function errorText(e) {
  if (e && e.detail !== undefined) {
    const d = e.detail;
    if (typeof d === "string") return d;
    if (Array.isArray(d)) return d.map((x) => x.msg || x.message || JSON.stringify(x)).join("; ");
    if (d && d.message) return d.field ? `${d.field}: ${d.message}` : d.message;
    return JSON.stringify(d);
  }
  return String((e && e.message) || e);
}

export function emptyState(title, ...body) {
  return h("div.empty", h("h2", title), ...body);
}

// Re-render inside `container` without losing the keyboard focus (live updates must not steal it).
export function keepFocus(container, render) {
  const active = document.activeElement;
  const id = active && container.contains(active) ? active.id : "";
  render();
  if (id && document.activeElement !== document.getElementById(id)) document.getElementById(id)?.focus();
}

/** Run fn once, `ms` after the first call; calls meanwhile join that run. Unlike debounce, a steady stream of
 * calls (progress events every 200 ms) cannot postpone it forever. */
export function coalesce(fn, ms) {
  let t = null;
  return (...args) => {
    if (t === null) t = setTimeout(() => { t = null; fn(...args); }, ms);
  };
}

export function debounce(fn, ms) {
  let t = null;
  return (...args) => {
    clearTimeout(t);
    t = setTimeout(() => fn(...args), ms);
  };
}
