"""The demo portal's backend: its broker API client, issued states and result verification.

It calls the broker's API with the provider's API key (never shown in the browser or in
logs), remembers the ``state`` it issued for each link and verifies ``form_post`` result
JWTs against the broker's JWKS.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt

from sandbox.teams_demo import demo_package

DEMO_EXTERNAL_ID = "demo-contoso"
DEMO_NAME = "Contoso (demo)"
RESULT_JWT_TYP = "ctt-result+jwt"
# A portal restart forgets issued states; a cap keeps a stuck browser loop from growing memory.
MAX_PENDING_STATES = 1000
STATE_TTL_SECONDS = 3600


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
