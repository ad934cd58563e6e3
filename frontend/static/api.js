// Talking to the backend: JSON fetch with the bearer token, and Server-Sent Events with reconnection.

const TOKEN_KEY = "aime_token";

export class ApiError extends Error {
  constructor(status, detail) {
    super(typeof detail === "string" ? detail : JSON.stringify(detail));
    this.status = status;
    this.detail = detail;
  }

  // FastAPI's 422 detail is a list of {loc, msg} or our own {field, message}; map it to {field: message}.
  fieldErrors() {
    const out = {};
    const items = Array.isArray(this.detail) ? this.detail : [this.detail];
    for (const d of items) {
      if (!d || typeof d !== "object") continue;
      const field = d.field ?? (Array.isArray(d.loc) ? d.loc[d.loc.length - 1] : null);
      if (field != null) out[field] = d.message ?? d.msg ?? JSON.stringify(d);
    }
    return out;
  }
}

export function getToken() {
  return localStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(token) {
  if (token) localStorage.setItem(TOKEN_KEY, token.trim());
  else localStorage.removeItem(TOKEN_KEY);
}

// `?token=...` in the address (printed by `aime up`) is stored once and removed from the bar.
export function takeTokenFromUrl() {
  const url = new URL(location.href);
  const t = url.searchParams.get("token");
  if (!t) return;
  setToken(t);
  url.searchParams.delete("token");
  history.replaceState(null, "", url.pathname + url.search + url.hash);
}

// On localhost the backend hands the token to the page (see docs/CONTRACTS.md); elsewhere it must be pasted.
export async function ensureToken() {
  if (getToken()) return getToken();
  if (!["localhost", "127.0.0.1", "[::1]"].includes(location.hostname)) return ""; // the server would refuse
  try {
    const r = await fetch("/api/session", { headers: { Accept: "application/json" } });
    if (r.ok) {
      const body = await r.json();
      if (body && body.token) setToken(body.token);
    }
  } catch {
    /* no token endpoint: the user pastes it */
  }
  return getToken();
}

export function qs(params) {
  const sp = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v === undefined || v === null || v === "") continue;
    sp.set(k, Array.isArray(v) ? v.join(",") : String(v));
  }
  const s = sp.toString();
  return s ? `?${s}` : "";
}

export async function api(path, { method = "GET", body, query, signal } = {}) {
  const headers = { Accept: "application/json" };
  const token = getToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(`/api${path}${qs(query)}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal,
  });
  if (r.status === 204) return null;
  const text = await r.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = text;
  }
  if (!r.ok) {
    if (r.status === 401 || r.status === 403) document.dispatchEvent(new CustomEvent("aime:auth-needed"));
    throw new ApiError(r.status, data && data.detail !== undefined ? data.detail : data || r.statusText);
  }
  return data;
}

// One live stream. `handlers` maps event names ("metrics", "status", "alert", ...) to functions of the parsed
// data; `open` and `error` are called on connection changes. The browser reconnects by itself; the top bar's
// "● live" shows the state.
const streams = new Set();

export function subscribe(path, handlers) {
  let es = null;
  let closed = false;
  let retry = 1000;
  const names = Object.keys(handlers).filter((n) => n !== "open" && n !== "error");

  // Every event the server sends is named (its `type`) and carries JSON (see backend/core/pubsub.py).
  const dispatch = (name, ev) => handlers[name](JSON.parse(ev.data));

  const open = () => {
    if (closed) return;
    es = new EventSource(`/api${path}`);
    es.onopen = () => {
      retry = 1000;
      setConn(true);
      handlers.open?.();
    };
    for (const n of names) es.addEventListener(n, (ev) => dispatch(n, ev));
    es.onerror = () => {
      setConn(false);
      if (es.readyState === EventSource.CLOSED && !closed) {
        setTimeout(open, retry);
        retry = Math.min(retry * 2, 15000);
      }
    };
  };
  open();
  const sub = {
    close() {
      closed = true;
      es?.close();
      streams.delete(sub);
    },
  };
  streams.add(sub);
  return sub;
}

export function closeAllStreams() {
  for (const s of [...streams]) s.close();
}

function setConn(ok) {
  const el = document.getElementById("conn");
  if (!el) return;
  el.hidden = false;
  el.classList.toggle("ok", ok);
  el.title = ok ? "Live: connected to the event stream" : "Live stream disconnected (reconnecting)";
}

// Close streams before the page goes away so the server does not log broken pipes.
window.addEventListener("pagehide", closeAllStreams);
