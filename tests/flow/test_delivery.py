"""form_post delivery: a signed result JWT posted to the callback, verifiable with our JWKS."""

from __future__ import annotations

import re
from html import unescape

import jwt

from emulator.seed import CONTOSO_TENANT_ID
from tests.conftest import CALLBACK
from tests.flow.conftest import BROKER, CONTOSO_ADMIN, World


def test_form_post_delivers_a_result_jwt_signed_with_the_published_key(world: World) -> None:
    launched = world.click(world.link("REGISTRATION", resultDelivery="form_post")["url"])
    response = world.callback(world.at_microsoft(launched.headers["location"], CONTOSO_ADMIN))
    assert response.status_code == 200
    assert f'action="{CALLBACK}"' in response.text
    csp = response.headers["content-security-policy"]
    assert "form-action https://portal.example.com" in csp and "script-src 'sha256-" in csp
    token = unescape(re.search(r'name="result" value="([^"]+)"', response.text).group(1))  # type: ignore[union-attr]
    assert re.search(r'name="state" value="portal-state-42"', response.text)
    jwks = world.broker.get("/.well-known/jwks.json").json()
    key = jwt.PyJWK(jwks["keys"][0])
    assert jwt.get_unverified_header(token)["kid"] == jwks["keys"][0]["kid"]
    claims = jwt.decode(
        token,
        key.key,
        algorithms=["ES256"],
        audience=world.provider_id,
        issuer=BROKER,
        options={"verify_exp": False, "verify_iat": False},
    )
    assert claims["result"]["status"] == "completed"
    assert claims["result"]["tenantId"] == CONTOSO_TENANT_ID
    assert claims["result"]["authenticationResult"]["accessToken"]
    # The provider binds the posted result to its session with these two.
    assert (claims["result"]["state"], claims["result"]["callbackUrl"]) == (
        "portal-state-42",
        CALLBACK,
    )


def test_jwks_publishes_only_public_material(world: World) -> None:
    key = world.broker.get("/.well-known/jwks.json").json()["keys"][0]
    assert set(key) == {"kty", "crv", "use", "alg", "kid", "x", "y"}


def test_result_replayed_into_another_customers_session_is_detectable(world: World) -> None:
    """Customer B pastes customer A's resultCode into B's return URL (B's own state).

    The redeemed result names A's state and callback: the provider, comparing them with
    B's session, refuses it. Before, the result carried neither and the redeem succeeded.
    """
    first = world.run("REGISTRATION", CONTOSO_ADMIN, state="customer-a", reregister=True)
    code_of_a = first.headers["location"].split("resultCode=", 1)[1]
    second = world.run(
        "REGISTRATION",
        CONTOSO_ADMIN,
        state="customer-b",
        reregister=True,
        callbackUrl=CALLBACK + "?customer=b",
    )
    assert "state=customer-b" in second.headers["location"]
    redeemed = world.redeem(code_of_a).json()
    assert redeemed["state"] == "customer-a" != "customer-b"
    assert redeemed["callbackUrl"] == CALLBACK
    events = world.broker.get("/events", headers=world.headers).json()["items"]
    assert {e["data"]["state"] for e in events if e["type"] == "actionItem.completed"} == {
        "customer-a",
        "customer-b",
    }
