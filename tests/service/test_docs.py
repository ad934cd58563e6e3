"""/docs works offline: Swagger UI 5 (OpenAPI 3.1) comes from the fastapi-offline wheel, not a CDN."""

import re

from fastapi.testclient import TestClient

from backend.main import app


def test_docs_page_uses_only_local_assets():
    client = TestClient(app, base_url="http://127.0.0.1:8000")
    page = client.get("/docs")
    assert page.status_code == 200
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text) + re.findall(
        r"url: '([^']+)'", page.text
    )
    assert urls, page.text
    assert not [u for u in urls if u.startswith(("http://", "https://", "//"))], urls
    js = client.get("/static/swagger/swagger-ui-bundle.js")
    css = client.get("/static/swagger/swagger-ui.css")
    assert js.status_code == 200 and len(js.content) > 100_000
    assert css.status_code == 200 and "swagger-ui" in css.text
    spec = client.get("/openapi.json").json()
    assert "/api/runs" in spec["paths"]
