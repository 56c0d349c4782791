"""Real-browser fixtures: the whole sandbox (``python -m sandbox``) and Debian's Chromium.

Chromium comes from Debian's ``chromium`` package (``/usr/bin/chromium``), driven by the
``playwright`` PyPI package through ``executable_path``; ``playwright install`` (a browser
download) is never needed. Without Chromium or Playwright the tests are skipped, except when
``CI`` is set: there a missing browser is a broken machine, so they fail and say why.

Every test gets a fresh browser context (its own cookies), a page whose waits are bounded,
and a record of every answer the broker gave that page, for the security header checks.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from sandbox.launch import launched_sandbox

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Locator, Page, Response

REPO_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO_ROOT / "artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
# What the machine notes prescribe for Chromium here (Playwright adds --headless itself):
# no sandbox as root, and no background traffic to Google's hosts on a closed network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Every wait in a page is bounded: a step that takes longer is a failure, not a hang.
STEP_TIMEOUT_MS = 10_000
DEMO_EXTERNAL_ID = "demo-contoso"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: drives Debian's Chromium through the sandbox")


def _unavailable(reason: str) -> None:
    """Fail in CI (the browser must be installed there), skip elsewhere."""
    if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
        pytest.fail(f"{reason} (CI is set, so this is an error, not a skip)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium_ready() -> str:
    """The Chromium binary and Playwright are both there (else skip, or fail in CI)."""
    if not os.access(CHROMIUM, os.X_OK):
        _unavailable(
            f"browser tests need Debian's Chromium at {CHROMIUM}: "
            "apt-get update && apt-get install -y chromium"
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _unavailable("browser tests need Playwright: .venv/bin/pip install playwright")
    return CHROMIUM


@pytest.fixture(scope="session")
def browser(chromium_ready: str) -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # launch() gives every run a fresh, temporary user data dir.
        chromium = playwright.chromium.launch(
            executable_path=chromium_ready, headless=True, args=CHROMIUM_ARGS, timeout=30_000
        )
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass
class Sandbox:
    """The three servers of ``python -m sandbox`` and the demo provider's API."""

    portal: str
    broker: str
    emulator: str
    data_dir: Path
    output: Path
    api_key: str = field(repr=False, default="")

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One broker API call as the demo provider."""
        headers = {"Authorization": f"Bearer {self.api_key}"}
        return httpx.request(method, f"{self.broker}{path}", headers=headers, timeout=10, **kwargs)

    def enterprise(self) -> dict[str, Any]:
        """The portal's demo enterprise (the portal creates it on its first page)."""
        page = self.api("GET", "/enterprises", params={"externalId": DEMO_EXTERNAL_ID})
        assert page.status_code == 200, page.text
        items: list[dict[str, Any]] = page.json()["items"]
        assert items, "the portal has not created its demo enterprise yet"
        return items[0]

    def is_registered(self) -> bool:
        page = self.api("GET", "/enterprises", params={"externalId": DEMO_EXTERNAL_ID})
        items = page.json()["items"]
        return bool(items) and items[0]["registration"]["status"] == "registered"


@pytest.fixture(scope="session")
def sandbox(chromium_ready: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """``python -m sandbox`` on free ports, a fresh data dir, one broker worker."""
    with launched_sandbox(tmp_path_factory.mktemp("browser-sandbox")) as started:
        yield Sandbox(
            started.portal,
            started.broker,
            started.emulator,
            started.data_dir,
            started.log,
            api_key=started.api_key,
        )


@dataclass
class BrokerAnswer:
    """One answer of the broker to the browser: what the header checks need, no URL kept."""

    status: int
    path: str
    headers: dict[str, str]


@dataclass
class Tab:
    """A page in a fresh browser context, and every broker answer it received."""

    context: BrowserContext
    page: Page
    broker_answers: list[BrokerAnswer] = field(default_factory=list)
    portal_requests: list[str] = field(default_factory=list)
    """``METHOD url-without-query`` of every page load the portal received."""


def open_tab(browser: Browser, sandbox: Sandbox) -> Tab:
    """A fresh context (no cookies) with one page, recording the broker's answers."""
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    context.set_default_timeout(STEP_TIMEOUT_MS)
    context.set_default_navigation_timeout(STEP_TIMEOUT_MS)
    page = context.new_page()
    tab = Tab(context, page)

    def on_response(response: Response) -> None:
        if response.url.startswith(sandbox.broker + "/"):
            path = response.url[len(sandbox.broker) :].split("?", 1)[0]
            # Keep only the path's first segment: the rest of /actions/... is the link secret.
            path = "/" + path.strip("/").split("/", 1)[0]
            tab.broker_answers.append(BrokerAnswer(response.status, path, response.all_headers()))

    def on_request(request: Any) -> None:
        # Page loads only (not the stylesheet): what reached the portal as a navigation.
        if request.is_navigation_request() and request.url.startswith(sandbox.portal + "/"):
            tab.portal_requests.append(f"{request.method} {request.url.split('?', 1)[0]}")

    page.on("response", on_response)
    page.on("request", on_request)
    return tab


@pytest.fixture
def tab(browser: Browser, sandbox: Sandbox) -> Iterator[Tab]:
    """A fresh browser context and page for one test."""
    opened = open_tab(browser, sandbox)
    try:
        yield opened
    finally:
        opened.context.close()


@pytest.fixture
def screenshot(request: pytest.FixtureRequest) -> Any:
    """``screenshot(page)`` saves ``artifacts/screenshots/<test-name>.png`` and returns it.

    ``screenshot(page, "suffix")`` saves ``<test-name>-suffix.png`` (a second page of a test).
    """

    def take(page: Page, suffix: str = "") -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name).strip("-")
        path = SCREENSHOTS / f"{name}{'-' + suffix if suffix else ''}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take


# -- journeys -----------------------------------------------------------------------------

CONTOSO_ADMIN = "admin@contoso.onmicrosoft.com"
CONTOSO_USER = "user@contoso.onmicrosoft.com"
CONTOSO_DECLINER = "decliner@contoso.onmicrosoft.com"
FABRIKAM_ADMIN = "admin@fabrikam.onmicrosoft.com"
REDIRECTS = (301, 302, 303, 307, 308)


def start_action(tab: Tab, sandbox: Sandbox, choice: str, *, form_post: bool = False) -> None:
    """Open the portal, click one of its buttons, and arrive at the emulator's first page."""
    page = tab.page
    page.goto(f"{sandbox.portal}/")
    page.locator("h1", has_text="Welcome, Contoso (demo)").wait_for()
    if form_post:
        page.locator('input[name="resultDelivery"]').check()
    # portal 303 -> broker /actions/... 302 -> the emulator's account picker.
    page.locator(f'button[name="choice"][value="{choice}"]').click()
    page.wait_for_url(lambda url: url.startswith(sandbox.emulator + "/"))


def pass_microsoft(tab: Tab, sandbox: Sandbox, username: str, decision: str = "accept") -> None:
    """Pick ``username`` at the account picker, then ``decision`` on the consent page (if shown)."""
    page = tab.page
    if page.locator("form.account").count():
        with page.expect_navigation():
            page.locator("form.account button", has_text=username).click()
    if (
        page.url.startswith(sandbox.emulator + "/")
        and page.locator("button[name=decision]").count()
    ):
        with page.expect_navigation():
            page.locator(f'button[name="decision"][value="{decision}"]').click()


def wait_for_portal_result(tab: Tab, sandbox: Sandbox) -> None:
    """Wait for the portal's result page (after the broker's redirect or form_post page)."""
    tab.page.wait_for_url(lambda url: url.startswith(f"{sandbox.portal}/callback"))
    tab.page.locator("h1").wait_for()


def run_journey(
    tab: Tab,
    sandbox: Sandbox,
    choice: str,
    username: str,
    *,
    decision: str = "accept",
    form_post: bool = False,
) -> None:
    """Portal button -> broker -> emulator (picker, consent) -> broker -> portal result page."""
    start_action(tab, sandbox, choice, form_post=form_post)
    pass_microsoft(tab, sandbox, username, decision)
    wait_for_portal_result(tab, sandbox)


def section(page: Page, heading: str) -> Locator:
    """The portal's section whose heading is exactly ``heading``."""
    exact = re.compile(f"^{re.escape(heading)}$")
    return page.locator("section", has=page.locator("h2", has_text=exact))


def row(page: Page, heading: str, label: str) -> str:
    """The value of the row labelled exactly ``label`` in section ``heading``."""
    exact = re.compile(f"^{re.escape(label)}$")
    found = section(page, heading).locator("tr", has=page.locator("th", has_text=exact))
    # text_content, not inner_text: a row may sit in a folded <details> (the raw MSAL result).
    return (found.locator("td").text_content() or "").strip()


def outcome_row(page: Page, label: str) -> str:
    """The value of one row of the portal's Outcome table."""
    return row(page, "Outcome", label)


def assert_security_headers(answers: list[BrokerAnswer]) -> None:
    """Every broker answer to the browser is uncacheable, leaks no referrer, cannot be framed."""
    assert answers, "the browser received no answer from the broker"
    for answer in answers:
        where = f"{answer.status} {answer.path}"
        headers = answer.headers
        assert headers.get("referrer-policy") == "no-referrer", where
        assert "no-store" in headers.get("cache-control", ""), where
        assert "frame-ancestors 'none'" in headers.get("content-security-policy", ""), where
        if answer.status in REDIRECTS:
            assert headers.get("location"), where


@pytest.fixture(scope="session")
def registered(browser: Browser, sandbox: Sandbox) -> None:
    """The demo enterprise is registered (by the admin, through the browser) once a session."""
    if sandbox.is_registered():
        return
    tab = open_tab(browser, sandbox)
    try:
        run_journey(tab, sandbox, "REGISTRATION", CONTOSO_ADMIN)
        assert tab.page.locator("h1").inner_text() == "Register your enterprise: completed"
    finally:
        tab.context.close()
    assert sandbox.is_registered()
