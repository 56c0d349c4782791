"""Every answer carries the security headers, whichever layer produced it.

Before, 413, INVALID_REQUEST_BODY and the pages for ``/actions/``,
``/actions/a/b`` and ``/oauth/x`` missed some: two error renderers, and the
headers middleware ran inside the guards.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from broker.runtime import Runtime
from handlers.app import load_spec
from tests.conftest import ProviderAccount, with_runtime_settings
from tests.shared_app import serving_app

REQUIRED = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD")
BODIES: dict[str, tuple[bytes, str]] = {
    "none": (b"", ""),
    "json": (b'{"name": "Contoso"}', "application/json"),
    "broken-json": (b'{"name": ', "application/json"),
    "not-utf8": (b'{"name": "\xff"}', "application/json"),
    "too-large": (b'{"n": "' + b"a" * 70000 + b'"}', "application/json"),
    "form": (b"state=x&code=y", "application/x-www-form-urlencoded"),
    "text": (b"hello", "text/plain"),
}
BAD_PATHS = (
    "/actions/",
    "/actions/a/b",
    "/actions/%2e%2e%2f",
    "/oauth/x",
    "/oauth/",
    "/enterprises/",
    "/nowhere",
    "/",
    "//enterprises",
    "/health/",
    "/ui",
    "/openapi.json",
)
GHOST = "01JCX3Q2B6V7W8X9Y0Z1A2B3C4"


def spec_paths() -> list[str]:
    spec = load_spec()
    values = {
        "enterpriseId": f"ent_{GHOST}",
        "actionItemId": f"act_{GHOST}",
        "eventId": f"evt_{GHOST}",
        "handle": "A" * 43,
    }
    paths = []
    for template in spec["paths"]:
        for name, value in values.items():
            template = template.replace("{" + name + "}", value)
        paths.append(template)
    return paths


def assert_security_headers(response: Any, where: str) -> None:
    for name, value in REQUIRED.items():
        assert response.headers.get(name) == value, (where, response.status_code, name)
    assert "frame-ancestors 'none'" in response.headers.get("content-security-policy", ""), where
    if response.status_code in (301, 302, 303, 307, 308):
        location = response.headers["location"]
        assert not location.startswith("http://evil.example"), (where, location)


def test_every_route_method_and_body_answers_with_the_security_headers(
    client: Any, provider: ProviderAccount
) -> None:
    """Every spec route, every method, good and bad bodies, with and without a key."""
    for path in [*spec_paths(), *BAD_PATHS]:
        for method in METHODS:
            for name, (body, content_type) in BODIES.items():
                if method in ("GET", "HEAD", "OPTIONS", "DELETE") and name != "none":
                    continue
                for auth in ({}, provider.headers):
                    headers = {**auth, "Host": "evil.example"}
                    if content_type:
                        headers["Content-Type"] = content_type
                    response = client.request(method, path, content=body, headers=headers)
                    assert_security_headers(response, f"{method} {path} {name}")


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    path=st.text(alphabet=st.sampled_from("abcdeAO/._-%2fEe~?&=;"), min_size=0, max_size=40).map(
        lambda tail: "/" + tail
    ),
    method=st.sampled_from(METHODS),
)
@example(path="//evil.example/x", method="GET")
def test_any_path_answers_with_the_security_headers(client: Any, path: str, method: str) -> None:
    """Whatever path an attacker makes up, the answer carries the full header set."""
    # Absolute, so that a path starting with "//" is a path (httpx refuses it as relative).
    url = f"{client.base_url}{path}"
    response = client.request(method, url, headers={"Host": "evil.example"})
    assert_security_headers(response, f"{method} {path}")


def test_trailing_slash_never_redirects_to_the_host_header(client: Any) -> None:
    """Attacker sends GET /enterprises/ with Host: evil.example: before, a 307 to evil.example."""
    response = client.get("/enterprises/", headers={"Host": "evil.example"}, follow_redirects=False)
    assert response.status_code == 404
    assert "location" not in response.headers
    assert response.json()["code"] == "NOT_FOUND"


def test_production_sends_hsts_and_hides_swagger_ui(runtime: Runtime) -> None:
    """In production every answer pins https, and the interactive docs are off by default."""
    production = with_runtime_settings(runtime, mode="production", swagger_ui=False)
    client = serving_app(production).test_client(raise_server_exceptions=False)
    for path in ("/health", "/enterprises", "/actions/x/y", "/ui/"):
        response = client.get(path)
        assert response.headers["strict-transport-security"].startswith("max-age=")
    assert client.get("/ui/").status_code == 404
    assert client.get("/openapi.json").status_code == 200


@pytest.mark.parametrize("swagger", [True, False])
def test_swagger_ui_follows_its_setting(runtime: Runtime, swagger: bool) -> None:
    changed = with_runtime_settings(runtime, mode="production", swagger_ui=swagger)
    client = serving_app(changed).test_client(raise_server_exceptions=False)
    assert (client.get("/ui/").status_code == 200) is swagger


def test_sandbox_sends_no_hsts(client: Any) -> None:
    """HSTS over the sandbox's plain http would only confuse browsers on localhost."""
    assert "strict-transport-security" not in client.get("/health").headers
