"""Microsoft Graph's Teams app catalog (``/v1.0/appCatalogs/teamsApps``), per tenant.

Three calls, answered the way Graph documents them:

* ``GET /v1.0/appCatalogs/teamsApps?$filter=externalId eq '{id}'&$expand=appDefinitions``
* ``POST /v1.0/appCatalogs/teamsApps`` with the app package as ``application/zip``
  (publish to the organisation's catalog; ``distributionMethod`` is ``organization``)
* ``POST /v1.0/appCatalogs/teamsApps/{id}/appDefinitions`` with a newer package (update)

The bearer token must be one this emulator issued: signed with its keys,
``aud`` Graph, not expired, and *delegated* (Graph refuses application
permissions here). ``scp`` must hold ``AppCatalog.ReadWrite.All`` or
``AppCatalog.Submit`` (reading also takes ``AppCatalog.Read.All``). Writing to
the catalog without review takes a Teams Administrator or Global Administrator
(``wids``): "Only Teams Service admins or a higher privileged role can call this
API". Errors use Graph's shape ``{"error": {"code", "message", "innerError"}}``.

Faults for tests and the sandbox: the next N calls fail with a status (403,
409, 429 with ``Retry-After``, 5xx), or every call is delayed (timeouts).
"""

from __future__ import annotations

import io
import json
import re
import threading
import uuid
import zipfile
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import jwt

from emulator.config import GLOBAL_ADMIN_ROLE_ID, GRAPH_APP_ID, GRAPH_RESOURCE, TEAMS_ADMIN_ROLE_ID

WRITE_SCOPES = frozenset({"AppCatalog.ReadWrite.All", "AppCatalog.Submit"})
READ_SCOPES = WRITE_SCOPES | {"AppCatalog.Read.All"}
ADMIN_ROLES = frozenset({GLOBAL_ADMIN_ROLE_ID, TEAMS_ADMIN_ROLE_ID})
_FILTER = re.compile(r"^\s*(externalId|id|distributionMethod)\s+eq\s+'([^']{0,200})'\s*$")
_SEMVER_CORE = re.compile(r"^(\d+)\.(\d+)\.(\d+)")


@dataclass(frozen=True)
class GraphReply:
    """What the HTTP layer sends back."""

    status: int
    body: dict[str, Any] | None
    headers: Mapping[str, str] = field(default_factory=dict)


class GraphError(Exception):
    """A Graph error answer."""

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})

    def reply(self, now: float) -> GraphReply:
        """Graph's error body, with the ``innerError`` fields it always adds."""
        request_id = str(uuid.uuid4())
        return GraphReply(
            self.status,
            {
                "error": {
                    "code": self.code,
                    "message": self.message,
                    "innerError": {
                        "date": datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                        "request-id": request_id,
                        "client-request-id": request_id,
                    },
                }
            },
            {"request-id": request_id, **self.headers},
        )


@dataclass(frozen=True)
class GraphFault:
    """One injected failure."""

    status: int
    code: str
    retry_after: int | None = None


@dataclass
class _Definition:
    id: str
    teams_app_id: str
    version: str
    display_name: str
    short_description: str
    publishing_state: str
    last_modified: float


@dataclass
class _App:
    id: str
    external_id: str
    display_name: str
    definitions: list[_Definition] = field(default_factory=list)


_FAULT_CODES = {
    403: "Forbidden",
    409: "Conflict",
    429: "TooManyRequests",
    500: "InternalServerError",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "GatewayTimeout",
}


class GraphCatalog:
    """Every tenant's Teams app catalog. Thread-safe."""

    def __init__(
        self,
        jwks: Callable[[str], Mapping[str, object]],
        now: Callable[[], float],
        known_tenants: Callable[[], tuple[str, ...]],
    ) -> None:
        self._jwks = jwks
        self._now = now
        self._known_tenants = known_tenants
        self._lock = threading.Lock()
        self._apps: dict[str, dict[str, _App]] = {}
        self._faults: deque[GraphFault] = deque()
        self._delay = 0.0
        # The names of recent calls, for tests; bounded so a long sandbox run does not grow.
        self.calls: deque[str] = deque(maxlen=1000)

    # -- control ------------------------------------------------------------------

    def fail_next(
        self, count: int, status: int, *, code: str | None = None, retry_after: int | None = None
    ) -> None:
        """Make the next ``count`` catalog calls answer ``status`` (403, 409, 429, 5xx)."""
        if count < 0 or status not in _FAULT_CODES:
            raise ValueError(f"status must be one of {sorted(_FAULT_CODES)}")
        with self._lock:
            for _ in range(count):
                self._faults.append(GraphFault(status, code or _FAULT_CODES[status], retry_after))

    def set_delay(self, seconds: float) -> None:
        """Delay every catalog answer by ``seconds`` (0 turns it off): client timeouts."""
        if seconds < 0:
            raise ValueError("delay must be >= 0")
        with self._lock:
            self._delay = seconds

    @property
    def delay_seconds(self) -> float:
        """The configured delay."""
        with self._lock:
            return self._delay

    def apps(self, tenant_id: str) -> list[dict[str, Any]]:
        """The tenant's catalog, apps with their definitions (inspection for tests and pages)."""
        with self._lock:
            return [_app_json(app, expand=True) for app in self._apps.get(tenant_id, {}).values()]

    # -- the three calls ------------------------------------------------------------

    def list_apps(self, authorization: str | None, query: Mapping[str, str]) -> GraphReply:
        """``GET /v1.0/appCatalogs/teamsApps``."""
        return self._run("list", authorization, READ_SCOPES, False, lambda c: self._list(c, query))

    def publish(
        self, authorization: str | None, content: bytes, query: Mapping[str, str]
    ) -> GraphReply:
        """``POST /v1.0/appCatalogs/teamsApps`` (``?requiresReview=true`` submits for review)."""
        review = query.get("requiresReview", "false").lower() == "true"
        return self._run(
            "publish",
            authorization,
            WRITE_SCOPES,
            not review,
            lambda c: self._publish(c, content, review),
        )

    def update(self, authorization: str | None, app_id: str, content: bytes) -> GraphReply:
        """``POST /v1.0/appCatalogs/teamsApps/{id}/appDefinitions``."""
        return self._run(
            "update", authorization, WRITE_SCOPES, True, lambda c: self._update(c, app_id, content)
        )

    # -- plumbing -------------------------------------------------------------------

    def _run(
        self,
        name: str,
        authorization: str | None,
        scopes: frozenset[str],
        needs_admin: bool,
        action: Callable[[Mapping[str, Any]], GraphReply],
    ) -> GraphReply:
        try:
            with self._lock:
                self.calls.append(name)
                if self._faults:
                    fault = self._faults.popleft()
                    headers = (
                        {"Retry-After": str(fault.retry_after)}
                        if fault.retry_after is not None
                        else {}
                    )
                    raise GraphError(fault.status, fault.code, "Injected fault.", headers)
            claims = self._check_token(authorization, scopes, needs_admin)
            with self._lock:
                return action(claims)
        except GraphError as err:
            return err.reply(self._now())

    def _check_token(
        self, authorization: str | None, scopes: frozenset[str], needs_admin: bool
    ) -> Mapping[str, Any]:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise GraphError(401, "InvalidAuthenticationToken", "Access token is empty.")
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
            tenant_id = str(unverified.get("tid", ""))
            if tenant_id not in self._known_tenants():
                raise GraphError(
                    401, "InvalidAuthenticationToken", "Access token validation failure."
                )
            keys = jwt.PyJWKSet.from_dict(dict(self._jwks(tenant_id)))
            kid = jwt.get_unverified_header(token).get("kid")
            key = next((k for k in keys.keys if k.key_id == kid), None)
            if key is None:
                raise GraphError(
                    401, "InvalidAuthenticationToken", "Access token validation failure."
                )
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=["RS256"],
                audience=[GRAPH_RESOURCE, GRAPH_APP_ID],
                issuer=f"https://sts.windows.net/{tenant_id}/",
                # Lifetime is checked below against the emulator's own (injectable) clock.
                options={
                    "require": ["exp", "iat", "tid"],
                    "verify_exp": False,
                    "verify_iat": False,
                },
            )
        except jwt.InvalidAudienceError:
            raise GraphError(
                401,
                "InvalidAuthenticationToken",
                "Access token validation failure. Invalid audience.",
            ) from None
        except jwt.PyJWTError:
            raise GraphError(
                401, "InvalidAuthenticationToken", "Access token validation failure."
            ) from None
        if not isinstance(claims["exp"], int) or claims["exp"] <= self._now():
            raise GraphError(
                401,
                "InvalidAuthenticationToken",
                "Lifetime validation failed, the token is expired.",
            )
        if claims.get("idtyp") == "app" or "scp" not in claims:
            raise GraphError(
                403,
                "Forbidden",
                "Application permissions are not supported for this API; sign in a user.",
            )
        granted = set(str(claims.get("scp", "")).split())
        if not granted & scopes:
            raise GraphError(
                403,
                "Forbidden",
                "Missing scope permissions on the request. API requires one of "
                f"'{', '.join(sorted(scopes))}'.",
            )
        wids = claims.get("wids") if isinstance(claims.get("wids"), list) else []
        if needs_admin and not ADMIN_ROLES & set(wids or []):
            raise GraphError(
                403,
                "Forbidden",
                "Only Teams Service admins or a higher privileged role can call this API.",
            )
        return claims

    def _list(self, claims: Mapping[str, Any], query: Mapping[str, str]) -> GraphReply:
        catalog = self._apps.get(str(claims["tid"]), {})
        apps = list(catalog.values())
        raw_filter = query.get("$filter")
        if raw_filter:
            match = _FILTER.match(raw_filter)
            if match is None:
                raise GraphError(400, "BadRequest", f"Invalid filter clause: {raw_filter[:100]}")
            prop, value = match.groups()
            if prop == "distributionMethod":
                apps = apps if value == "organization" else []
            else:
                apps = [
                    a for a in apps if (a.external_id if prop == "externalId" else a.id) == value
                ]
        expand = query.get("$expand")
        if expand not in (None, "appDefinitions"):
            raise GraphError(400, "BadRequest", f"Could not find a property named '{expand}'.")
        context = "https://graph.microsoft.com/v1.0/$metadata#appCatalogs/teamsApps"
        return GraphReply(
            200,
            {
                "@odata.context": context + ("(appDefinitions())" if expand else ""),
                "value": [_app_json(a, expand=expand is not None) for a in apps],
            },
        )

    def _publish(self, claims: Mapping[str, Any], content: bytes, review: bool) -> GraphReply:
        manifest = _read_package(content)
        tenant = self._apps.setdefault(str(claims["tid"]), {})
        if any(a.external_id == manifest["id"] for a in tenant.values()):
            raise GraphError(
                409, "Conflict", "App with same id already exists in the tenant app catalog."
            )
        app = _App(id=str(uuid.uuid4()), external_id=manifest["id"], display_name=manifest["name"])
        app.definitions.append(
            self._definition(app, manifest, "submitted" if review else "published")
        )
        tenant[app.id] = app
        return GraphReply(201, _app_json(app, expand=False))

    def _update(self, claims: Mapping[str, Any], app_id: str, content: bytes) -> GraphReply:
        app = self._apps.get(str(claims["tid"]), {}).get(app_id)
        if app is None:
            raise GraphError(404, "NotFound", f"App with id {app_id[:64]} was not found.")
        manifest = _read_package(content)
        if manifest["id"] != app.external_id:
            raise GraphError(
                400, "BadRequest", "The manifest id does not match the app's externalId."
            )
        current = app.definitions[-1].version
        if _version_core(manifest["version"]) <= _version_core(current):
            raise GraphError(
                409, "Conflict", f"App version must be greater than the current version {current}."
            )
        definition = self._definition(app, manifest, "published")
        app.definitions = [definition]
        app.display_name = manifest["name"]
        return GraphReply(201, _definition_json(definition))

    def _definition(self, app: _App, manifest: Mapping[str, str], state: str) -> _Definition:
        return _Definition(
            id=str(uuid.uuid4()),
            teams_app_id=app.id,
            version=manifest["version"],
            display_name=manifest["name"],
            short_description=manifest["short_description"],
            publishing_state=state,
            last_modified=self._now(),
        )


def _read_package(content: bytes) -> dict[str, str]:
    """The few manifest facts the catalog keeps; a BadRequest for anything unreadable."""
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            names = set(archive.namelist())
            if "manifest.json" not in names:
                raise GraphError(
                    400, "BadRequest", "manifest.json is missing from the app package."
                )
            info = archive.getinfo("manifest.json")
            if info.file_size > 1024 * 1024:
                raise GraphError(400, "BadRequest", "manifest.json is too large.")
            manifest = json.loads(archive.read("manifest.json").decode("utf-8-sig"))
    except (zipfile.BadZipFile, ValueError, UnicodeDecodeError, RecursionError, OSError):
        raise GraphError(400, "BadRequest", "The app package is not a valid zip file.") from None
    if not isinstance(manifest, dict):
        raise GraphError(400, "BadRequest", "The manifest is not a JSON object.")
    icons = manifest.get("icons") if isinstance(manifest.get("icons"), dict) else {}
    missing = [p for p in (icons or {}).values() if isinstance(p, str) and p not in names]
    name = manifest.get("name") if isinstance(manifest.get("name"), dict) else {}
    description = (
        manifest.get("description") if isinstance(manifest.get("description"), dict) else {}
    )
    app_id, version = manifest.get("id"), manifest.get("version")
    if not isinstance(app_id, str) or not isinstance(version, str) or missing or not icons:
        raise GraphError(
            400,
            "BadRequest",
            "The app manifest is invalid: id, version and both icons are required.",
        )
    if _SEMVER_CORE.match(version) is None:
        raise GraphError(400, "BadRequest", "The app manifest version is not valid.")
    return {
        "id": app_id.lower(),
        "version": version,
        "name": str((name or {}).get("short", "")),
        "short_description": str((description or {}).get("short", "")),
    }


def _version_core(version: str) -> tuple[int, int, int]:
    match = _SEMVER_CORE.match(version)
    return (int(match[1]), int(match[2]), int(match[3])) if match else (0, 0, 0)


def _definition_json(definition: _Definition) -> dict[str, Any]:
    return {
        "id": definition.id,
        "teamsAppId": definition.teams_app_id,
        "displayName": definition.display_name,
        "version": definition.version,
        "publishingState": definition.publishing_state,
        "shortDescription": definition.short_description,
        "lastModifiedDateTime": datetime.fromtimestamp(definition.last_modified, UTC)
        .isoformat()
        .replace("+00:00", "Z"),
    }


def _app_json(app: _App, *, expand: bool) -> dict[str, Any]:
    shaped: dict[str, Any] = {
        "id": app.id,
        "externalId": app.external_id,
        "displayName": app.display_name,
        "distributionMethod": "organization",
    }
    if expand:
        shaped["appDefinitions"] = [_definition_json(d) for d in app.definitions]
    return shaped
