"""A provider's name, portal link and logo on the broker's pages: checked, escaped, CSP-bound."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from broker import errors, providers
from broker.cli import EXIT_REFUSED, main
from broker.runtime import Runtime
from handlers import pages
from tests.conftest import CALLBACK, Database, ProviderAccount

PORTAL = "https://portal.acme.example/teams"
LOGO = "https://cdn.acme.example/logo.png"


def brand(runtime: Runtime, provider: ProviderAccount, **changes: Any) -> Any:
    values = {"display_name": "Acme Telecom", "portal_url": PORTAL, "logo_url": LOGO, **changes}
    return providers.set_branding(runtime, provider.provider_id, **values)


def revoked_link(client: Any, provider: ProviderAccount) -> str:
    enterprise = client.post(
        "/enterprises", json={"name": "Contoso", "externalId": "c-brand"}, headers=provider.headers
    ).json()
    item = client.post(
        "/enterprise/getActionItemUrl",
        json={
            "actionType": "REGISTRATION",
            "enterpriseId": enterprise["enterpriseId"],
            "callbackUrl": CALLBACK,
        },
        headers=provider.headers,
    ).json()
    revoked = client.post(f"/actionItems/{item['actionItemId']}/revoke", headers=provider.headers)
    assert revoked.status_code == 200
    return "/" + item["url"].split("/", 3)[3]


def test_dead_link_page_leads_back_to_the_providers_portal(
    client: Any, runtime: Runtime, provider: ProviderAccount
) -> None:
    brand(runtime, provider)
    response = client.get(revoked_link(client, provider), headers={"Accept-Language": "de"})
    assert response.status_code == 410
    assert f'href="{PORTAL}"' in response.text and "Zurück zu Acme Telecom" in response.text
    assert f'<img class="logo" src="{LOGO}"' in response.text
    csp = response.headers["content-security-policy"]
    assert f"img-src {LOGO}" in csp and "default-src 'none'" in csp


def test_page_without_a_known_provider_shows_no_branding(
    client: Any, runtime: Runtime, provider: ProviderAccount
) -> None:
    brand(runtime, provider)
    response = client.get("/actions/not-a-link")
    assert response.status_code == 404
    assert "<img" not in response.text and "href=" not in response.text
    assert "img-src" not in response.headers["content-security-policy"]


def test_unbranded_provider_page_has_no_back_link(
    client: Any, runtime: Runtime, provider: ProviderAccount
) -> None:
    response = client.get(revoked_link(client, provider))
    assert response.status_code == 410 and "<a " not in response.text


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("portal_url", "http://portal.acme.example/", "CALLBACK_URL_INSECURE_HTTP"),
        ("portal_url", "javascript:alert(1)", "CALLBACK_URL_SCHEME_NOT_ALLOWED"),
        ("logo_url", "https://127.0.0.1/logo.png", "WEBHOOK_URL_BLOCKED"),
        ("logo_url", "https://10.0.0.8/logo.png", "WEBHOOK_URL_BLOCKED"),
        ("logo_url", "https://user:pw@cdn.acme.example/logo.png", "CALLBACK_URL_USERINFO"),
        ("logo_url", "https://cdn.acme.example/a;script-src*", "CALLBACK_URL_FORBIDDEN_CHARACTERS"),
        ("display_name", "Acme\u0000", "INVALID_REQUEST"),
    ],
)
def test_branding_that_could_mislead_or_reach_inward_is_refused(
    runtime: Runtime, provider: ProviderAccount, field: str, value: str, code: str
) -> None:
    """Attacker (a compromised operator script) sets a branding URL to run script, probe the
    admin's network or widen the page's CSP: refused, and nothing is stored."""
    with pytest.raises(errors.BrokerError) as refused:
        brand(runtime, provider, **{field: value})
    assert refused.value.code == code
    assert providers.branding_of(runtime, provider.provider_id) is None


def test_logo_url_cannot_smuggle_a_csp_directive() -> None:
    """Even a stored value is quoted only into img-src: the page's other directives stay."""
    headers = pages.page_headers(image=LOGO + "?v=2")
    assert headers["Content-Security-Policy"].endswith(f"img-src {LOGO}")


def test_names_are_escaped_on_the_page(runtime: Runtime, provider: ProviderAccount) -> None:
    branding = brand(runtime, provider, display_name="<b>Acme</b> & Co")
    page = pages.error_page(errors.LinkRevoked("x"), "en", branding)
    assert "<b>Acme</b>" not in page and "&lt;b&gt;Acme&lt;/b&gt; &amp; Co" in page


def test_branding_is_set_and_cleared_from_the_console(
    database: Database, tmp_path: Path, runtime: Runtime, provider: ProviderAccount
) -> None:
    env = {"CTT_DATABASE_URL": database.url, "CTT_DATA_DIR": str(tmp_path)}

    def run(args: list[str]) -> tuple[int, str]:
        out, err = io.StringIO(), io.StringIO()
        return main(args, env, out, err), out.getvalue() + err.getvalue()

    code, out = run(
        ["provider", "set-branding", "Acme Telecom", "--display-name", "Acme", "--portal-url",
         PORTAL, "--logo-url", LOGO]
    )  # fmt: skip
    assert code == 0
    assert json.loads(out) == {"displayName": "Acme", "portalUrl": PORTAL, "logoUrl": LOGO}
    code, out = run(
        ["provider", "set-branding", "Acme Telecom", "--portal-url", "http://x.example/"]
    )
    assert code == EXIT_REFUSED and "CALLBACK_URL_INSECURE_HTTP" in out
    assert run(["provider", "set-branding", "Acme Telecom"])[0] == 0
    assert providers.branding_of(runtime, provider.provider_id) is None
