"""/api/v1/docs works offline: every script, stylesheet and icon it loads is one of the portal's static files."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from tests.clients import secure_client

DOCS = "/api/v1/docs"


class _Assets(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag in ("script", "img") and found.get("src"):
            self.urls.append(found["src"] or "")
        if tag == "link" and found.get("href"):
            self.urls.append(found["href"] or "")


def assets(html: str) -> list[str]:
    parser = _Assets()
    parser.feed(html)
    return parser.urls


@pytest.mark.django_db
def test_the_docs_page_loads_only_the_portals_own_static_files():
    client = secure_client()
    page = client.get(DOCS)
    assert page.status_code == 200
    html = page.content.decode()
    urls = assets(html)
    assert any(u.endswith("swagger-ui-bundle.js") for u in urls) and any(u.endswith("swagger-ui.css") for u in urls)
    for url in urls:
        assert url.startswith("/static/"), f"{DOCS} loads {url} from elsewhere"
        served = client.get(url)
        assert served.status_code == 200, url
        assert b"".join(served.streaming_content if served.streaming else [served.content])
    assert "cdn" not in html.lower() and "http://" not in html and "https://" not in html
    assert '"validatorUrl": null' in html  # no badge fetched from validator.swagger.io
