// Router: picks the page module from the path and mounts it into <main id="app">.
import { ensureToken, getToken, setToken, takeTokenFromUrl } from "./api.js";
import { clear, errorText, h, toast } from "./ui.js";

const ROUTES = [
  [/^\/?$/, "runs", () => import("./runs.js")],
  [/^\/runs\/?$/, "runs", () => import("./runs.js")],
  [/^\/runs\/(\d+)\/?$/, "runs", () => import("./run.js")],
  [/^\/launch\/?$/, "launch", () => import("./launch.js")],
  [/^\/queue\/?$/, "queue", () => import("./queue.js")],
  [/^\/compare\/?$/, "compare", () => import("./compare.js")],
  [/^\/datasets\/?$/, "datasets", () => import("./datasets.js")],
  [/^\/sweeps\/?$/, "sweeps", () => import("./sweeps.js")],
  [/^\/sweeps\/(\d+)\/?$/, "sweeps", () => import("./sweep.js")],
];

async function main() {
  takeTokenFromUrl();
  await ensureToken();
  const tokenBtn = document.getElementById("token-btn");
  const askToken = () => {
    const t = prompt("API token (printed by `aime up`, stored in its data directory):", getToken());
    if (t !== null) {
      setToken(t);
      toast("Token saved in this browser.");
    }
  };
  tokenBtn.addEventListener("click", askToken);
  tokenBtn.hidden = Boolean(getToken());
  document.addEventListener("aime:auth-needed", () => {
    tokenBtn.hidden = false;
    toast("This action needs the API token: click “Set token” in the top bar.", "error");
  });

  const root = document.getElementById("app");
  const path = location.pathname;
  const route = ROUTES.find(([re]) => re.test(path));
  if (!route) {
    clear(root, h("div.empty", h("h2", "Page not found"), h("p", h("a", { href: "/" }, "Go to the runs"))));
    return;
  }
  const [re, nav, load] = route;
  for (const a of document.querySelectorAll("header nav a")) {
    if (a.dataset.page === nav) a.setAttribute("aria-current", "page");
  }
  try {
    const mod = await load();
    const match = path.match(re);
    await mod.mount(root, { params: match.slice(1), query: new URLSearchParams(location.search) });
  } catch (e) {
    console.warn(e);
    clear(root, h("div.error-box", h("h2", "Could not load this page"), h("p", errorText(e))));
  }
}

main();
