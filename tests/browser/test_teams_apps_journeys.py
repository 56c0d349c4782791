"""The Teams app deployment in a real browser: portal -> broker -> emulator -> broker -> portal.

Publish, then a version bump that updates, then an unchanged run; and the refusal of an
account without the role. Screenshots go to ``artifacts/screenshots/<test-name>.png``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.browser.conftest import (
    CONTOSO_ADMIN,
    CONTOSO_USER,
    Sandbox,
    Tab,
    assert_security_headers,
    outcome_row,
    run_journey,
    section,
)

pytestmark = [pytest.mark.slow, pytest.mark.browser]

Screenshot = Callable[..., Path]
CONTOSO_TEAMS_ADMIN = "tomas@contoso.onmicrosoft.com"
DEPLOYED = "Teams apps deployed"


def deployed_status(tab: Tab) -> str:
    return section(tab.page, DEPLOYED).locator("tr").nth(1).locator("td").nth(1).inner_text()


def test_deploy_publishes_then_updates_then_leaves_unchanged(
    registered: None, tab: Tab, sandbox: Sandbox, screenshot: Screenshot
) -> None:
    page = tab.page
    run_journey(tab, sandbox, "DEPLOY_TEAMS_APPS", CONTOSO_ADMIN)
    assert page.locator("h1").inner_text() == "Deploy Teams apps: completed"
    first = deployed_status(tab)
    assert first in ("published", "updated", "unchanged")  # the session may have deployed before
    screenshot(page, "1-published")

    page.goto(f"{sandbox.portal}/")
    with page.expect_navigation():
        section(page, "Teams apps").locator('form[action="/teams/bump"] button').click()
    run_journey(tab, sandbox, "DEPLOY_TEAMS_APPS", CONTOSO_TEAMS_ADMIN)
    assert page.locator("h1").inner_text() == "Deploy Teams apps: completed"
    assert deployed_status(tab) == "updated"
    screenshot(page, "2-updated")

    run_journey(tab, sandbox, "DEPLOY_TEAMS_APPS", CONTOSO_ADMIN)
    assert deployed_status(tab) == "unchanged"
    assert_security_headers(tab.broker_answers)
    page.goto(f"{sandbox.portal}/")
    assert "unchanged" in section(page, "Teams apps").inner_text()
    screenshot(page, "3-catalog")


def test_deploy_by_a_user_without_the_role_gets_not_teams_admin(
    registered: None, tab: Tab, sandbox: Sandbox, screenshot: Screenshot
) -> None:
    page = tab.page
    run_journey(tab, sandbox, "DEPLOY_TEAMS_APPS", CONTOSO_USER)
    assert page.locator("h1").inner_text() == "Deploy Teams apps: failed"
    assert outcome_row(page, "Error code") == "NOT_TEAMS_ADMIN"
    screenshot(page)
