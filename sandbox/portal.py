"""The demo provider portal: a telecom's customer portal that uses ctt-broker as a provider would.

It is a provider *backend and frontend* in one small Starlette app: it calls the broker's API
with the provider's API key (never shown in the browser or in logs), sends the admin's browser
to the action item URL, and on return checks the ``state`` it issued, redeems the one-time
``resultCode`` (or verifies the ``form_post`` result JWT against the broker's JWKS) and shows
the verified outcome. Tokens are only ever shown as short prefixes.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from html import escape
from typing import Any
from urllib.parse import parse_qsl

import httpx
import jwt
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from broker.webhook_signatures import WebhookVerificationError, verify_webhook
from sandbox.teams_demo import demo_package

log = logging.getLogger("sandbox.portal")

DEMO_EXTERNAL_ID = "demo-contoso"
DEMO_NAME = "Contoso (demo)"
RESULT_JWT_TYP = "ctt-result+jwt"
# A portal restart forgets issued states; a cap keeps a stuck browser loop from growing memory.
MAX_PENDING_STATES = 1000
STATE_TTL_SECONDS = 3600
MAX_FORM_BYTES = 64 * 1024
TOKEN_PREFIX_CHARS = 12


@dataclass(frozen=True)
class PortalConfig:
    """How the portal reaches the broker and who it is."""

    broker_url: str
    """Where the portal's backend calls the broker API (may differ from the public URL)."""
    broker_public_url: str
    """The broker's public base URL: the ``iss`` of form_post result JWTs."""
    provider_id: str
    api_key: str = field(repr=False)
    portal_url: str = "http://127.0.0.1:8090"
    webhook_secret: str | None = field(default=None, repr=False)

    @property
    def callback_url(self) -> str:
        """The callback URL registered for the sandbox provider."""
        return f"{self.portal_url.rstrip('/')}/callback"


@dataclass(frozen=True)
class IssuedState:
    """What the portal remembers about one link it sent a browser to."""

    action_type: str
    result_delivery: str
    issued_at: float


class BrokerError(Exception):
    """The broker answered with a problem (or not at all)."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail


class ResultRejected(Exception):
    """A posted result JWT failed verification."""


class Portal:
    """The portal's state (issued states, cached ids and keys) and its broker client."""

    def __init__(self, config: PortalConfig, client: httpx.AsyncClient | None = None) -> None:
        self.config = config
        self.client = client or httpx.AsyncClient(base_url=config.broker_url, timeout=20)
        self.states: OrderedDict[str, IssuedState] = OrderedDict()
        self.enterprise_id: str | None = None
        self.jwks: dict[str, Any] = {}
        self.webhooks: deque[dict[str, Any]] = deque(maxlen=50)

    # -- broker API -----------------------------------------------------------------------

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """One broker API call with the API key; raises :class:`BrokerError` on a problem."""
        headers = {"Authorization": f"Bearer {self.config.api_key}"}
        headers.update(kwargs.pop("headers_extra", {}))
        try:
            response = await self.client.request(method, path, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            raise BrokerError(503, "BROKER_UNREACHABLE", type(exc).__name__) from None
        if response.status_code >= 400:
            try:
                problem = response.json()
            except ValueError:
                problem = {}
            raise BrokerError(
                response.status_code,
                str(problem.get("code", "HTTP_ERROR")),
                str(problem.get("detail", response.reason_phrase)),
            )
        return response.json()

    async def demo_enterprise(self) -> dict[str, Any]:
        """The demo enterprise, created on first use."""
        if self.enterprise_id is not None:
            enterprise: dict[str, Any] = await self.call(
                "GET", f"/enterprises/{self.enterprise_id}"
            )
            return enterprise
        page = await self.call("GET", "/enterprises", params={"externalId": DEMO_EXTERNAL_ID})
        if not page["items"]:
            try:
                await self.call(
                    "POST", "/enterprises", json={"name": DEMO_NAME, "externalId": DEMO_EXTERNAL_ID}
                )
            except BrokerError as exc:
                # Two first page loads at once: the other one created it; read it below.
                if exc.code != "ENTERPRISE_EXTERNAL_ID_TAKEN":
                    raise
            page = await self.call("GET", "/enterprises", params={"externalId": DEMO_EXTERNAL_ID})
        found: dict[str, Any] = page["items"][0]
        self.enterprise_id = found["enterpriseId"]
        return found

    async def teams_packages(self) -> list[dict[str, Any]]:
        """The provider's Teams app packages; the demo app is uploaded on first use."""
        listing = await self.call("GET", "/teamsApps/packages", params={"limit": 100})
        if not listing["items"]:
            await self.upload_demo_version("1.0.0")
            listing = await self.call("GET", "/teamsApps/packages", params={"limit": 100})
        items: list[dict[str, Any]] = listing["items"]
        return items

    async def upload_demo_version(self, version: str) -> dict[str, Any]:
        """Upload the sandbox's demo Teams app at ``version`` (the zip is generated)."""
        try:
            uploaded: dict[str, Any] = await self.call(
                "POST",
                "/teamsApps/packages",
                content=demo_package(version),
                headers_extra={"Content-Type": "application/zip"},
            )
        except BrokerError as exc:
            if exc.code != "TEAMS_APP_PACKAGE_DUPLICATE":  # two first loads at once
                raise
            return {}
        return uploaded

    async def action_types(self) -> list[dict[str, Any]]:
        """The broker's action catalog."""
        listing = await self.call("GET", "/actionTypes")
        items: list[dict[str, Any]] = listing["items"]
        return items

    async def verify_result_jwt(self, token: str) -> dict[str, Any]:
        """Verify a form_post result JWT: ES256, a published key, typ, iss, aud and exp."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise ResultRejected(f"not a JWT ({type(exc).__name__})") from None
        if header.get("alg") != "ES256":
            raise ResultRejected("algorithm is not ES256")
        if header.get("typ") != RESULT_JWT_TYP:
            raise ResultRejected(f"typ is not {RESULT_JWT_TYP}")
        kid = str(header.get("kid", ""))
        if kid not in self.jwks:
            # A rotated key: refresh once, then give up.
            await self._refresh_jwks()
        if kid not in self.jwks:
            raise ResultRejected("signed with a key the broker does not publish")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self.jwks[kid],
                algorithms=["ES256"],
                audience=self.config.provider_id,
                issuer=self.config.broker_public_url,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            raise ResultRejected(f"verification failed: {exc}") from None
        result = claims.get("result")
        if not isinstance(result, dict):
            raise ResultRejected("no result claim")
        return result

    async def _refresh_jwks(self) -> None:
        try:
            response = await self.client.get("/.well-known/jwks.json")
            response.raise_for_status()
            document = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise ResultRejected(f"cannot fetch the broker's JWKS ({type(exc).__name__})") from None
        keys: dict[str, Any] = {}
        for jwk in document.get("keys", []):
            if jwk.get("kty") == "EC" and jwk.get("crv") == "P-256" and jwk.get("kid"):
                keys[jwk["kid"]] = jwt.PyJWK(jwk, algorithm="ES256").key
        self.jwks = keys

    # -- states ---------------------------------------------------------------------------

    def issue_state(self, action_type: str, result_delivery: str) -> str:
        """A fresh random state, remembered until the browser returns with it."""
        now = time.monotonic()
        while self.states and (
            len(self.states) >= MAX_PENDING_STATES
            or next(iter(self.states.values())).issued_at < now - STATE_TTL_SECONDS
        ):
            self.states.popitem(last=False)
        state = secrets.token_urlsafe(24)
        self.states[state] = IssuedState(action_type, result_delivery, now)
        return state

    def take_state(self, state: str | None) -> IssuedState | None:
        """The issued state, once; None when unknown, replayed or expired."""
        if not state:
            return None
        issued = self.states.pop(state, None)
        if issued is None or issued.issued_at < time.monotonic() - STATE_TTL_SECONDS:
            return None
        return issued


# -- HTML ---------------------------------------------------------------------------------

STYLE = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;background:#f4f6fa;
color:#1d2433}
header{background:#17365d;color:#fff;padding:14px 28px}header b{font-size:18px}
header span{opacity:.75;margin-left:10px}
main{max-width:920px;margin:24px auto;padding:0 20px}
section{background:#fff;border:1px solid #dde3ec;border-radius:8px;padding:16px 20px;
margin-bottom:18px}
h1{font-size:21px;margin:0 0 12px}h2{font-size:16px;margin:0 0 10px}
table{border-collapse:collapse;width:100%}td{overflow-wrap:anywhere}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid #edf0f5;vertical-align:top}
th{font-weight:600;color:#4a5568;width:auto}
code{font:13px ui-monospace,SFMono-Regular,Menlo,monospace;background:#f1f3f7;padding:1px 4px;
border-radius:3px}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:13px;background:#e2e8f0}
.ok{background:#d5f5e3;color:#145a32}.bad{background:#fadbd8;color:#7b241c}
.wait{background:#fdebd0;color:#7e5109}
.warn{background:#fff4e5;border-color:#f5b041}.error{background:#fdedec;border-color:#e6b0aa}
.actions button{display:block;width:100%;text-align:left;margin:6px 0;padding:9px 12px;
border:1px solid #9fb3c8;border-radius:6px;background:#fff;font:inherit;cursor:pointer}
.actions button:hover:not([disabled]){background:#eaf2fb}
.actions button[disabled]{color:#8a94a6;cursor:not-allowed;background:#f7f8fa}
.actions small{color:#5a6578}
.note{color:#5a6578;font-size:13px}
a{color:#1f5fa6}
"""

_GOOD = {"registered", "completed", "granted"}
_BAD = {"failed", "notRegistered", "expired", "revoked"}
_WAIT = {"pending", "opened", "notRequested", "created"}


def _badge(value: Any) -> str:
    text = "—" if value is None else str(value)
    kind = "ok" if text in _GOOD else "bad" if text in _BAD else "wait" if text in _WAIT else ""
    return f'<span class="badge {kind}">{escape(text)}</span>'


def _code(value: Any) -> str:
    return "—" if value in (None, "") else f"<code>{escape(str(value))}</code>"


def _prefix(token: Any) -> str:
    """Only the first characters of a token: enough to recognise it, useless to an attacker."""
    if not isinstance(token, str) or not token:
        return "—"
    return f"<code>{escape(token[:TOKEN_PREFIX_CHARS])}…</code> ({len(token)} characters)"


def _table(rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{escape(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _page(title: str, body: str, status_code: int = 200) -> HTMLResponse:
    document = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)} · Northwind Telecom</title>"
        '<link rel="stylesheet" href="/static/portal.css"></head><body>'
        "<header><b>Northwind Telecom</b><span>Teams Phone customer portal (ctt-broker sandbox)"
        f"</span></header><main>{body}</main></body></html>"
    )
    return HTMLResponse(document, status_code=status_code, headers=_SECURITY_HEADERS)


# The callback page's URL carries a resultCode: no referrer, no caching, no framing.
_SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
}


def _enterprise_section(enterprise: dict[str, Any]) -> str:
    registration = enterprise.get("registration") or {}
    overview = _table(
        [
            ("Enterprise", escape(str(enterprise.get("name")))),
            ("Enterprise id", _code(enterprise.get("enterpriseId"))),
            ("Your customer id", _code(enterprise.get("externalId"))),
            ("Registration", _badge(registration.get("status"))),
            ("Microsoft tenant", _code(registration.get("tenantId"))),
            ("Registered at", escape(str(registration.get("registeredAt") or "—"))),
        ]
    )
    consent_rows = "".join(
        "<tr>"
        f"<td>{escape(str(c.get('consentType')))}</td>"
        f"<td>{_code(c.get('actionType'))}</td>"
        f"<td>{'yes' if c.get('mandatory') else 'no'}</td>"
        f"<td>{_badge(c.get('status'))}</td>"
        f"<td>{_code(c.get('errorCode'))}</td>"
        f"<td>{escape(str(c.get('grantedAt') or c.get('updatedAt') or '—'))}</td>"
        "</tr>"
        for c in enterprise.get("consents", [])
    )
    consents = (
        "<table><tr><th>Consent</th><th>Action type</th><th>Mandatory</th><th>Status</th>"
        f"<th>Error</th><th>Updated</th></tr>{consent_rows}</table>"
    )
    return (
        f"<section><h2>Your enterprise</h2>{overview}</section>"
        f"<section><h2>Microsoft consents</h2>{consents}</section>"
    )


def _teams_section(
    packages: list[dict[str, Any]], enterprise: dict[str, Any], registered: bool
) -> str:
    package_rows = "".join(
        f"<tr><td>{escape(str(p.get('name')))}</td><td>{_code(p.get('manifestId'))}</td>"
        f"<td>{escape(str(p.get('version')))}</td><td>{'yes' if p.get('current') else 'no'}</td>"
        f"<td>{_prefix(p.get('sha256'))}</td></tr>"
        for p in packages
    )
    catalog_rows = "".join(
        f"<tr><td>{_code(a.get('manifestId'))}</td><td>{_badge(a.get('status'))}</td>"
        f"<td>{escape(str(a.get('version') or '—'))}</td><td>{_code(a.get('catalogAppId'))}</td>"
        f"<td>{_code(a.get('errorCode'))}</td><td>{escape(str(a.get('updatedAt')))}</td></tr>"
        for a in enterprise.get("teamsApps", [])
    )
    catalog = (
        "<table><tr><th>App (manifest id)</th><th>Last deployment</th><th>Version</th>"
        f"<th>Catalog app id</th><th>Error</th><th>At</th></tr>{catalog_rows}</table>"
        if catalog_rows
        else "<p>Not deployed to this tenant yet.</p>"
    )
    newest = max((str(p.get("version")) for p in packages), default="1.0.0", key=_version_tuple)
    major, minor, _patch = _version_tuple(newest)
    deploy = (
        '<button name="choice" value="DEPLOY_TEAMS_APPS"><b>Deploy Teams apps</b> <small>Sign in '
        "as a Global or Teams Administrator; the broker publishes or updates the apps "
        "below in the tenant's Teams app catalog.</small></button>"
        if registered
        else '<button name="choice" value="DEPLOY_TEAMS_APPS" disabled><b>Deploy Teams apps</b>'
        "<br><small>Needs a registered enterprise: complete REGISTRATION first.</small></button>"
    )
    return (
        '<section class="actions"><h2>Teams apps</h2>'
        "<table><tr><th>App</th><th>Manifest id</th><th>Version</th><th>Current</th>"
        f"<th>SHA-256</th></tr>{package_rows}</table>"
        '<form method="post" action="/teams/bump">'
        f'<button name="version" value="{major}.{minor + 1}.0"><b>Upload version '
        f"{major}.{minor + 1}.0</b> <small>A new version of the demo app (the next deployment "
        "updates it).</small></button></form>"
        f'<form method="post" action="/start">{deploy}</form>'
        f"<h3>In the tenant's Teams app catalog</h3>{catalog}"
        '<p class="note">Demo users: <code>admin@contoso.onmicrosoft.com</code> (Global Admin), '
        "<code>tomas@contoso.onmicrosoft.com</code> (Teams Administrator), "
        "<code>user@contoso.onmicrosoft.com</code> (fails with NOT_TEAMS_ADMIN).</p></section>"
    )


def _version_tuple(version: str) -> tuple[int, int, int]:
    core = version.split("-", 1)[0].split("+", 1)[0].split(".")
    try:
        return int(core[0]), int(core[1]), int(core[2])
    except (IndexError, ValueError):
        return 0, 0, 0


def _actions_section(types: list[dict[str, Any]], registered: bool) -> str:
    buttons = []
    for spec in types:
        action_type = str(spec.get("actionType"))
        if action_type == "DEPLOY_TEAMS_APPS":
            continue  # its own section, with the packages and the catalog state
        label = (
            f"<b>{escape(action_type)}</b> <small>{escape(str(spec.get('description')))}</small>"
        )
        if action_type == "REGISTRATION":
            if registered:
                buttons.append(
                    '<button name="choice" value="REGISTRATION" disabled>'
                    f"{label}<br><small>Already registered.</small></button>"
                    '<button name="choice" value="REGISTRATION+reregister">'
                    "<b>REGISTRATION (re-register)</b> <small>Bind the enterprise again "
                    "(sends <code>reregister: true</code>).</small></button>"
                )
            else:
                buttons.append(f'<button name="choice" value="REGISTRATION">{label}</button>')
        elif not registered:
            buttons.append(
                f'<button name="choice" value="{escape(action_type)}" disabled>{label}<br>'
                "<small>Needs a registered enterprise: complete REGISTRATION first.</small>"
                "</button>"
            )
        else:
            buttons.append(f'<button name="choice" value="{escape(action_type)}">{label}</button>')
    return (
        '<section class="actions"><h2>Connect Microsoft Teams</h2>'
        '<form method="post" action="/start">'
        '<p><label><input type="checkbox" name="resultDelivery" value="form_post"> '
        "Receive the result as a signed JWT posted to the portal (<code>form_post</code>) "
        "instead of a one-time <code>resultCode</code> to redeem</label></p>"
        f"{''.join(buttons)}</form>"
        '<p class="note">Each button asks the broker for a one-time link and sends your browser '
        "there. Demo users at the emulator's account picker: "
        "<code>admin@contoso.onmicrosoft.com</code> (Global Admin), "
        "<code>user@contoso.onmicrosoft.com</code> (not an admin), "
        "<code>decliner@contoso.onmicrosoft.com</code> (cancels), "
        "<code>admin@fabrikam.onmicrosoft.com</code> (another tenant).</p></section>"
    )


def _error_section(title: str, message: str) -> str:
    return f'<section class="error"><h2>{escape(title)}</h2><p>{message}</p></section>'


def _outcome_section(result: dict[str, Any], via: str) -> str:
    rows = [
        ("Status", _badge(result.get("status"))),
        ("Action type", _code(result.get("actionType"))),
        ("Action item", _code(result.get("actionItemId"))),
        ("Error code", _code(result.get("errorCode"))),
        ("What happened", escape(str(result.get("message") or "—"))),
        ("Microsoft tenant", _code(result.get("tenantId"))),
        ("Verified via", escape(via)),
    ]
    if result.get("signedInTenantId"):
        rows.insert(5, ("Signed in with tenant", _code(result.get("signedInTenantId"))))
    body = f"<section><h2>Outcome</h2>{_table(rows)}</section>"
    auth = result.get("authenticationResult")
    if isinstance(auth, dict):
        account = auth.get("account") or {}
        scopes = auth.get("scopes") or []
        body += (
            "<section><h2>Sign-in (MSAL authentication result)</h2>"
            + _table(
                [
                    ("Account", escape(str(account.get("username") or "—"))),
                    ("Name", escape(str(account.get("name") or "—"))),
                    ("Object id", _code(auth.get("uniqueId"))),
                    ("Tenant", _code(auth.get("tenantId"))),
                    ("Scopes", " ".join(_code(s) for s in scopes) or "—"),
                    ("Expires", escape(str(auth.get("expiresOn") or "—"))),
                    ("Token type", escape(str(auth.get("tokenType") or "—"))),
                    ("Access token", _prefix(auth.get("accessToken"))),
                    ("ID token", _prefix(auth.get("idToken"))),
                    (
                        "Refresh token",
                        _prefix(auth.get("refreshToken"))
                        if auth.get("refreshToken")
                        else "not shared with this provider",
                    ),
                ]
            )
            + '<p class="note">Tokens are shown as prefixes only; a real portal keeps them '
            "server-side.</p></section>"
        )
    teams = result.get("teamsApps")
    if isinstance(teams, dict):
        app_rows = "".join(
            f"<tr><td>{_code(a.get('manifestId'))}</td><td>{_badge(a.get('status'))}</td>"
            f"<td>{escape(str(a.get('version') or '—'))}</td>"
            f"<td>{_code(a.get('catalogAppId'))}</td><td>{_code(a.get('errorCode'))}</td>"
            f"<td>{_code(a.get('graphErrorCode'))}</td></tr>"
            for a in teams.get("apps", [])
        )
        body += (
            "<section><h2>Teams apps deployed</h2><table><tr><th>App</th><th>Result</th>"
            "<th>Version</th><th>Catalog app id</th><th>Error</th><th>Graph error</th></tr>"
            f"{app_rows}</table></section>"
        )
    consent = result.get("consent")
    if isinstance(consent, dict):
        body += (
            "<section><h2>Consent</h2>"
            + _table(
                [
                    ("Consent", escape(str(consent.get("consentType")))),
                    ("Status", _badge(consent.get("status"))),
                    (
                        "Roles confirmed",
                        " ".join(_code(r) for r in consent.get("roles", [])) or "—",
                    ),
                    (
                        "Roles required",
                        " ".join(_code(r) for r in consent.get("requiredRoles", [])) or "—",
                    ),
                ]
            )
            + "</section>"
        )
    return body


# -- routes -------------------------------------------------------------------------------


def create_portal_app(config: PortalConfig, client: httpx.AsyncClient | None = None) -> Starlette:
    """The portal's ASGI app; ``client`` defaults to one on ``config.broker_url``."""
    portal = Portal(config, client)

    async def home(request: Request) -> Response:
        try:
            enterprise = await portal.demo_enterprise()
            types = await portal.action_types()
            packages = await portal.teams_packages()
        except BrokerError as exc:
            return _page("Unavailable", _broker_error(exc), 502)
        registered = (enterprise.get("registration") or {}).get("status") == "registered"
        body = (
            f"<h1>Welcome, {escape(str(enterprise.get('name')))}</h1>"
            + _enterprise_section(enterprise)
            + _actions_section(types, registered)
            + _teams_section(packages, enterprise, registered)
        )
        return _page("Your enterprise", body + _webhooks_section(portal.webhooks))

    async def webhook(request: Request) -> Response:
        body = await request.body()
        secret = config.webhook_secret
        try:
            if not secret or len(body) > MAX_FORM_BYTES:
                raise WebhookVerificationError("no secret configured or body too large")
            event = verify_webhook(secret, body, dict(request.headers))
        except WebhookVerificationError as exc:
            portal.webhooks.appendleft({"verified": False, "problem": str(exc)})
            return Response("signature rejected", status_code=400, media_type="text/plain")
        seen = {w.get("eventId") for w in portal.webhooks}
        if event.get("eventId") not in seen:  # retries carry the same webhook-id: keep one
            portal.webhooks.appendleft({"verified": True, **event})
        return Response(status_code=204)

    async def start(request: Request) -> Response:
        form = await _form(request)
        choice = form.get("choice", "")
        action_type, _, flag = choice.partition("+")
        delivery = "form_post" if form.get("resultDelivery") == "form_post" else "redirect"
        state = portal.issue_state(action_type, delivery)
        try:
            enterprise = await portal.demo_enterprise()
            body: dict[str, Any] = {
                "actionType": action_type,
                "enterpriseId": enterprise["enterpriseId"],
                "callbackUrl": config.callback_url,
                "state": state,
                "resultDelivery": delivery,
                "expiresInSeconds": 600,
            }
            if flag == "reregister":
                body["reregister"] = True
            created = await portal.call("POST", "/enterprise/getActionItemUrl", json=body)
        except BrokerError as exc:
            portal.states.pop(state, None)
            status_code = exc.status if 400 <= exc.status < 500 else 502
            return _page("Could not start", _broker_error(exc) + _back(), status_code)
        log.info("sent a browser to %s (%s)", action_type, created.get("actionItemId"))
        # 303: the browser GETs the broker link; the link itself is never logged.
        return RedirectResponse(str(created["url"]), status_code=303, headers=_SECURITY_HEADERS)

    async def callback_get(request: Request) -> Response:
        params = request.query_params
        issued = portal.take_state(params.get("state"))
        sections = _state_check(issued, params.get("actionType"))
        result_code = params.get("resultCode")
        if not result_code:
            sections += _error_section(
                "No result code", "The broker did not send a <code>resultCode</code>."
            )
            return await _result_page(portal, sections, None)
        try:
            result = await portal.call("POST", "/results/redeem", json={"resultCode": result_code})
        except BrokerError as exc:
            return await _result_page(portal, sections + _broker_error(exc), None)
        if params.get("status") and params.get("status") != result.get("status"):
            sections += _error_section(
                "Status mismatch", "The redirect's status differs from the redeemed result."
            )
        sections += _binding_check(result, params.get("state"), config.callback_url)
        sections += _outcome_section(result, "resultCode redeemed by the portal's backend")
        return await _result_page(portal, sections, result)

    async def callback_post(request: Request) -> Response:
        form = await _form(request)
        issued = portal.take_state(form.get("state"))
        token = form.get("result", "")
        try:
            result = await portal.verify_result_jwt(token)
        except ResultRejected as exc:
            sections = _state_check(issued, None) + _error_section(
                "Result rejected", escape(str(exc))
            )
            return await _result_page(portal, sections, None, 400)
        sections = _state_check(issued, str(result.get("actionType")))
        sections += _binding_check(result, form.get("state"), config.callback_url)
        sections += _outcome_section(result, "form_post result JWT (ES256, broker JWKS)")
        return await _result_page(portal, sections, result)

    async def bump(request: Request) -> Response:
        form = await _form(request)
        version = form.get("version", "")
        if _version_tuple(version) == (0, 0, 0):
            return _page("Could not upload", _error_section("Bad version", "") + _back(), 400)
        try:
            await portal.upload_demo_version(version)
        except BrokerError as exc:
            return _page("Could not upload", _broker_error(exc) + _back(), 400)
        return RedirectResponse("/", status_code=303, headers=_SECURITY_HEADERS)

    async def stylesheet(request: Request) -> Response:
        return Response(
            STYLE,
            media_type="text/css",
            headers={"Cache-Control": "max-age=300", "X-Content-Type-Options": "nosniff"},
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await portal.client.aclose()

    app = Starlette(
        routes=[
            Route("/", home, methods=["GET"]),
            Route("/start", start, methods=["POST"]),
            Route("/teams/bump", bump, methods=["POST"]),
            Route("/callback", callback_get, methods=["GET"]),
            Route("/callback", callback_post, methods=["POST"]),
            Route("/webhooks", webhook, methods=["POST"]),
            Route("/static/portal.css", stylesheet, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.portal = portal
    return app


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form (first value per name), capped; no multipart dependency needed."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return {}
    fields: dict[str, str] = {}
    for name, value in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
        fields.setdefault(name, value)
    return fields


def _webhooks_section(received: Iterable[dict[str, Any]]) -> str:
    rows = []
    for item in list(received)[:15]:
        if not item.get("verified"):
            rows.append(
                f"<tr><td>{_badge('rejected')}</td><td colspan=3>{escape(str(item.get('problem')))}"
                "</td></tr>"
            )
            continue
        data = item.get("data") or {}
        rows.append(
            f"<tr><td>{_badge('verified')}</td><td>{_code(item.get('type'))}</td>"
            f"<td>{escape(str(data.get('actionType')))}: {_badge(data.get('status'))} "
            f"{_code(data.get('errorCode')) if data.get('errorCode') else ''}</td>"
            f"<td>{escape(str(item.get('timestamp')))}</td></tr>"
        )
    table = (
        "<table><tr><th>signature</th><th>event</th><th>outcome</th><th>at</th></tr>"
        + "".join(rows)
        + "</table>"
        if rows
        else "<p>None yet. The broker's worker delivers them a few seconds after each outcome.</p>"
    )
    return (
        "<section><h2>Webhooks received</h2><p>Signed to the Standard Webhooks scheme and "
        "verified with the portal's secret; retries are recognised by their id.</p>"
        f"{table}</section>"
    )


def _state_check(issued: IssuedState | None, action_type: str | None) -> str:
    if issued is None:
        return (
            '<section class="warn"><h2>Warning: unexpected state</h2><p>This return carries a '
            "<code>state</code> this portal did not issue, or one already used. A real portal "
            "must not act on it (it may be a forged or replayed callback); the sandbox shows "
            "the broker-verified outcome anyway.</p></section>"
        )
    if action_type and action_type != issued.action_type:
        return (
            '<section class="warn"><h2>Warning: action type mismatch</h2><p>The portal sent '
            f"this browser for {_code(issued.action_type)} but the return names "
            f"{_code(action_type)}.</p></section>"
        )
    return ""


def _binding_check(result: dict[str, Any], returned_state: str | None, callback_url: str) -> str:
    """The result's own ``state`` and ``callbackUrl`` against this session's.

    A customer can replay their own return URL with another customer's result:
    the state on the URL is theirs, the result is not. The broker puts the state
    and callback it was given into the result so that the portal can tell.
    """
    state_ok = returned_state is not None and secrets.compare_digest(
        str(result.get("state") or ""), returned_state
    )
    callback_ok = result.get("callbackUrl") == callback_url
    rows = [
        ("Result state", _code(result.get("state"))),
        ("This session's state", _code(returned_state)),
        ("State matches", "yes" if state_ok else "<strong>NO</strong>"),
        ("Result callback URL", _code(result.get("callbackUrl"))),
        ("Callback URL matches", "yes" if callback_ok else "<strong>NO</strong>"),
    ]
    table = _table(rows)
    if state_ok and callback_ok:
        return f'<section class="binding"><h2>Result bound to this session</h2>{table}</section>'
    return (
        '<section class="error"><h2>Result belongs to another session</h2><p>The result\'s '
        "<code>state</code> or <code>callbackUrl</code> differs from what this browser's "
        "session sent: a real portal must refuse it (a replayed or swapped result).</p>"
        f"{table}</section>"
    )


async def _result_page(
    portal: Portal, sections: str, result: dict[str, Any] | None, status_code: int = 200
) -> Response:
    try:
        enterprise = await portal.demo_enterprise()
        sections += _enterprise_section(enterprise)
    except BrokerError as exc:
        sections += _broker_error(exc)
    title = "Result"
    if result is not None:
        title = f"{result.get('actionType')}: {result.get('status')}"
    return _page(title, f"<h1>{escape(title)}</h1>{sections}{_back()}", status_code)


def _broker_error(exc: BrokerError) -> str:
    return _error_section(
        "The broker refused",
        f"HTTP {exc.status} {_code(exc.code)}: {escape(exc.detail)}",
    )


def _back() -> str:
    return '<p><a href="/">← Back to your enterprise</a></p>'
