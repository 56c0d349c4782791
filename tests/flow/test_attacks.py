"""Attacks on the admin flow, each refused: one test per rule in DESIGN.md."""

from __future__ import annotations

import threading
import warnings
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt

from broker import providers
from tests.conftest import CALLBACK
from tests.flow.conftest import BROKER, CONTOSO_ADMIN, World, returned

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient


def started(world: World, action_type: str = "REGISTRATION") -> tuple[dict[str, str], Any]:
    """A flow up to Microsoft's answer; returns the callback params and the launch reply."""
    launched = world.click(world.link(action_type)["url"])
    return world.at_microsoft(launched.headers["location"], CONTOSO_ADMIN), launched


def assert_page(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert "location" not in response.headers
    assert f"<code>{code}</code>" in response.text
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers["cache-control"] == "no-store"


def other_browser(world: World) -> Any:
    return world.broker.app and TestClient(world.broker.app, base_url=BROKER)


def test_state_replayed_after_completion_is_refused(world: World) -> None:
    """An attacker holding both the used callback URL and its cookie gets nothing twice."""
    params, launched = started(world)
    name, value = launched.headers["set-cookie"].split(";", 1)[0].split("=", 1)
    assert returned(world.callback(params))["status"] == "completed"
    assert_page(world.callback(params), 409, "STATE_REPLAYED")  # a refresh: cookie is gone
    thief = other_browser(world)
    thief.cookies.set(name, value, domain="broker.test", path="/oauth/callback")
    assert_page(world.callback(params, browser=thief), 409, "STATE_REPLAYED")


def test_two_callbacks_racing_with_one_state_give_one_outcome(world: World) -> None:
    """Four browsers holding the same state and cookie arrive together: one outcome only."""
    params, launched = started(world)
    name, value = launched.headers["set-cookie"].split(";", 1)[0].split("=", 1)
    browsers = []
    for _ in range(4):
        browser = other_browser(world)
        browser.cookies.set(name, value, domain="broker.test", path="/oauth/callback")
        browsers.append(browser)
    gate = threading.Barrier(len(browsers))
    answers: list[int] = []

    def hit(browser: Any) -> None:
        gate.wait()
        answers.append(world.callback(params, browser=browser).status_code)

    threads = [threading.Thread(target=hit, args=(b,)) for b in browsers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == [303, 409, 409, 409]
    items = world.broker.get("/events", headers=world.headers).json()["items"]
    assert [e["type"] for e in items].count("actionItem.completed") == 1


def test_state_replayed_from_another_browser_is_refused(world: World) -> None:
    """A victim's callback URL opened in the attacker's browser lacks the binding cookie."""
    params, _ = started(world)
    assert_page(
        world.callback(params, browser=other_browser(world)), 403, "BROWSER_BINDING_MISMATCH"
    )
    # The victim can still finish: the refused attempt did not use the flow up.
    assert returned(world.callback(params))["status"] == "completed"


def test_state_with_a_forged_binding_cookie_is_refused(world: World) -> None:
    params, launched = started(world)
    attacker = other_browser(world)
    cookie_name = launched.headers["set-cookie"].split("=", 1)[0]
    attacker.cookies.set(cookie_name, "A" * 22, domain="broker.test", path="/oauth/callback")
    assert_page(world.callback(params, browser=attacker), 403, "BROWSER_BINDING_MISMATCH")


def test_binding_cookie_is_httponly_lax_secure_and_scoped(world: World) -> None:
    _, launched = started(world)
    cookie = launched.headers["set-cookie"]
    for attribute in ("HttpOnly", "SameSite=Lax", "Secure", "Path=/oauth/callback", "Max-Age=600"):
        assert attribute in cookie


def test_tampered_state_is_refused_before_any_network_call(world: World) -> None:
    params, _ = started(world)
    token = params["state"]
    params["state"] = token[:-5] + ("A" if token[-5] != "A" else "B") + token[-4:]
    world.emulator.fail_next_token_requests(100)  # any call to Microsoft would now fail loudly
    assert_page(world.callback(params), 400, "STATE_INVALID")


def test_expired_state_is_refused(world: World) -> None:
    params, _ = started(world)
    world.clock.advance(seconds=601 + 5)
    assert_page(world.callback(params), 400, "STATE_EXPIRED")


def test_state_for_another_audience_is_refused(world: World) -> None:
    params, _ = started(world)
    keyring = world.runtime.credentials.state_keyring
    claims = jwt.decode(params["state"], options={"verify_signature": False})
    claims["aud"] = "someone-else"
    params["state"] = jwt.encode(
        claims,
        keyring.keys[keyring.active_kid],
        algorithm="HS256",
        headers={"kid": keyring.active_kid, "typ": "ctt-state+jwt"},
    )
    assert_page(world.callback(params), 400, "STATE_INVALID")


def test_alg_none_state_is_refused(world: World) -> None:
    params, _ = started(world)
    claims = jwt.decode(params["state"], options={"verify_signature": False})
    params["state"] = jwt.encode(claims, key=None, algorithm="none")  # type: ignore[arg-type]
    assert_page(world.callback(params), 400, "STATE_INVALID")


def test_missing_state_gets_a_page_not_a_redirect(world: World) -> None:
    response = world.broker.get("/oauth/callback?code=abc", follow_redirects=False)
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/html")
    assert "location" not in response.headers


def test_injected_token_parameters_in_the_callback_are_ignored(world: World) -> None:
    """Tokens planted in the query never reach the provider: MSAL's redemption decides."""
    params, _ = started(world)
    params.update(
        access_token="evil", id_token="evil.evil.evil", tenant="attacker", admin_consent="True"
    )
    query = returned(world.callback(params))
    auth = world.redeem(query["resultCode"]).json()["authenticationResult"]
    assert auth["accessToken"] != "evil" and auth["idToken"] != "evil.evil.evil"


def test_html_and_crlf_in_error_description_are_neither_echoed_nor_injected(world: World) -> None:
    params, _ = started(world)
    del params["code"]
    params["error"] = "access_denied"
    params["error_description"] = "<script>alert(1)</script>\r\nLocation: https://evil.example"
    response = world.callback(params)
    query = returned(response)
    assert query["errorCode"] == "CONSENT_DECLINED"
    location = response.headers["location"]
    assert "script" not in location and "evil" not in location and "\n" not in location
    second, _ = started(world)
    del second["code"]
    second["error"] = "access_denied\r\nSet-Cookie: pwned=1"
    answer = world.callback(second)
    # Microsoft never sends control characters in `error`: recorded as a malformed return.
    assert returned(answer)["errorCode"] == "MICROSOFT_RESPONSE_INVALID"
    assert "pwned" not in answer.headers["location"]
    assert "pwned" not in answer.headers.get("set-cookie", "")
    assert "pwned" not in answer.text


def test_link_revoked_during_the_flow_does_not_complete(world: World) -> None:
    link = world.link("REGISTRATION")
    launched = world.click(link["url"])
    params = world.at_microsoft(launched.headers["location"], CONTOSO_ADMIN)
    world.broker.post(f"/actionItems/{link['actionItemId']}/revoke", headers=world.headers)
    assert_page(world.callback(params), 410, "LINK_REVOKED")


def test_callback_removed_from_the_allow_list_during_the_flow_is_never_used(world: World) -> None:
    """The redirect target is re-checked at redirect time: no unapproved redirect, ever."""
    params, _ = started(world)
    providers.remove_callback(world.runtime, world.provider_id, CALLBACK)
    assert_page(world.callback(params), 409, "CALLBACK_NO_LONGER_ALLOWED")


def test_dead_links_get_readable_pages(world: World) -> None:
    assert_page(world.broker.get("/actions/" + "x" * 43), 404, "LINK_NOT_FOUND")
    assert_page(world.broker.get("/actions/short"), 404, "LINK_NOT_FOUND")
    expired = world.link("REGISTRATION", expiresInSeconds=60)
    world.clock.advance(seconds=61)
    assert_page(world.click(expired["url"]), 410, "LINK_EXPIRED")
    revoked = world.link("REGISTRATION")
    world.broker.post(f"/actionItems/{revoked['actionItemId']}/revoke", headers=world.headers)
    assert_page(world.click(revoked["url"]), 410, "LINK_REVOKED")
    used = world.link("REGISTRATION")
    launched = world.click(used["url"])
    world.callback(world.at_microsoft(launched.headers["location"], CONTOSO_ADMIN))
    assert_page(world.click(used["url"]), 409, "LINK_USED")


def test_result_code_is_redeemed_once_and_only_by_its_provider(world: World) -> None:
    params, _ = started(world)
    code = returned(world.callback(params))["resultCode"]
    _, other_key = providers.create_provider(world.runtime, "Globex", callback_urls=(CALLBACK,))
    stranger = world.redeem(code, headers={"Authorization": f"Bearer {other_key.api_key}"})
    assert stranger.status_code == 404 and stranger.json()["code"] == "RESULT_CODE_INVALID"
    assert world.redeem(code).status_code == 200
    again = world.redeem(code)
    assert again.status_code == 404 and again.json()["code"] == "RESULT_CODE_INVALID"


def test_result_code_expires(world: World) -> None:
    params, _ = started(world)
    code = returned(world.callback(params))["resultCode"]
    world.clock.advance(seconds=301)
    assert world.redeem(code).json()["code"] == "RESULT_CODE_INVALID"


def test_no_token_or_code_in_the_redirect_to_the_provider(world: World) -> None:
    params, _ = started(world)
    location = world.callback(params).headers["location"]
    names = set(parse_qs(urlsplit(location).query))
    assert names == {"status", "actionType", "actionItemId", "state", "resultCode"}
    assert params["code"] not in location and params["state"] not in location


def test_launch_sends_the_state_but_no_flow_secret_to_microsoft(world: World) -> None:
    launched = world.click(world.link("REGISTRATION")["url"])
    query = parse_qs(urlsplit(launched.headers["location"]).query)
    assert query["code_challenge_method"] == ["S256"]
    assert "code_verifier" not in query
    claims = jwt.decode(query["state"][0], options={"verify_signature": False})
    assert set(claims) == {"iss", "aud", "iat", "exp", "jti", "itm", "aty", "cbu", "bnd"}


def test_form_post_return_is_bounced_to_the_get_step_where_the_cookie_arrives(
    world: World,
) -> None:
    """A cross-site POST carries no Lax cookie: the broker answers 303 to its own GET."""
    params, _ = started(world)
    posted = world.broker.post(
        "/oauth/callback", data={**params, "future_field": "x"}, follow_redirects=False
    )
    assert posted.status_code == 303
    location = posted.headers["location"]
    assert location.startswith("/oauth/callback?")
    query = returned(world.broker.get(location, follow_redirects=False))
    assert query["status"] == "completed"


def test_sign_in_answer_without_code_or_error_still_reaches_the_provider(world: World) -> None:
    """A spent flow never strands the outcome: it is recorded as a failure and delivered."""
    params, _ = started(world)
    del params["code"]
    query = returned(world.callback(params))
    assert (query["status"], query["errorCode"]) == ("failed", "MICROSOFT_RESPONSE_INVALID")


def test_revoke_racing_the_admins_return_shows_revoked(world: World) -> None:
    link = world.link("REGISTRATION")
    launched = world.click(link["url"])
    params = world.at_microsoft(launched.headers["location"], CONTOSO_ADMIN)
    world.broker.post(f"/actionItems/{link['actionItemId']}/revoke", headers=world.headers)
    assert_page(world.callback(params), 410, "LINK_REVOKED")
    item = world.broker.get(f"/actionItems/{link['actionItemId']}", headers=world.headers).json()
    assert item["status"] == "revoked"


def test_forged_non_ascii_result_code_is_not_found_not_a_500(world: World) -> None:
    response = world.redeem("ctt_rc_\u00e9\u00e9\u00e9")
    assert response.status_code == 404 and response.json()["code"] == "RESULT_CODE_INVALID"
