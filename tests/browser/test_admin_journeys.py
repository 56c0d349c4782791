"""The admin's journeys in a real browser: demo portal -> broker -> Microsoft emulator -> back.

Each test runs in a fresh browser context (its own cookies), ends on a page a person would see,
asserts what that page says, checks the security headers of every answer the broker gave the
browser, and saves a screenshot to ``artifacts/screenshots/<test-name>.png``.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from sandbox.portal.views import action_title
from tests.browser.conftest import (
    CONTOSO_ADMIN,
    CONTOSO_DECLINER,
    CONTOSO_USER,
    FABRIKAM_ADMIN,
    Sandbox,
    Tab,
    assert_security_headers,
    open_tab,
    outcome_row,
    pass_microsoft,
    row,
    run_journey,
    section,
    start_action,
)

pytestmark = [pytest.mark.slow, pytest.mark.browser]

Screenshot = Callable[..., Path]

SIGN_IN = "Signed in"
CONSENT_ACTIONS = [
    "GET_USER_SYNC_CONSENT",
    "GET_PRESENCE_CONSENT",
    "GET_CALL_APP_CONSENT",
    "GET_CONTACTS_CONSENT",
    "GET_CDR_CONSENT",
    "GET_CALL_RECORDING_CONSENT",
    "GET_SERVICE_PROVIDER_CONSENT",
]


def assert_no_portal_warning(tab: Tab) -> None:
    """The portal recognised the state it issued (no forged/replayed-state warning)."""
    assert tab.page.locator("section.warn").count() == 0, tab.page.locator("main").inner_text()


def assert_broker_redirects(tab: Tab) -> None:
    """The link answered 302 (to Microsoft) and the callback answered (303 or form_post page)."""
    seen = {(answer.status, answer.path) for answer in tab.broker_answers}
    assert (302, "/actions") in seen, seen
    assert (303, "/oauth") in seen or (200, "/oauth") in seen, seen
    assert_security_headers(tab.broker_answers)


def test_catalog_covers_every_consent_action(sandbox: Sandbox) -> None:
    listing = sandbox.api("GET", "/actionTypes")
    assert listing.status_code == 200
    types = {item["actionType"] for item in listing.json()["items"]}
    assert types == {
        "REGISTRATION",
        "LOGIN_ENTERPRISE_ADMIN",
        "DEPLOY_TEAMS_APPS",
        *CONSENT_ACTIONS,
    }


def test_registration_succeeds(tab: Tab, sandbox: Sandbox, screenshot: Screenshot) -> None:
    page = tab.page
    # First in the file, so normally on a fresh enterprise; re-registers if run after others.
    choice = "REGISTRATION+reregister" if sandbox.is_registered() else "REGISTRATION"
    run_journey(tab, sandbox, choice, CONTOSO_ADMIN)

    assert page.locator("h1").inner_text() == "Register your enterprise: completed"
    assert_no_portal_warning(tab)
    assert outcome_row(page, "Status") == "completed"
    assert outcome_row(page, "Verified via") == "resultCode redeemed by the portal's backend"
    assert row(page, SIGN_IN, "Account") == CONTOSO_ADMIN
    assert row(page, "Your enterprise", "Registration") == "registered"
    tenant = outcome_row(page, "Microsoft tenant")
    assert tenant and tenant != "—"
    assert sandbox.is_registered()
    assert sandbox.enterprise()["registration"]["tenantId"] == tenant
    assert_broker_redirects(tab)
    screenshot(page)


@pytest.mark.parametrize("action_type", CONSENT_ACTIONS)
def test_consent_is_granted(
    registered: None, tab: Tab, sandbox: Sandbox, screenshot: Screenshot, action_type: str
) -> None:
    page = tab.page
    run_journey(tab, sandbox, action_type, CONTOSO_ADMIN)

    assert page.locator("h1").inner_text() == f"{action_title(action_type)}: completed"
    assert_no_portal_warning(tab)
    assert outcome_row(page, "Action type") == action_type
    assert outcome_row(page, "Error code") == "—"
    assert row(page, "Consent", "Status") == "granted"
    required = row(page, "Consent", "Roles required")
    confirmed = row(page, "Consent", "Roles confirmed")
    assert required != "—" and set(required.split()) <= set(confirmed.split())
    # The enterprise's consent table, read back from the broker, shows it granted too.
    table = section(page, "Microsoft consents")
    assert "granted" in table.locator("tr", has_text=action_title(action_type)).inner_text()
    assert_broker_redirects(tab)
    screenshot(page)


@pytest.mark.parametrize("delivery", ["redirect", "form_post"])
def test_login_enterprise_admin_succeeds(
    registered: None, tab: Tab, sandbox: Sandbox, screenshot: Screenshot, delivery: str
) -> None:
    page = tab.page
    run_journey(
        tab, sandbox, "LOGIN_ENTERPRISE_ADMIN", CONTOSO_ADMIN, form_post=delivery == "form_post"
    )

    assert page.locator("h1").inner_text() == f"{action_title('LOGIN_ENTERPRISE_ADMIN')}: completed"
    assert_no_portal_warning(tab)
    assert outcome_row(page, "Microsoft tenant") == sandbox.enterprise()["registration"]["tenantId"]
    assert row(page, SIGN_IN, "Account") == CONTOSO_ADMIN
    if delivery == "form_post":
        assert outcome_row(page, "Verified via") == "form_post result JWT (ES256, broker JWKS)"
        form_pages = [a for a in tab.broker_answers if a.status == 200 and a.path == "/oauth"]
        assert len(form_pages) == 1, tab.broker_answers
        csp = form_pages[0].headers["content-security-policy"]
        # The hand-off page may submit only to the portal's origin, run only its own script.
        assert f"form-action {sandbox.portal};" in csp
        assert "script-src 'sha256-" in csp
        assert form_pages[0].headers["content-type"].startswith("text/html")
    else:
        assert outcome_row(page, "Verified via") == "resultCode redeemed by the portal's backend"
    assert_broker_redirects(tab)
    screenshot(page)


def test_decliner_gets_consent_declined(
    registered: None, tab: Tab, sandbox: Sandbox, screenshot: Screenshot
) -> None:
    page = tab.page
    run_journey(tab, sandbox, "LOGIN_ENTERPRISE_ADMIN", CONTOSO_DECLINER)

    assert page.locator("h1").inner_text() == f"{action_title('LOGIN_ENTERPRISE_ADMIN')}: failed"
    assert_no_portal_warning(tab)
    assert outcome_row(page, "Error code") == "CONSENT_DECLINED"
    assert_broker_redirects(tab)
    screenshot(page)


def test_cancel_button_gets_consent_declined(
    registered: None, tab: Tab, sandbox: Sandbox, screenshot: Screenshot
) -> None:
    # Entra's cancel redirect for admin consent still says admin_consent=True: error must win.
    page = tab.page
    run_journey(tab, sandbox, "GET_CONTACTS_CONSENT", CONTOSO_ADMIN, decision="cancel")

    assert page.locator("h1").inner_text() == f"{action_title('GET_CONTACTS_CONSENT')}: failed"
    assert_no_portal_warning(tab)
    assert outcome_row(page, "Error code") == "CONSENT_DECLINED"
    assert_broker_redirects(tab)
    screenshot(page)


def test_non_admin_gets_not_global_admin(
    registered: None, tab: Tab, sandbox: Sandbox, screenshot: Screenshot
) -> None:
    page = tab.page
    run_journey(tab, sandbox, "LOGIN_ENTERPRISE_ADMIN", CONTOSO_USER)

    assert page.locator("h1").inner_text() == f"{action_title('LOGIN_ENTERPRISE_ADMIN')}: failed"
    assert_no_portal_warning(tab)
    assert outcome_row(page, "Error code") == "NOT_GLOBAL_ADMIN"
    assert section(page, SIGN_IN).count() == 0  # no tokens for a refusal
    assert_broker_redirects(tab)
    screenshot(page)


def test_admin_of_another_tenant_gets_login_wrong_tenant(
    registered: None, tab: Tab, sandbox: Sandbox, screenshot: Screenshot
) -> None:
    page = tab.page
    run_journey(tab, sandbox, "LOGIN_ENTERPRISE_ADMIN", FABRIKAM_ADMIN)

    assert page.locator("h1").inner_text() == f"{action_title('LOGIN_ENTERPRISE_ADMIN')}: failed"
    assert_no_portal_warning(tab)
    assert outcome_row(page, "Error code") == "LOGIN_WRONG_TENANT"
    assert outcome_row(page, "Signed in with tenant") == "bbbbbbbb-0000-4000-8000-00000000fab0"
    assert section(page, SIGN_IN).count() == 0
    assert_broker_redirects(tab)
    screenshot(page)


def create_link(sandbox: Sandbox, action_type: str, state: str) -> dict[str, Any]:
    """An action item made through the API, as a provider's backend would (no portal state)."""
    created = sandbox.api(
        "POST",
        "/enterprise/getActionItemUrl",
        json={
            "actionType": action_type,
            "enterpriseId": sandbox.enterprise()["enterpriseId"],
            "callbackUrl": f"{sandbox.portal}/callback",
            "state": state,
            "expiresInSeconds": 60,
        },
    )
    assert created.status_code == 201, created.text
    item: dict[str, Any] = created.json()
    return item


def test_revoked_link_shows_the_withdrawn_page(
    registered: None, tab: Tab, sandbox: Sandbox, screenshot: Screenshot
) -> None:
    item = create_link(sandbox, "GET_PRESENCE_CONSENT", "browser-revoked")
    revoked = sandbox.api("POST", f"/actionItems/{item['actionItemId']}/revoke")
    assert revoked.status_code == 200, revoked.text

    response = tab.page.goto(item["url"])
    assert response is not None and response.status == 410
    text = tab.page.locator("main").inner_text()
    assert "withdrew this link" in text and "LINK_REVOKED" in text
    assert tab.page.url == item["url"]  # no redirect anywhere, least of all to Microsoft
    assert [(a.status, a.path) for a in tab.broker_answers] == [(410, "/actions")]
    assert tab.broker_answers[0].headers["content-type"].startswith("text/html")
    assert_security_headers(tab.broker_answers)
    screenshot(tab.page)


def test_used_link_shows_the_already_done_page(
    registered: None, tab: Tab, sandbox: Sandbox, screenshot: Screenshot
) -> None:
    item = create_link(sandbox, "LOGIN_ENTERPRISE_ADMIN", "browser-used")
    tab.page.goto(item["url"])
    pass_microsoft(tab, sandbox, CONTOSO_ADMIN)
    tab.page.wait_for_url(lambda url: url.startswith(f"{sandbox.portal}/callback"))
    # The portal did not issue this state (the API did): it warns, and shows the outcome.
    assert outcome_row(tab.page, "Status") == "completed"
    assert outcome_row(tab.page, "Action item") == item["actionItemId"]

    response = tab.page.goto(item["url"])
    assert response is not None and response.status == 409
    text = tab.page.locator("main").inner_text()
    assert "This link was already used." in text and "LINK_USED" in text
    assert tab.page.url == item["url"]
    assert tab.broker_answers[-1].status == 409
    assert tab.broker_answers[-1].headers["content-type"].startswith("text/html")
    assert_security_headers(tab.broker_answers)
    screenshot(tab.page)


def test_unknown_link_shows_the_not_found_page(
    tab: Tab, sandbox: Sandbox, screenshot: Screenshot
) -> None:
    response = tab.page.goto(f"{sandbox.broker}/actions/{secrets.token_urlsafe(32)}")
    assert response is not None and response.status == 404
    text = tab.page.locator("main").inner_text()
    assert "LINK_NOT_FOUND" in text and "This link is not valid." in text
    assert "return to your provider's portal for a new one" in text
    assert [(a.status, a.path) for a in tab.broker_answers] == [(404, "/actions")]
    assert tab.broker_answers[0].headers["content-type"].startswith("text/html")
    assert_security_headers(tab.broker_answers)
    screenshot(tab.page)


def _state_claims(callback_url: str) -> dict[str, Any]:
    """The (unverified) claims of the broker's state JWT in a callback URL."""
    state = parse_qs(urlsplit(callback_url).query)["state"][0]
    payload = state.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


def test_callback_in_another_browser_is_refused(
    registered: None, browser: Any, tab: Tab, sandbox: Sandbox, screenshot: Screenshot
) -> None:
    """Browser A clicks the link and signs in; browser B replays Microsoft's answer: refused."""
    page_a = tab.page
    captured: list[str] = []
    callback_prefix = f"{sandbox.broker}/oauth/callback?"

    def capture_return(route: Any) -> None:
        # Send the emulator form ourselves, keep its redirect to the broker, and stop A there.
        answer = route.fetch(max_redirects=0)
        location = answer.headers.get("location", "")
        if answer.status in (302, 303) and location.startswith(callback_prefix):
            captured.append(location)
            route.fulfill(status=200, content_type="text/html", body="<h1>held back</h1>")
        else:
            route.fulfill(response=answer)

    tab.context.route(f"{sandbox.emulator}/emulator-ui/**", capture_return)
    start_action(tab, sandbox, "LOGIN_ENTERPRISE_ADMIN")
    pass_microsoft(tab, sandbox, CONTOSO_ADMIN)
    page_a.locator("h1", has_text="held back").wait_for()
    assert len(captured) == 1, captured
    callback_url = captured[0]
    item_id = _state_claims(callback_url)["itm"]
    assert tab.portal_requests == [
        f"GET {sandbox.portal}/",
        f"POST {sandbox.portal}/start",
    ]

    other = open_tab(browser, sandbox)
    try:
        response = other.page.goto(callback_url)
        assert response is not None and response.status == 403
        text = other.page.locator("main").inner_text()
        assert "BROWSER_BINDING_MISMATCH" in text
        assert "finished in a different browser from the one where it started" in text
        assert "click its button again, then finish the sign-in here" in text
        assert other.page.url.startswith(callback_prefix)  # never sent on to the portal
        assert other.portal_requests == []
        assert [(a.status, a.path) for a in other.broker_answers] == [(403, "/oauth")]
        assert_security_headers(other.broker_answers)
        screenshot(other.page, "other-browser")
    finally:
        other.context.close()

    # No outcome was stored for B's attempt: the item is still open, not completed or failed.
    assert sandbox.api("GET", f"/actionItems/{item_id}").json()["status"] == "opened"

    # The refusal did not burn the flow: browser A, which holds the cookie, can still finish.
    tab.context.unroute(f"{sandbox.emulator}/emulator-ui/**")
    page_a.goto(callback_url)
    page_a.wait_for_url(lambda url: url.startswith(f"{sandbox.portal}/callback"))
    assert page_a.locator("h1").inner_text() == "Sign in as your Global Admin: completed"
    assert_no_portal_warning(tab)
    assert outcome_row(page_a, "Action item") == item_id
    assert sandbox.api("GET", f"/actionItems/{item_id}").json()["status"] == "completed"
    assert_security_headers(tab.broker_answers)
    screenshot(page_a)
