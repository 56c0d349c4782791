"""``python -m sandbox`` for real: three servers, driven over HTTP like a browser would be.

The browser is one cookie-keeping ``httpx.Client`` (cookies are per host, not per port, as in a
browser) that follows every redirect by hand. Each answer is recorded as a hop
``(status, host:port of Location)``: statuses and hosts only, never a URL, so the chains can be
printed and quoted without leaking a link, state or result code.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from html import unescape
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from emulator import complete_browser_flow
from sandbox.launch import launched_sandbox

pytestmark = pytest.mark.slow

CONTOSO_ADMIN = "admin@contoso.onmicrosoft.com"
Hop = tuple[int, str | None]


@dataclass
class Sandbox:
    portal: str
    broker: str
    emulator: str
    data_dir: Path
    output: Path


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    with launched_sandbox(tmp_path_factory.mktemp("sandbox")) as started:
        yield Sandbox(
            started.portal, started.broker, started.emulator, started.data_dir, started.log
        )


@dataclass
class Browser:
    """A browser: one cookie jar, redirects followed by hand, every answer recorded as a hop."""

    client: httpx.Client = field(
        default_factory=lambda: httpx.Client(timeout=20, follow_redirects=False)
    )
    hops: list[Hop] = field(default_factory=list)
    emulator_url: str = ""

    def __post_init__(self) -> None:
        self.client.event_hooks = {"request": [], "response": [self._record]}

    def _record(self, response: httpx.Response) -> None:
        location = response.headers.get("location")
        target = None
        if location is not None:
            target = urlsplit(urljoin(str(response.request.url), location)).netloc
        self.hops.append((response.status_code, target))

    def follow(self, response: httpx.Response) -> httpx.Response:
        """Follow redirects (always with GET, as browsers do after 302/303) until a page."""
        for _ in range(10):
            if response.status_code not in (301, 302, 303, 307, 308):
                return response
            url = urljoin(str(response.request.url), response.headers["location"])
            if urlsplit(url).netloc == urlsplit(self.emulator_url).netloc:
                return response  # the emulator's pages are clicked through separately
            response = self.client.get(url)
        raise AssertionError("too many redirects")


def run_action(
    sandbox: Sandbox, browser: Browser, choice: str, *, form_post: bool = False
) -> tuple[httpx.Response, list[Hop]]:
    """Click one of the portal's buttons and go all the way back to the portal's result page."""
    start = len(browser.hops)
    form = {"choice": choice, **({"resultDelivery": "form_post"} if form_post else {})}
    response = browser.follow(browser.client.post(f"{sandbox.portal}/start", data=form))
    assert response.status_code == 302, response.text
    at_microsoft = response.headers["location"]
    assert at_microsoft.startswith(sandbox.emulator)
    result = complete_browser_flow(browser.client, at_microsoft, username=CONTOSO_ADMIN)
    assert result.redirect_uri == f"{sandbox.broker}/oauth/callback"
    # The emulator's last answer is the redirect back to the broker: follow it like a browser.
    response = browser.follow(browser.client.get(result.redirect_uri, params=result.params))
    if form_post:
        # The broker's page auto-posts the result JWT to the portal (its script, done by hand).
        assert response.status_code == 200, response.text
        action = re.search(r'<form method="post" action="([^"]+)"', response.text)
        assert action is not None
        fields = dict(
            (name, unescape(value))
            for name, value in re.findall(
                r'<input type="hidden" name="([^"]+)" value="([^"]*)"', response.text
            )
        )
        response = browser.client.post(unescape(action.group(1)), data=fields)
    assert response.status_code == 200, response.text
    assert str(response.request.url).startswith(f"{sandbox.portal}/callback")
    return response, browser.hops[start:]


def describe(hops: list[Hop], sandbox: Sandbox) -> str:
    """``303 broker(127.0.0.1:port) -> 200 -> ...``: statuses and hosts only."""
    roles = {
        urlsplit(url).netloc: role
        for role, url in (
            ("portal", sandbox.portal),
            ("broker", sandbox.broker),
            ("emulator", sandbox.emulator),
        )
    }
    return " -> ".join(
        f"{status} {roles.get(host, '?')}({host})" if host else str(status) for status, host in hops
    )


def test_registration_then_presence_consent_through_the_portal(sandbox: Sandbox) -> None:
    browser = Browser(emulator_url=sandbox.emulator)
    with browser.client:
        home = browser.client.get(f"{sandbox.portal}/")
        assert home.status_code == 200
        assert "Contoso (demo)" in home.text and "notRegistered" in home.text
        assert re.search(r'value="GET_PRESENCE_CONSENT" disabled', home.text)

        registered, registration_hops = run_action(sandbox, browser, "REGISTRATION")
        assert "Warning" not in registered.text
        assert "Register your enterprise: completed" in registered.text
        assert "Result bound to this session" in registered.text
        assert "admin@contoso.onmicrosoft.com" in registered.text
        assert ">registered<" in registered.text

        home = browser.client.get(f"{sandbox.portal}/")
        assert re.search(r'value="REGISTRATION\+reregister"', home.text)
        assert not re.search(r'value="GET_PRESENCE_CONSENT" disabled', home.text)

        consented, consent_hops = run_action(sandbox, browser, "GET_PRESENCE_CONSENT")
        assert "Warning" not in consented.text
        assert "Allow Teams presence: completed" in consented.text
        assert ">granted<" in consented.text and "Presence.ReadWrite.All" in consented.text

        signed_in, form_post_hops = run_action(
            sandbox, browser, "LOGIN_ENTERPRISE_ADMIN", form_post=True
        )
        assert "Sign in as your Global Admin: completed" in signed_in.text
        assert "form_post result JWT" in signed_in.text
        assert "Result bound to this session" in signed_in.text

    # The worker delivers each outcome as a signed webhook; the portal verifies and lists it.
    deadline = time.monotonic() + 20
    while True:
        page = httpx.get(f"{sandbox.portal}/", timeout=5).text
        section = page.split("Webhooks received", 1)[-1]
        if section.count("consent.granted") >= 1 and "enterprise.registered" in section:
            break
        assert time.monotonic() < deadline, section[:2000]
        time.sleep(0.5)
    assert "rejected" not in section

    print("\nREGISTRATION hops:         ", describe(registration_hops, sandbox))
    print("GET_PRESENCE_CONSENT hops: ", describe(consent_hops, sandbox))
    print("LOGIN (form_post) hops:    ", describe(form_post_hops, sandbox))
    hosts = {urlsplit(u).netloc for u in (sandbox.portal, sandbox.broker, sandbox.emulator)}
    for hops in (registration_hops, consent_hops, form_post_hops):
        assert {host for _, host in hops if host} <= hosts


def test_result_swapped_into_another_session_is_flagged_by_the_portal() -> None:
    """A customer replays their return URL with another session's result: the portal refuses it."""
    from sandbox.portal.views import binding_check

    mine = "https://portal.test/callback"
    other = {"state": "victim-state", "callbackUrl": mine}
    assert "Result belongs to another session" in binding_check(other, "my-state", mine)
    moved = {"state": "my-state", "callbackUrl": "https://portal.test/elsewhere"}
    assert "Result belongs to another session" in binding_check(moved, "my-state", mine)
    assert "Result bound to this session" in binding_check(
        {"state": "my-state", "callbackUrl": mine}, "my-state", mine
    )


def test_portal_never_logs_secrets_and_warns_on_an_unknown_state(sandbox: Sandbox) -> None:
    forged = httpx.get(
        f"{sandbox.portal}/callback",
        params={"status": "completed", "state": "not-mine", "resultCode": "ctt_rc_forged"},
    )
    assert forged.status_code == 200
    assert "Warning: unexpected state" in forged.text and "RESULT_CODE_INVALID" in forged.text
    assert forged.headers["referrer-policy"] == "no-referrer"
    tampered = httpx.post(f"{sandbox.portal}/callback", data={"result": "e30.e30.", "state": "x"})
    assert tampered.status_code == 400 and "Result rejected" in tampered.text

    record = (sandbox.data_dir / "sandbox-provider.json").read_text("utf-8")
    api_key = re.search(r'"apiKey": "([^"]+)"', record)
    assert api_key is not None
    log = sandbox.output.read_text("utf-8", "replace")
    # The banner shows the key once; nothing else may repeat it or any token or code.
    assert log.count(api_key.group(1)) == 1
    assert "ctt_rc_" not in log and "eyJ" not in log


def test_teams_apps_publish_then_update_then_unchanged_through_the_portal(
    sandbox: Sandbox,
) -> None:
    """The demo app is published, a version bump updates it, a third run leaves it alone."""
    browser = Browser(emulator_url=sandbox.emulator)
    with browser.client:
        home = browser.client.get(f"{sandbox.portal}/")
        assert "Teams apps" in home.text and "Acme Phone" in home.text
        if re.search(r'value="DEPLOY_TEAMS_APPS" disabled', home.text):
            run_action(sandbox, browser, "REGISTRATION")
        chains = []
        for expected, bump in (("published", None), ("updated", "1.1.0"), ("unchanged", None)):
            if bump:
                uploaded = browser.client.post(
                    f"{sandbox.portal}/teams/bump", data={"version": bump}
                )
                assert uploaded.status_code == 303, uploaded.text
            page, hops = run_action(sandbox, browser, "DEPLOY_TEAMS_APPS")
            assert "Deploy Teams apps: completed" in page.text, page.text[-3000:]
            section = page.text.split("Teams apps deployed", 1)[1].split("</table>", 1)[0]
            assert f">{expected}<" in section, section
            chains.append((expected, describe(hops, sandbox)))
        home = browser.client.get(f"{sandbox.portal}/")
        catalog = home.text.split("In the tenant&#x27;s Teams app catalog", 1)[-1]
        assert ">unchanged<" in home.text and "1.1.0" in catalog
    for expected, chain in chains:
        print(f"\nDEPLOY_TEAMS_APPS ({expected}) hops: {chain}")
