"""Response validation: on in the sandbox and the tests, off in production by default.

With it on, an answer that breaks ``openapi.yaml`` becomes a 500 problem (and a
log line) instead of reaching a generated client; production turns it off for
speed (``CTT_VALIDATE_RESPONSES``), relying on these tests and the contract suite.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from broker.runtime import Runtime
from handlers import views
from handlers.app import create_app
from tests.conftest import CALLBACK, ProviderAccount


def client_for(runtime: Runtime, validate: bool) -> Any:
    settings = replace(runtime.settings, validate_responses=validate)
    app = create_app(settings, replace(runtime, settings=settings))
    return app.test_client(raise_server_exceptions=False)


def broken_issued_action_item(value: Any) -> dict[str, Any]:
    body = dict(views_issued(value))
    del body["expiresAt"]  # required by ActionItemCreated
    return body


views_issued = views.issued_action_item


def ask(client: Any, provider: ProviderAccount) -> Any:
    enterprise = client.post(
        "/enterprises", json={"name": "Contoso", "externalId": "c-1"}, headers=provider.headers
    ).json()["enterpriseId"]
    body = {"actionType": "REGISTRATION", "enterpriseId": enterprise, "callbackUrl": CALLBACK}
    return client.post("/enterprise/getActionItemUrl", json=body, headers=provider.headers)


def test_an_answer_that_breaks_the_spec_is_caught_when_validation_is_on(
    runtime: Runtime, provider: ProviderAccount, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert runtime.settings.validate_responses, "the tests run with response validation on"
    monkeypatch.setattr(views, "issued_action_item", broken_issued_action_item)
    response = ask(client_for(runtime, validate=True), provider)
    assert response.status_code == 500
    assert response.headers["content-type"].startswith("application/problem+json")


def test_with_validation_off_the_answer_is_sent_as_the_handler_built_it(
    runtime: Runtime, provider: ProviderAccount, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(views, "issued_action_item", broken_issued_action_item)
    response = ask(client_for(runtime, validate=False), provider)
    assert response.status_code == 201
    assert "expiresAt" not in response.json()
