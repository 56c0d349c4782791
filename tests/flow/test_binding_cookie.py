"""The browser-binding cookie: ``__Host-`` prefixed in production, so no sibling can plant it."""

from __future__ import annotations

import warnings
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

from tests.flow.conftest import BROKER, CONTOSO_ADMIN, World, returned
from tests.shared_app import serving_app

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient


def production_browser(world: World) -> Any:
    settings = replace(world.runtime.settings, mode="production")
    runtime = replace(world.runtime, settings=settings)
    app = serving_app(runtime)
    return TestClient(app, base_url=BROKER, raise_server_exceptions=False)


def cookie_attributes(header: str) -> tuple[str, dict[str, str]]:
    name_value, *attributes = (part.strip() for part in header.split(";"))
    pairs = dict(
        (a.split("=", 1)[0].lower(), a.split("=", 1)[1] if "=" in a else "") for a in attributes
    )
    return name_value.split("=", 1)[0], pairs


def test_production_binding_cookie_is_host_prefixed_so_a_subdomain_cannot_plant_it(
    world: World,
) -> None:
    """A sibling host sets a ``Domain=`` cookie to fix the nonce: a __Host- cookie refuses it."""
    browser = production_browser(world)
    launched = browser.get(urlsplit(world.link("REGISTRATION")["url"]).path, follow_redirects=False)
    assert launched.status_code == 302, launched.text
    name, attributes = cookie_attributes(launched.headers["set-cookie"])
    assert name.startswith("__Host-ctt_bind_")
    assert attributes["path"] == "/"
    assert "secure" in attributes and "httponly" in attributes
    assert "domain" not in attributes
    params = world.at_microsoft(launched.headers["location"], CONTOSO_ADMIN)
    done = browser.get("/oauth/callback", params=params, follow_redirects=False)
    assert returned(done)["status"] == "completed"
    expired_name, expired = cookie_attributes(done.headers["set-cookie"])
    assert (expired_name, expired["path"], expired["max-age"]) == (name, "/", "0")
    assert "secure" in expired  # a __Host- cookie is only replaced by a Secure one


def test_production_callback_without_the_host_cookie_is_refused(world: World) -> None:
    """The old cookie name (no prefix) does not bind a production flow."""
    browser = production_browser(world)
    launched = browser.get(urlsplit(world.link("REGISTRATION")["url"]).path, follow_redirects=False)
    name, _ = cookie_attributes(launched.headers["set-cookie"])
    value = browser.cookies.get(name)
    browser.cookies.clear()
    browser.cookies.set(name.removeprefix("__Host-"), value, domain="broker.test")
    params = world.at_microsoft(launched.headers["location"], CONTOSO_ADMIN)
    refused = browser.get("/oauth/callback", params=params, follow_redirects=False)
    assert refused.status_code == 403
    assert "<code>BROWSER_BINDING_MISMATCH</code>" in refused.text


def test_sandbox_binding_cookie_keeps_its_name_and_callback_path(world: World) -> None:
    """Outside production (loopback http sandbox included) the cookie stays as it was."""
    launched = world.click(world.link("REGISTRATION")["url"])
    name, attributes = cookie_attributes(launched.headers["set-cookie"])
    assert name.startswith("ctt_bind_")
    assert attributes["path"] == "/oauth/callback"
