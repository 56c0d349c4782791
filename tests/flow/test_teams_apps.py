"""DEPLOY_TEAMS_APPS end to end: the admin signs in, the broker publishes or updates the
provider's Teams apps in the tenant's catalog (the emulator's Graph), and reports per app.

Refusal and fault tests are named after what they stop; each says its story in one line.
"""

from __future__ import annotations

import json
import re
from html import unescape
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import select

from broker.db import events, flows, results
from broker.teams_apps import PackageContent
from broker.teams_deploy import GraphCatalogClient, deploy_packages
from emulator.seed import CONTOSO_TENANT_ID
from sandbox.teams_demo import DEMO_APP_ID, build_package, demo_manifest, demo_package
from tests.conftest import START
from tests.flow.conftest import (
    CONTOSO_ADMIN,
    CONTOSO_USER,
    FABRIKAM_ADMIN,
    World,
    returned,
)

CONTOSO_TEAMS_ADMIN = "tomas@contoso.onmicrosoft.com"
SECOND_APP_ID = "2b3c4d5e-6f70-4182-93a4-b5c6d7e8f901"


def upload(world: World, content: bytes) -> dict[str, Any]:
    response = world.broker.post(
        "/teamsApps/packages",
        content=content,
        headers={**world.headers, "Content-Type": "application/zip"},
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def deploy(world: World, username: str = CONTOSO_ADMIN, **extra: Any) -> dict[str, str]:
    return returned(world.run("DEPLOY_TEAMS_APPS", username, **extra))


def apps_of(world: World, query: dict[str, str]) -> list[dict[str, Any]]:
    result = world.redeem(query["resultCode"]).json()
    assert "authenticationResult" not in result  # the delegated token is never handed on
    return list(result["teamsApps"]["apps"])


def catalog(world: World) -> list[dict[str, Any]]:
    return world.emulator.graph.apps(CONTOSO_TENANT_ID)


@pytest.fixture
def ready(world: World) -> World:
    world.register()
    upload(world, demo_package("1.0.0"))
    return world


def test_publish_then_update_after_a_version_bump_then_unchanged(ready: World) -> None:
    world = ready
    first = deploy(world)
    assert (first["status"], first["actionType"]) == ("completed", "DEPLOY_TEAMS_APPS")
    redeemed = world.redeem(first["resultCode"]).json()
    print("\nredeem payload of the first deployment:", json.dumps(redeemed, indent=2))
    assert "authenticationResult" not in redeemed
    [published] = redeemed["teamsApps"]["apps"]
    assert published["status"] == "published" and published["version"] == "1.0.0"
    assert published["manifestId"] == DEMO_APP_ID and published["graphErrorCode"] is None
    [in_catalog] = catalog(world)
    assert published["catalogAppId"] == in_catalog["id"]

    upload(world, demo_package("1.1.0"))
    [updated] = apps_of(world, deploy(world))
    assert (updated["status"], updated["version"]) == ("updated", "1.1.0")
    assert updated["catalogAppId"] == in_catalog["id"]
    assert [d["version"] for d in catalog(world)[0]["appDefinitions"]] == ["1.1.0"]

    [unchanged] = apps_of(world, deploy(world))
    assert (unchanged["status"], unchanged["version"]) == ("unchanged", "1.1.0")

    enterprise = world.broker.get(f"/enterprises/{world.enterprise_id}", headers=world.headers)
    [state] = enterprise.json()["teamsApps"]
    assert state["status"] == "unchanged" and state["version"] == "1.1.0"
    assert state["catalogAppId"] == in_catalog["id"]


def test_a_teams_administrator_may_deploy(ready: World) -> None:
    query = deploy(ready, CONTOSO_TEAMS_ADMIN)
    assert query["status"] == "completed"
    assert apps_of(ready, query)[0]["status"] == "published"


def test_the_deployment_is_an_event_and_an_audit_line(ready: World) -> None:
    query = deploy(ready)
    listed = ready.broker.get(
        "/events", params={"type": "teamsApps.deployed"}, headers=ready.headers
    ).json()["items"]
    [event] = listed
    print("\nteamsApps.deployed event:", json.dumps(event, indent=2))
    assert event["data"]["actionItemId"] == query["actionItemId"]
    assert event["data"]["status"] == "completed"
    assert event["data"]["teamsApps"]["apps"][0]["status"] == "published"
    assert event["data"]["state"] == "portal-state-42"
    completed = ready.broker.get(
        "/events", params={"type": "actionItem.completed"}, headers=ready.headers
    ).json()["items"]
    assert completed[-1]["data"]["teamsApps"]["apps"][0]["status"] == "published"


def test_form_post_result_carries_the_per_app_outcome(ready: World) -> None:
    launched = ready.click(ready.link("DEPLOY_TEAMS_APPS", resultDelivery="form_post")["url"])
    response = ready.callback(ready.at_microsoft(launched.headers["location"], CONTOSO_ADMIN))
    assert response.status_code == 200
    token = unescape(re.search(r'name="result" value="([^"]+)"', response.text).group(1))  # type: ignore[union-attr]
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["result"]["teamsApps"]["apps"][0]["status"] == "published"
    assert "authenticationResult" not in claims["result"]


def test_the_delegated_token_is_never_stored(ready: World) -> None:
    """After the flow nothing in the database holds a token Graph would accept."""
    deploy(ready)
    with ready.runtime.engine.connect() as connection:
        stored = [
            *connection.execute(select(results.c.payload)).scalars(),
            *connection.execute(select(events.c.payload)).scalars(),
            *[m for m in connection.execute(select(flows.c.msal_flow)).scalars() if m],
        ]
    assert stored and not any("eyJ" in text or "accessToken" in text for text in stored)


def test_a_selection_deploys_only_the_named_packages(ready: World) -> None:
    second = upload(ready, build_package(demo_manifest("1.0.0", app_id=SECOND_APP_ID)))
    query = deploy(ready, teamsAppPackageIds=[second["packageId"]])
    assert [a["manifestId"] for a in apps_of(ready, query)] == [SECOND_APP_ID]
    item = ready.broker.get(f"/actionItems/{query['actionItemId']}", headers=ready.headers)
    assert item.json()["actionType"] == "DEPLOY_TEAMS_APPS"
    assert item.json()["teamsAppPackageIds"] == [second["packageId"]]


def test_the_default_selection_is_every_apps_current_package(ready: World) -> None:
    upload(ready, demo_package("1.2.0"))
    upload(ready, build_package(demo_manifest("3.0.0", app_id=SECOND_APP_ID)))
    apps = apps_of(ready, deploy(ready))
    assert sorted((a["manifestId"], a["version"]) for a in apps) == sorted(
        [(DEMO_APP_ID, "1.2.0"), (SECOND_APP_ID, "3.0.0")]
    )


def test_a_package_deleted_after_the_link_was_issued_is_reported_failed(ready: World) -> None:
    packages = ready.broker.get("/teamsApps/packages", headers=ready.headers).json()["items"]
    link = ready.link("DEPLOY_TEAMS_APPS")
    ready.broker.delete(f"/teamsApps/packages/{packages[0]['packageId']}", headers=ready.headers)
    launched = ready.click(link["url"])
    query = returned(
        ready.callback(ready.at_microsoft(launched.headers["location"], CONTOSO_ADMIN))
    )
    assert (query["status"], query["errorCode"]) == ("failed", "TEAMS_APP_DEPLOY_FAILED")
    [app] = apps_of(ready, query)
    assert app["errorCode"] == "TEAMS_APP_PACKAGE_NOT_FOUND"


# -- refusals ------------------------------------------------------------------------


def test_deploy_by_an_admin_without_the_role_is_refused_before_graph(ready: World) -> None:
    """A plain user signs in on the deployment link: refused, and Graph never hears of it."""
    query = deploy(ready, CONTOSO_USER)
    assert (query["status"], query["errorCode"]) == ("failed", "NOT_TEAMS_ADMIN")
    assert not ready.emulator.graph.calls and catalog(ready) == []


def test_deploy_by_an_admin_of_another_tenant_is_refused(ready: World) -> None:
    """Fabrikam's admin must not push the provider's apps into Fabrikam for Contoso's link."""
    query = deploy(ready, FABRIKAM_ADMIN)
    assert (query["status"], query["errorCode"]) == ("failed", "LOGIN_WRONG_TENANT")
    assert not ready.emulator.graph.calls


def test_deploy_needs_a_registered_enterprise(world: World) -> None:
    upload(world, demo_package())
    response = world.broker.post(
        "/enterprise/getActionItemUrl",
        json={
            "actionType": "DEPLOY_TEAMS_APPS",
            "enterpriseId": world.enterprise_id,
            "callbackUrl": "https://portal.example.com/teams/callback",
        },
        headers=world.headers,
    )
    assert response.status_code == 409
    assert response.json()["code"] == "ENTERPRISE_NOT_REGISTERED"


def test_deploy_without_any_package_is_refused(world: World) -> None:
    world.register()
    response = world.broker.post(
        "/enterprise/getActionItemUrl",
        json={
            "actionType": "DEPLOY_TEAMS_APPS",
            "enterpriseId": world.enterprise_id,
            "callbackUrl": "https://portal.example.com/teams/callback",
        },
        headers=world.headers,
    )
    assert response.status_code == 404
    assert response.json()["code"] == "TEAMS_APP_PACKAGE_NOT_FOUND"


def test_another_providers_package_cannot_be_selected(ready: World) -> None:
    """Acme names Globex's package id in its deployment link: not found, as if it did not exist."""
    from broker import providers
    from broker.teams_apps import upload_package

    other, _key = providers.create_provider(ready.runtime, "Globex Voice")
    foreign = upload_package(
        ready.runtime,
        other.provider_id,
        build_package(demo_manifest("1.0.0", app_id=SECOND_APP_ID)),
    )
    response = ready.broker.post(
        "/enterprise/getActionItemUrl",
        json={
            "actionType": "DEPLOY_TEAMS_APPS",
            "enterpriseId": ready.enterprise_id,
            "callbackUrl": "https://portal.example.com/teams/callback",
            "teamsAppPackageIds": [foreign.package_id],
        },
        headers=ready.headers,
    )
    assert response.status_code == 404
    assert response.json()["code"] == "TEAMS_APP_PACKAGE_NOT_FOUND"


def test_a_package_selection_on_another_action_is_refused(ready: World) -> None:
    packages = ready.broker.get("/teamsApps/packages", headers=ready.headers).json()["items"]
    response = ready.broker.post(
        "/enterprise/getActionItemUrl",
        json={
            "actionType": "LOGIN_ENTERPRISE_ADMIN",
            "enterpriseId": ready.enterprise_id,
            "callbackUrl": "https://portal.example.com/teams/callback",
            "teamsAppPackageIds": [packages[0]["packageId"]],
        },
        headers=ready.headers,
    )
    assert response.status_code == 400
    assert response.json()["field"] == "teamsAppPackageIds"


def test_two_versions_of_one_app_in_a_selection_are_refused(ready: World) -> None:
    newer = upload(ready, demo_package("1.1.0"))
    older = ready.broker.get("/teamsApps/packages", headers=ready.headers).json()["items"][0]
    response = ready.broker.post(
        "/enterprise/getActionItemUrl",
        json={
            "actionType": "DEPLOY_TEAMS_APPS",
            "enterpriseId": ready.enterprise_id,
            "callbackUrl": "https://portal.example.com/teams/callback",
            "teamsAppPackageIds": [older["packageId"], newer["packageId"]],
        },
        headers=ready.headers,
    )
    assert response.status_code == 400


# -- Graph's faults --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_code", "graph_code"),
    [
        (403, "TEAMS_APP_DEPLOY_FAILED", "Forbidden"),
        (409, "TEAMS_APP_DEPLOY_FAILED", "Conflict"),
        (500, "MICROSOFT_UNAVAILABLE", "InternalServerError"),
        (503, "MICROSOFT_UNAVAILABLE", "ServiceUnavailable"),
    ],
)
def test_graph_refusals_are_reported_per_app_with_graphs_code(
    ready: World, status: int, error_code: str, graph_code: str
) -> None:
    ready.emulator.graph.fail_next(1, status)
    query = deploy(ready)
    assert (query["status"], query["errorCode"]) == ("failed", "TEAMS_APP_DEPLOY_FAILED")
    [app] = apps_of(ready, query)
    assert (app["status"], app["errorCode"], app["graphErrorCode"]) == (
        "failed",
        error_code,
        graph_code,
    )
    state = ready.broker.get(f"/enterprises/{ready.enterprise_id}", headers=ready.headers).json()
    assert state["teamsApps"][0]["status"] == "failed"
    # A second run, with Graph healthy again, publishes.
    assert apps_of(ready, deploy(ready))[0]["status"] == "published"


def test_a_catalog_holding_a_newer_version_is_never_downgraded(
    ready: World,
) -> None:
    """The catalog already holds a newer version than the package: never downgraded, reported."""
    upload(ready, demo_package("2.0.0"))
    apps_of(ready, deploy(ready))
    ready.broker.delete(
        "/teamsApps/packages/"
        + ready.broker.get("/teamsApps/packages", headers=ready.headers).json()["items"][1][
            "packageId"
        ],
        headers=ready.headers,
    )
    query = deploy(ready)
    [app] = apps_of(ready, query)
    assert (app["status"], app["graphErrorCode"], app["version"]) == (
        "failed",
        "CatalogVersionNewer",
        "2.0.0",
    )


def test_partial_failure_names_each_app(ready: World) -> None:
    """One app fails, the other is published: failed overall, with both outcomes."""
    upload(ready, build_package(demo_manifest("1.0.0", app_id=SECOND_APP_ID)))
    ready.emulator.graph.fail_next(1, 403)
    query = deploy(ready)
    assert (query["status"], query["errorCode"]) == ("failed", "TEAMS_APP_DEPLOY_FAILED")
    statuses = sorted(a["status"] for a in apps_of(ready, query))
    assert statuses == ["failed", "published"]


def test_throttling_is_honoured_with_retry_after(ready: World) -> None:
    ready.emulator.graph.fail_next(2, 429, retry_after=3)
    query = deploy(ready)
    assert query["status"] == "completed"
    assert ready.sleeps[-2:] == [3.0, 3.0]


def test_throttling_beyond_the_budget_fails_in_bounded_time(ready: World) -> None:
    """Graph says "retry in 10 s" forever: we give up within the budget, with its code."""
    ready.emulator.graph.fail_next(50, 429, retry_after=10)
    query = deploy(ready)
    assert (query["status"], query["errorCode"]) == ("failed", "TEAMS_APP_DEPLOY_FAILED")
    [app] = apps_of(ready, query)
    assert app["graphErrorCode"] == "TooManyRequests"
    assert sum(ready.sleeps) <= ready.runtime.settings.graph_retry_budget_seconds


def test_a_graph_timeout_is_reported_per_app() -> None:
    """Graph never answers: the app is failed with MICROSOFT_TIMEOUT; nothing hangs or crashes."""

    def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    client = GraphCatalogClient(
        httpx.Client(transport=httpx.MockTransport(timeout)),
        "https://graph.microsoft.com",
        "token",
        sleep=lambda _s: None,
        clock=lambda: START,
        retry_budget_seconds=30,
    )
    package = PackageContent("tap_X", DEMO_APP_ID, "1.0.0", demo_package())
    [result] = deploy_packages(client, {"tap_X": package})
    assert (result.status, result.error_code) == ("failed", "MICROSOFT_TIMEOUT")


def test_retry_after_as_an_http_date_is_honoured() -> None:
    from datetime import UTC, datetime

    now = datetime(2026, 11, 27, 9, 0, 0, tzinfo=UTC)
    answers = [
        httpx.Response(429, headers={"Retry-After": "Fri, 27 Nov 2026 09:00:05 GMT"}),
        httpx.Response(200, json={"value": []}),
        httpx.Response(201, json={"id": "app-1"}),
    ]
    slept: list[float] = []
    client = GraphCatalogClient(
        httpx.Client(transport=httpx.MockTransport(lambda request: answers.pop(0))),
        "https://graph.microsoft.com",
        "eyJ-secret-token",
        sleep=slept.append,
        clock=lambda: now,
        retry_budget_seconds=30,
    )
    package = PackageContent("tap_X", DEMO_APP_ID, "1.0.0", demo_package())
    [result] = deploy_packages(client, {"tap_X": package})
    assert (result.status, result.catalog_app_id, slept) == ("published", "app-1", [5.0])
    assert "eyJ-secret-token" not in repr(client)


def test_event_payloads_are_json(ready: World) -> None:
    deploy(ready)
    with ready.runtime.engine.connect() as connection:
        for payload in connection.execute(select(events.c.payload)).scalars():
            json.loads(payload)
