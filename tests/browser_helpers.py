"""Headless Chromium for the browser tests: Debian's chromium driven by Playwright, screenshots kept as artifacts,
signing in and out through the pages, and a recorder of what the run page's progress bar showed."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from django.conf import settings

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
ARTIFACTS = Path(settings.BASE_DIR) / "test-artifacts" / "browser"
MEMBER = "member-a"  # the member the `browser_member` fixture (tests/conftest.py) makes, who signs in with this
MEMBER_PASSWORD = "a long test password 7"
# The live server speaks plain HTTP: none of the production HTTPS settings may apply to it.
PLAIN_HTTP_SETTINGS = {
    "SECURE_SSL_REDIRECT": False,
    "SESSION_COOKIE_SECURE": False,
    "CSRF_COOKIE_SECURE": False,
    "SECURE_HSTS_SECONDS": 0,
}

# Playwright must never fetch a browser of its own: the tests use the system's chromium.
os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")


def why_no_browser() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if not CHROMIUM.exists():
        return (
            f"browser tests skipped: {CHROMIUM} is missing. Install Debian's chromium (apt-get install chromium); "
            "make test does so itself when it runs as root with apt-get."
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "browser tests skipped: the playwright package is not installed (.venv/bin/pip install -r requirements-dev.txt)."
    return None


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A running headless Chromium (Playwright Browser). Playwright keeps an event loop running in this thread
    while it is open, so the Django ORM refuses to be called from here until it is closed."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class Screenshots:
    """Full-page screenshots numbered in the order taken: test-artifacts/browser/<test>/<NN-step>.png."""

    def __init__(self, page: Any, test_name: str) -> None:
        self.page = page
        self.folder = ARTIFACTS / test_name
        shutil.rmtree(self.folder, ignore_errors=True)  # only this run's steps, never a stale one beside them
        self.folder.mkdir(parents=True)
        self.taken: list[Path] = []

    def __call__(self, step: str) -> Path:
        path = self.folder / f"{len(self.taken) + 1:02d}-{step}.png"
        self.page.screenshot(path=str(path), full_page=True)
        self.taken.append(path)
        return path


def log_in(page: Any, base_url: str, username: str, password: str) -> None:
    from playwright.sync_api import expect

    page.goto(f"{base_url}/accounts/login/")
    assert page.url.startswith("http://"), (
        f"the live server sent the browser to {page.url}: it was started with SECURE_SSL_REDIRECT on "
        "(another test module started pytest-django's live_server before tests/test_browser.py)"
    )
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("details.usermenu summary")).to_contain_text(username)


def log_out(page: Any) -> None:
    from playwright.sync_api import expect

    page.locator("details.usermenu summary").click()
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()


def csrf_token(page: Any) -> str:
    """The CSRF token the browser holds (Django's csrftoken cookie), for a request made outside a form."""
    cookies = {cookie["name"]: cookie["value"] for cookie in page.context.cookies()}
    assert "csrftoken" in cookies, f"no csrftoken cookie in the browser; it has {sorted(cookies)}"
    return cookies["csrftoken"]


# Every time htmx swaps the run page's live region, note the status badge and the progress bar's aria values.
_RECORD_PROGRESS = """() => {
  window.mtmSeen = [];
  const note = () => {
    const bar = document.querySelector('#run-live [role=progressbar]');
    const badge = document.querySelector('#run-live .run-state .badge');
    const seen = {
      status: badge ? badge.textContent.trim() : null,
      step: bar ? Number(bar.getAttribute('aria-valuenow')) : null,
      total: bar ? Number(bar.getAttribute('aria-valuemax')) : null,
      seconds: Math.round(performance.now() / 100) / 10,
    };
    const last = window.mtmSeen[window.mtmSeen.length - 1];
    if (!last || last.status !== seen.status || last.step !== seen.step) window.mtmSeen.push(seen);
  };
  note();
  new MutationObserver(note).observe(document.querySelector('main'), {childList: true, subtree: true});
}"""


def record_progress(page: Any) -> Callable[[], list[dict]]:
    """Start noting what the run page shows on each poll; returns a function that reads the notes so far."""
    page.evaluate(_RECORD_PROGRESS)
    return lambda: page.evaluate("() => window.mtmSeen")
