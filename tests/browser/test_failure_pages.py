"""Each of the broker's failure pages in a real browser, in English and German, with screenshots.

The browser's language (Chromium's ``locale``, sent as ``Accept-Language``) picks the page's
language. Screenshots go to ``artifacts/screenshots/test_failure_page-<case>-<lang>.png``
(and ``test_root_page-<lang>.png``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import STEP_TIMEOUT_MS, Sandbox
from tests.browser.test_admin_journeys import create_link

pytestmark = [pytest.mark.slow, pytest.mark.browser]

Screenshot = Callable[..., Path]

# case: (status, English headline, German headline, German next step fragment)
PAGES: dict[str, tuple[int, str, str, str]] = {
    "LINK_NOT_FOUND": (
        404,
        "This link is not valid.",
        "Dieser Link ist ungültig.",
        "Prüfen Sie, ob Sie den vollständigen Link geöffnet haben",
    ),
    "LINK_REVOKED": (
        410,
        "Your provider withdrew this link.",
        "Ihr Anbieter hat diesen Link zurückgezogen.",
        "Holen Sie sich im Portal Ihres Anbieters einen neuen Link.",
    ),
    "STATE_INVALID": (
        400,
        "This sign-in could not be matched to a request from your provider.",
        "Diese Anmeldung konnte keiner Anfrage Ihres Anbieters zugeordnet werden.",
        "Kehren Sie zum Portal Ihres Anbieters zurück",
    ),
    "RETURN_PAGE_OPENED_DIRECTLY": (
        400,
        "This page is where Microsoft sends you back after a sign-in.",
        "Auf diese Seite leitet Microsoft Sie nach einer Anmeldung zurück.",
        "Beginnen Sie im Portal Ihres Anbieters",
    ),
}
RETRY = {"en": "Trying again", "de": "Ein erneuter Versuch"}


def address(case: str, sandbox: Sandbox) -> str:
    if case == "LINK_NOT_FOUND":
        return f"{sandbox.broker}/actions/not-a-real-link"
    if case == "LINK_REVOKED":
        item = create_link(sandbox, "GET_PRESENCE_CONSENT", "pages-revoked")
        assert sandbox.api("POST", f"/actionItems/{item['actionItemId']}/revoke").status_code == 200
        return str(item["url"])
    if case == "STATE_INVALID":
        return f"{sandbox.broker}/oauth/callback?state=forged.state.value&code=x"
    return f"{sandbox.broker}/oauth/callback"


@pytest.mark.parametrize("language", ["en", "de"])
@pytest.mark.parametrize("case", list(PAGES))
def test_failure_page(
    registered: None,
    browser: Any,
    sandbox: Sandbox,
    screenshot: Screenshot,
    case: str,
    language: str,
) -> None:
    status, english, german, german_next = PAGES[case]
    context = browser.new_context(
        viewport={"width": 1100, "height": 700}, locale="de-DE" if language == "de" else "en-US"
    )
    context.set_default_timeout(STEP_TIMEOUT_MS)
    try:
        page = context.new_page()
        response = page.goto(address(case, sandbox))
        assert response is not None and response.status == status
        text = page.locator("main").inner_text()
        assert page.locator("html").get_attribute("lang") == language
        if language == "de":
            assert german in text and german_next in text, text
            assert english not in text
        else:
            assert english in text, text
        assert RETRY[language] in text
        assert case in text  # the reference for support
        assert "Invalid provider state" not in text
        headers = response.all_headers()
        assert headers["content-type"].startswith("text/html")
        assert "default-src 'none'" in headers["content-security-policy"]
        screenshot(page)
    finally:
        context.close()


@pytest.mark.parametrize("language", ["en", "de"])
def test_root_page(browser: Any, sandbox: Sandbox, screenshot: Screenshot, language: str) -> None:
    context = browser.new_context(
        viewport={"width": 1100, "height": 700}, locale="de-DE" if language == "de" else "en-US"
    )
    try:
        page = context.new_page()
        response = page.goto(f"{sandbox.broker}/")
        assert response is not None and response.status == 200
        text = page.locator("main").inner_text()
        expected = "Teams-Zustimmungsdienst" if language == "de" else "Teams consent broker"
        assert expected in text
        screenshot(page)
    finally:
        context.close()
