"""Metadata endpoints: OpenID configuration, JWKS, instance discovery."""

from __future__ import annotations

from emulator_test_support import ISSUER, TestClient

from emulator import CONSUMERS_TENANT_ID, Emulator, create_emulator_app, default_config
from emulator.seed import CONTOSO_DOMAIN, CONTOSO_TENANT_ID


def test_tenant_discovery_names_the_tenant_issuer_and_its_endpoints(client: TestClient) -> None:
    doc = client.get(f"/{CONTOSO_TENANT_ID}/v2.0/.well-known/openid-configuration").json()
    assert doc["issuer"] == f"{ISSUER}/{CONTOSO_TENANT_ID}/v2.0"
    assert doc["token_endpoint"] == f"{ISSUER}/{CONTOSO_TENANT_ID}/oauth2/v2.0/token"
    assert doc["authorization_endpoint"] == f"{ISSUER}/{CONTOSO_TENANT_ID}/oauth2/v2.0/authorize"
    assert doc["jwks_uri"] == f"{ISSUER}/{CONTOSO_TENANT_ID}/discovery/v2.0/keys"
    assert doc["id_token_signing_alg_values_supported"] == ["RS256"]
    assert doc["response_modes_supported"] == ["query", "fragment", "form_post"]


def test_domain_discovery_resolves_to_the_tenant_guid(client: TestClient) -> None:
    doc = client.get(f"/{CONTOSO_DOMAIN}/v2.0/.well-known/openid-configuration").json()
    assert doc["issuer"] == f"{ISSUER}/{CONTOSO_TENANT_ID}/v2.0"


def test_multi_tenant_discovery_issuer_keeps_the_tenantid_template(client: TestClient) -> None:
    for alias in ("common", "organizations"):
        doc = client.get(f"/{alias}/v2.0/.well-known/openid-configuration").json()
        assert doc["issuer"] == f"{ISSUER}/{{tenantid}}/v2.0"
        assert doc["token_endpoint"] == f"{ISSUER}/{alias}/oauth2/v2.0/token"


def test_consumers_discovery_issuer_is_the_personal_account_tenant(client: TestClient) -> None:
    doc = client.get("/consumers/v2.0/.well-known/openid-configuration").json()
    assert doc["issuer"] == f"{ISSUER}/{CONSUMERS_TENANT_ID}/v2.0"


def test_unknown_tenant_discovery_is_a_400_with_aadsts90002(client: TestClient) -> None:
    response = client.get("/nosuch.example/v2.0/.well-known/openid-configuration")
    assert response.status_code == 400
    assert response.json()["error_codes"] == [90002]


def test_authorization_endpoint_uses_the_browser_base_url() -> None:
    emulator = Emulator(default_config(ISSUER, browser_base_url="http://127.0.0.1:8400/"))
    client = TestClient(create_emulator_app(emulator), base_url=ISSUER)
    doc = client.get("/common/v2.0/.well-known/openid-configuration").json()
    assert doc["authorization_endpoint"] == "http://127.0.0.1:8400/common/oauth2/v2.0/authorize"
    assert doc["token_endpoint"] == f"{ISSUER}/common/oauth2/v2.0/token"


def test_jwks_publishes_rs256_keys_with_kid(client: TestClient, emulator: Emulator) -> None:
    keys = client.get(f"/{CONTOSO_TENANT_ID}/discovery/v2.0/keys").json()["keys"]
    assert [k["kid"] for k in keys] == [emulator.active_kid]
    assert keys[0]["kty"] == "RSA" and keys[0]["alg"] == "RS256" and keys[0]["use"] == "sig"


def test_instance_discovery_names_only_the_emulator_host(client: TestClient) -> None:
    body = client.get("/common/discovery/instance").json()
    assert body["metadata"][0]["aliases"] == ["login.emulator.test"]
    assert body["tenant_discovery_endpoint"].startswith(ISSUER)
