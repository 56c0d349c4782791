"""The demo portal reads like a product at 1280 px: human titles, whole badges, plain times.

Screenshots land in ``artifacts/screenshots/`` (the portal's home and a sign-in result).
"""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import Page

from sandbox.portal.views import ACTION_TITLES
from tests.browser.conftest import CONTOSO_ADMIN, Sandbox, Tab, run_journey, section

WIDTH = 1280
MICROSECONDS = re.compile(r"\d{2}:\d{2}:\d{2}[.,]\d+")


def assert_badges_and_names_on_one_line(page: Page) -> None:
    """A badge or code name that wraps is taller than one line ("grante d")."""
    for element in page.locator(".badge, code.name").all():
        box = element.bounding_box()
        if box is None:
            continue
        line = element.evaluate("e => parseFloat(getComputedStyle(e).lineHeight) || 20")
        assert box["height"] < 1.6 * line, element.inner_text()


def test_portal_home_at_1280px(
    tab: Tab, sandbox: Sandbox, registered: None, screenshot: Any
) -> None:
    page = tab.page
    page.set_viewport_size({"width": WIDTH, "height": 900})
    page.goto(f"{sandbox.portal}/")
    actions = section(page, "Connect Microsoft Teams")
    titles = [b.inner_text().split("\n")[0] for b in actions.locator("button b").all()]
    assert titles and not any(re.search(r"[A-Z]+_[A-Z_]+", t) for t in titles), titles
    assert set(titles) <= {*ACTION_TITLES.values(), "Register again"}
    assert not MICROSECONDS.search(page.locator("main").inner_text())
    assert_badges_and_names_on_one_line(page)
    screenshot(page)


def test_sign_in_result_says_who_and_what_the_provider_can_do(
    tab: Tab, sandbox: Sandbox, registered: None, screenshot: Any
) -> None:
    page = tab.page
    page.set_viewport_size({"width": WIDTH, "height": 900})
    run_journey(tab, sandbox, "LOGIN_ENTERPRISE_ADMIN", CONTOSO_ADMIN)
    signed_in = section(page, "Signed in")
    assert CONTOSO_ADMIN in signed_in.locator("p.lead").inner_text()
    assert "Northwind can now" in signed_in.inner_text()
    raw = signed_in.locator("details")
    assert raw.get_attribute("open") is None  # the raw MSAL result is folded away
    assert not raw.locator("table").is_visible()
    assert not MICROSECONDS.search(page.locator("main").inner_text())
    assert_badges_and_names_on_one_line(page)
    screenshot(page)
