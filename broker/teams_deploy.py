"""Deploying a provider's Teams apps to an enterprise's Teams app catalog (DEPLOY_TEAMS_APPS).

Runs inside the admin's round trip, right after the sign-in was verified, with
the *delegated* access token MSAL just redeemed: Graph's catalog calls refuse
application permissions. The token lives in this call's frame only; it is
never stored, logged, or put in the result.

For each chosen package, through the same routed HTTP client as the login host:

1. ``GET {graph}/v1.0/appCatalogs/teamsApps?$filter=externalId eq '{manifest id}'
   &$expand=appDefinitions`` finds the app and its published version;
2. absent: ``POST {graph}/v1.0/appCatalogs/teamsApps`` (the zip) publishes it;
   an older version: ``POST .../teamsApps/{id}/appDefinitions`` updates it;
   the same (or a newer) version: nothing is sent.

Graph's 429 ``Retry-After`` is honoured within ``CTT_GRAPH_RETRY_BUDGET_SECONDS``
for the whole deployment (an injected sleep). Every app ends ``published``,
``updated``, ``unchanged`` or ``failed`` (with Graph's error code). The
per-app results travel in the outcome; :mod:`broker.lifecycle` writes the
enterprise's catalog state and the ``teamsApps.deployed`` event in the
outcome's own transaction, so a deployment has exactly one event set.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal

import httpx
from sqlalchemy import select

from broker import errors
from broker.db import action_items
from broker.id_tokens import GLOBAL_ADMIN_ROLE_ID, IdTokenClaims
from broker.lifecycle import FinishedItem, Outcome
from broker.runtime import Runtime
from broker.teams_apps import PackageContent, load_contents
from broker.teams_packages import version_key

log = logging.getLogger("ctt_broker.teams_deploy")

TEAMS_ADMIN_ROLE_ID = "69091246-20e8-4a56-aa4d-066075b2a7a8"
"""Directory role template id of Teams Administrator (Entra built-in roles reference)."""
DEPLOY_ROLES = frozenset({GLOBAL_ADMIN_ROLE_ID, TEAMS_ADMIN_ROLE_ID})
DEFAULT_RETRY_AFTER = 2.0
CATALOG = "/v1.0/appCatalogs/teamsApps"

AppStatus = Literal["published", "updated", "unchanged", "failed"]


@dataclass(frozen=True)
class AppDeployment:
    """What one deployment did with one app."""

    manifest_id: str
    package_id: str | None
    status: AppStatus
    version: str | None
    catalog_app_id: str | None = None
    error_code: str | None = None
    graph_error_code: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The ``TeamsAppDeployment`` schema."""
        return {
            "manifestId": self.manifest_id,
            "packageId": self.package_id,
            "status": self.status,
            "version": self.version,
            "catalogAppId": self.catalog_app_id,
            "errorCode": self.error_code,
            "graphErrorCode": self.graph_error_code,
        }


@dataclass(frozen=True)
class CatalogApp:
    """An app found in the tenant's catalog."""

    app_id: str
    version: str | None


class GraphFailure(Exception):
    """A catalog call that did not succeed: our code and Graph's own, if it sent one."""

    def __init__(self, error_code: str, graph_code: str | None, detail: str) -> None:
        super().__init__(detail)
        self.error_code = error_code
        self.graph_code = graph_code


class GraphCatalogClient:
    """The three catalog calls for one tenant, with one delegated token."""

    def __init__(
        self,
        http: httpx.Client,
        graph_host: str,
        access_token: str,
        *,
        sleep: Callable[[float], None],
        clock: Callable[[], datetime],
        retry_budget_seconds: float,
    ) -> None:
        self._http = http
        self._base = graph_host.rstrip("/")
        self._headers = {"Authorization": f"Bearer {access_token}"}
        self._sleep = sleep
        self._clock = clock
        self._budget = retry_budget_seconds
        self.waited = 0.0

    def __repr__(self) -> str:
        return f"GraphCatalogClient(graph={self._base!r}, token=<hidden>)"

    def find(self, external_id: str) -> CatalogApp | None:
        """The catalog app whose ``externalId`` is the manifest id, if any."""
        response = self._send(
            "GET",
            CATALOG,
            params={"$filter": f"externalId eq '{external_id}'", "$expand": "appDefinitions"},
        )
        apps = _json(response).get("value")
        if not isinstance(apps, list) or not apps or not isinstance(apps[0], dict):
            return None
        app = apps[0]
        versions: list[str] = [
            str(d["version"])
            for d in app.get("appDefinitions") or []
            if isinstance(d, dict) and isinstance(d.get("version"), str)
        ]
        newest = max(versions, key=version_key) if versions else None
        return CatalogApp(app_id=str(app.get("id")), version=newest)

    def publish(self, content: bytes) -> str:
        """Publish a new app to the organisation's catalog; returns Graph's app id."""
        response = self._send("POST", CATALOG, content=content)
        return str(_json(response).get("id", ""))

    def update(self, app_id: str, content: bytes) -> None:
        """Publish a newer definition of an app already in the catalog."""
        self._send("POST", f"{CATALOG}/{app_id}/appDefinitions", content=content)

    def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        content: bytes | None = None,
    ) -> httpx.Response:
        headers = dict(self._headers)
        if content is not None:
            headers["Content-Type"] = "application/zip"
        while True:
            try:
                response = self._http.request(
                    method, self._base + path, params=params, content=content, headers=headers
                )
            except httpx.TimeoutException:
                raise GraphFailure(
                    errors.MicrosoftTimeout.code, None, "Graph did not answer in time"
                ) from None
            except httpx.HTTPError as exc:  # refused, reset, unreadable: Graph is unavailable
                raise GraphFailure(
                    errors.MicrosoftUnavailable.code,
                    None,
                    f"Graph unreachable ({type(exc).__name__})",
                ) from None
            if response.status_code == 429:
                wait = _retry_after(response.headers.get("retry-after"), self._clock())
                if self.waited + wait > self._budget:
                    raise GraphFailure(
                        errors.TeamsAppDeployFailed.code,
                        _graph_code(response) or "TooManyRequests",
                        "Graph kept throttling beyond the retry budget",
                    )
                self.waited += wait
                self._sleep(wait)
                continue
            if response.status_code >= 500:
                raise GraphFailure(
                    errors.MicrosoftUnavailable.code,
                    _graph_code(response),
                    f"Graph answered HTTP {response.status_code}",
                )
            if response.status_code >= 400:
                raise GraphFailure(
                    errors.TeamsAppDeployFailed.code,
                    _graph_code(response) or str(response.status_code),
                    f"Graph refused with HTTP {response.status_code}",
                )
            return response


def deploy_packages(
    client: GraphCatalogClient, packages: Mapping[str, PackageContent | None]
) -> list[AppDeployment]:
    """Publish, update or leave alone each package; one failure does not stop the others."""
    results: list[AppDeployment] = []
    for package_id, package in packages.items():
        if package is None:  # deleted since the link was issued
            results.append(
                AppDeployment(
                    manifest_id="",
                    package_id=package_id,
                    status="failed",
                    version=None,
                    error_code=errors.TeamsAppPackageNotFound.code,
                )
            )
            continue
        results.append(_deploy_one(client, package))
    return results


def _deploy_one(client: GraphCatalogClient, package: PackageContent) -> AppDeployment:
    facts = {"manifest_id": package.manifest_id, "package_id": package.package_id}
    try:
        found = client.find(package.manifest_id)
        if found is None:
            app_id = client.publish(package.content)
            return AppDeployment(
                **facts, status="published", version=package.version, catalog_app_id=app_id
            )
        if found.version is None or version_key(found.version) < version_key(package.version):
            client.update(found.app_id, package.content)
            return AppDeployment(
                **facts, status="updated", version=package.version, catalog_app_id=found.app_id
            )
        if version_key(found.version) == version_key(package.version):
            return AppDeployment(
                **facts, status="unchanged", version=found.version, catalog_app_id=found.app_id
            )
        # The catalog holds a newer version than the package: never downgrade.
        return AppDeployment(
            **facts,
            status="failed",
            version=found.version,
            catalog_app_id=found.app_id,
            error_code=errors.TeamsAppDeployFailed.code,
            graph_error_code="CatalogVersionNewer",
        )
    except GraphFailure as failure:
        log.info("deploying %s failed: %s", package.manifest_id, failure)
        return AppDeployment(
            **facts,
            status="failed",
            version=package.version,
            error_code=failure.error_code,
            graph_error_code=failure.graph_code,
        )


def deploy_teams_apps(
    runtime: Runtime,
    item: FinishedItem,
    claims: IdTokenClaims,
    msal_result: Mapping[str, Any],
) -> Outcome:
    """DEPLOY_TEAMS_APPS after a verified sign-in: the outcome to record for ``item``.

    Raises :class:`errors.NotTeamsAdmin` when the account holds neither role.
    """
    if not DEPLOY_ROLES & set(claims.roles_wids):
        raise errors.NotTeamsAdmin(
            "the account is neither a Global Administrator nor a Teams Administrator"
        )
    token = msal_result.get("access_token")
    if not isinstance(token, str) or not token:
        raise errors.MicrosoftError("Microsoft returned no access token for the catalog")
    client = GraphCatalogClient(
        runtime.microsoft.http_client,
        runtime.settings.graph_host,
        token,
        sleep=runtime.microsoft.sleep,
        clock=runtime.now,
        retry_budget_seconds=runtime.settings.graph_retry_budget_seconds,
    )
    del token
    deployments = deploy_packages(
        client, load_contents(runtime, item.provider_id, _chosen(runtime, item))
    )
    failed = [d for d in deployments if d.status == "failed"]
    error = (
        errors.TeamsAppDeployFailed(f"{len(failed)} of {len(deployments)} Teams apps failed")
        if failed
        else None
    )
    outcome = Outcome(
        status="failed" if failed else "completed",
        error=error,
        tenant_id=claims.tenant_id,
        payload={"teamsApps": {"apps": [d.as_dict() for d in deployments]}},
    )
    return outcome


def _chosen(runtime: Runtime, item: FinishedItem) -> tuple[str, ...]:
    with runtime.engine.connect() as connection:
        stored = connection.execute(
            select(action_items.c.teams_app_package_ids).where(
                action_items.c.id == item.action_item_id
            )
        ).scalar_one()
    chosen = json.loads(stored) if stored else []
    return tuple(str(package_id) for package_id in chosen)


def _retry_after(value: str | None, now: datetime) -> float:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date)."""
    if value is None:
        return DEFAULT_RETRY_AFTER
    value = value.strip()
    if value.isdigit():
        return float(int(value))
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return DEFAULT_RETRY_AFTER
    if moment.tzinfo is None:
        return DEFAULT_RETRY_AFTER
    return max(0.0, (moment - now).total_seconds())


def _graph_code(response: httpx.Response) -> str | None:
    """Graph's ``error.code``, kept short and printable (never its whole message)."""
    try:
        body = response.json()
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    if not isinstance(code, str):
        return None
    return "".join(ch for ch in code[:64] if ch.isalnum() or ch in "._-") or None


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        raise GraphFailure(
            errors.TeamsAppDeployFailed.code, None, "Graph's answer is not JSON"
        ) from None
    return body if isinstance(body, dict) else {}
