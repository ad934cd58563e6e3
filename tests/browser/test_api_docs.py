"""/docs renders the OpenAPI 3.1 schema in Chromium, from local files only, with the Content-Security-Policy on."""

from __future__ import annotations

import pytest

from tests.browser.conftest import CHROMIUM  # noqa: F401 - the session fixtures skip without chromium

pytestmark = pytest.mark.browser


def test_docs_render_every_operation(browser, stack):
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=stack.url)  # CSP enforced
    page = ctx.new_page()
    problems: list[str] = []
    page.on("console", lambda m: m.type == "error" and problems.append(f"console: {m.text}"))
    page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
    page.on("request", lambda r: r.url.startswith((stack.url, "data:", "blob:")) or problems.append(r.url))
    try:
        page.goto("/docs")
        page.wait_for_selector(".opblock", timeout=30_000)
        spec = stack.http.get("/openapi.json").json()
        assert spec["openapi"].startswith("3.1")
        operations = sum(len(v) for v in spec["paths"].values())
        shown = page.locator(".opblock").count()
        assert shown == operations, (shown, operations)
        text = page.inner_text("body")
        assert "does not specify a valid version field" not in text
        assert "AIME tier runner" in text and "/api/runs/{run_id}/metrics" in text.replace("\u200b", "")
        # The bearer scheme is declared: Swagger UI offers the Authorize button.
        assert page.locator("button.authorize").count() == 1
        # A schema renders (models section lists the *Public replies).
        assert "RunPublic" in page.inner_text("body")
        assert problems == [], problems
    finally:
        ctx.close()
