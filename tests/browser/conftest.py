"""Browser test fixtures: the whole stack started as a user would (`aime up`), and headless Debian chromium."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "test-artifacts" / "browser"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stack:
    """A running `aime up`: base URL, token, and an authenticated HTTP client for setup calls."""

    def __init__(self, url: str, token: str, data_dir: Path, proc: subprocess.Popen):
        self.url, self.token, self.data_dir, self.proc = url, token, data_dir, proc
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)

    def launch(self, **body) -> list[dict]:
        body = {"kind": "train", "tier": 1, "preset": "debug", "synthetic": True} | body
        r = self.http.post("/api/runs", json=body)
        assert r.status_code == 201, r.text
        out = r.json()
        return out if isinstance(out, list) else [out]

    def run(self, run_id: int) -> dict:
        return self.http.get(f"/api/runs/{run_id}").json()

    def wait_status(self, run_id: int, statuses=("succeeded",), timeout: float = 150) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.run(run_id)
            if run["status"] in statuses:
                return run
            if run["status"] in ("failed", "lost", "cancelled") and run["status"] not in statuses:
                raise AssertionError(f"run {run_id} ended {run['status']}: {run.get('error')}")
            time.sleep(0.5)
        raise AssertionError(f"run {run_id} still {self.run(run_id)['status']} after {timeout} s")


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium); browser tests skipped")
    data_dir = tmp_path_factory.mktemp("aime-up")
    port = _free_port()
    # The `aime` command's own module (pyproject's entry point), so a stale installed script cannot differ from it.
    cmd = [sys.executable, "-m", "worker.cli"]
    # No AIME_* from the developer's shell: it could point `aime up` at another Redis, database, token or policy.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIME_")}
    env["MUJOCO_GL"] = os.environ.get("MUJOCO_GL", "egl")
    log = (data_dir / "up.out").open("wb")
    proc = subprocess.Popen(
        [*cmd, "up", "--data-dir", str(data_dir), "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            pytest.fail(
                f"aime up exited with {proc.returncode}:\n{(data_dir / 'up.out').read_text()[-3000:]}"
            )
        try:
            if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("aime up did not answer /api/health within 120 s")
        time.sleep(0.3)
    token = (data_dir / "api_token").read_text().strip()
    s = Stack(url, token, data_dir, proc)
    # The three workers (collect, synthetic, train) announce themselves within a few seconds; tests rely on them.
    deadline = time.monotonic() + 60
    while len(s.http.get("/api/queue").json()["workers"]) < 3 and time.monotonic() < deadline:
        time.sleep(0.3)
    yield s
    proc.send_signal(signal.SIGINT)  # aime up stops the workers, then the API, then Redis
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()


@pytest.fixture(scope="session")
def browser(stack):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, stack, request):
    """A 1280 px wide page; a console error, an uncaught exception or a request off this machine fails the test."""
    # bypass_csp: Playwright's wait_for_function evaluates its string predicates with eval, which the pages' CSP
    # (script-src 'self') refuses; test_pages_look_right loads every page with the CSP enforced instead.
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=stack.url, bypass_csp=True)
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on(
        "console",
        lambda m: m.type == "error" and errors.append(f"console: {m.text} ({m.location.get('url')})"),
    )
    pg.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    local = (stack.url, "data:", "blob:")
    pg.on("request", lambda r: r.url.startswith(local) or errors.append(f"request off this machine: {r.url}"))
    pg.set_default_timeout(30_000)
    pg.errors = errors
    yield pg
    ctx.close()
    assert errors == [], f"{request.node.name}: browser console errors:\n" + "\n".join(errors)


@pytest.fixture
def shot(page):
    """shot(name): full-page screenshot under test-artifacts/browser/ (gitignored) to look at after the run."""

    def take(name: str) -> Path:
        SHOTS.mkdir(parents=True, exist_ok=True)
        path = SHOTS / f"{name}.png"
        page.evaluate("window.scrollTo(0, 0)")  # else the sticky top bar lands mid-page in a full-page shot
        page.screenshot(path=str(path), full_page=True)
        return path

    return take
