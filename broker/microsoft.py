"""Everything that talks to the Microsoft identity platform.

One private factory (:meth:`Microsoft._application`) builds every MSAL
application object, always with the broker's own HTTP client: ``trust_env``
off (proxies and CA bundles come from settings, never from stray environment
variables), a timeout on every call, and in the sandbox a transport that sends
the login host's traffic to the emulator. Tenant discovery documents, which MSAL
fetches for every application object, are remembered for an hour
(:class:`DiscoveryCache`); tokens and error answers never are. The production path differs only by
settings: the login host, the browser URL and the Graph host.

Transient failures (connection errors, timeouts, 5xx, ``temporarily_unavailable``)
are retried: idempotent calls (discovery, JWKS, app-only tokens) a few times with
a short backoff; the code redemption within the flow's deadline, where Microsoft's
``invalid_grant`` on a retry is the outcome (the code may have been spent by the
try whose answer was lost). A :class:`CallLog` counts the requests made.

Protocol legs are named for what they do: :meth:`Microsoft.build_consent_url`
and :meth:`Microsoft.confirm_consent` for admin consent,
:meth:`Microsoft.start_sign_in` and :meth:`Microsoft.complete_sign_in` for the
authorization code flow (PKCE, nonce) that MSAL runs.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar
from urllib.parse import urlencode, urlsplit

import httpx
import jwt
import msal

from broker import errors
from broker.catalog import ActionSpec
from broker.credentials import Credentials
from broker.id_tokens import (
    PERSONAL_ACCOUNT_TENANT_ID,
    IdTokenClaims,
    JwksCache,
    validate_id_token,
)
from broker.ids import is_guid
from broker.metrics import MeteredTransport
from broker.settings import Settings
from broker.tls import trusted_context

# MSAL tries to import the optional msal_extensions package each time an application
# object is built, and Python does not remember a failed import: every try searched
# sys.path again (5% of a launch's CPU). When it is not installed, say so once.
if importlib.util.find_spec("msal_extensions") is None:
    sys.modules.setdefault("msal_extensions", None)  # type: ignore[arg-type]

_AADSTS = re.compile(r"AADSTS(\d+)")
# Entra error codes that have a code of our own; anything else is MICROSOFT_ERROR.
_AADSTS_ERRORS: dict[str, type[errors.BrokerError]] = {
    "65004": errors.ConsentDeclined,  # user declined to consent
    "90094": errors.NotGlobalAdmin,  # admin consent needs an administrator
    "90008": errors.NotGlobalAdmin,
    "70008": errors.InvalidGrant,  # code expired
    "54005": errors.InvalidGrant,  # code already redeemed
    "501481": errors.InvalidGrant,  # PKCE verifier mismatch
    "9002313": errors.InvalidGrant,
}
_OAUTH_ERRORS: dict[str, type[errors.BrokerError]] = {
    "access_denied": errors.ConsentDeclined,
    "consent_required": errors.ConsentDeclined,
    "interaction_required": errors.ConsentDeclined,
    "invalid_grant": errors.InvalidGrant,
    "temporarily_unavailable": errors.MicrosoftUnavailable,
    "server_error": errors.MicrosoftUnavailable,
}
# Before a fresh consent's service principal exists, client credentials fail with these.
_NOT_YET_VISIBLE = {"7000229", "700016", "500011", "7000112"}


def microsoft_error(error: str | None, description: str | None) -> errors.BrokerError:
    """Our error for an OAuth ``error`` and its ``error_description`` from Microsoft.

    The description is Microsoft's text: kept to its AADSTS code, never echoed whole.
    """
    match = _AADSTS.search(description or "")
    aadsts = match.group(1) if match else None
    if aadsts in _AADSTS_ERRORS:
        error_class = _AADSTS_ERRORS[aadsts]
    else:
        error_class = _OAUTH_ERRORS.get(error or "", errors.MicrosoftError)
    where = f" (AADSTS{aadsts})" if aadsts else ""
    safe_error = re.sub(r"[^a-z_]", "", (error or "unknown")[:64])
    return error_class(f"Microsoft answered {safe_error}{where}", aadsts=aadsts)


class LoginHostTransport(httpx.BaseTransport):
    """Sandbox only: send requests for the (https) login and Graph hosts to the emulator."""

    def __init__(
        self, login_host: str, target: str, inner: httpx.BaseTransport, *also: str
    ) -> None:
        self._routed = {(u.scheme, u.hostname) for u in map(urlsplit, (login_host, *also))}
        self._target = urlsplit(target)
        self._inner = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if (url.scheme, url.host) in self._routed:
            request.url = url.copy_with(
                scheme=self._target.scheme, host=self._target.hostname, port=self._target.port
            )
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()


def make_http_client(settings: Settings) -> httpx.Client:
    """The HTTP client for every call to Microsoft.

    It trusts the public CAs (certifi) plus ``CTT_CA_BUNDLE``'s; ``trust_env=False`` keeps
    ``REQUESTS_CA_BUNDLE``, ``SSL_CERT_FILE`` and proxy variables out of it.
    """
    verify = trusted_context(settings.ca_bundle)
    inner: httpx.BaseTransport = httpx.HTTPTransport(retries=1, verify=verify)
    if settings.login_transport_url:
        inner = LoginHostTransport(
            settings.login_host, settings.login_transport_url, inner, settings.graph_host
        )
    return httpx.Client(
        transport=MeteredTransport(inner),
        trust_env=False,
        timeout=settings.microsoft_timeout_seconds,
        follow_redirects=False,
    )


# Pauses between tries of one call: four tries in all, under two seconds of waiting.
RETRY_DELAYS = (0.2, 0.5, 1.0)


@dataclass
class CallLog:
    """How many requests to Microsoft one completion made, retries included."""

    attempts: int = 0


class RetryingJwksClient:
    """GETs for JWKS documents, retried on transport errors and 5xx (they are idempotent)."""

    def __init__(self, http_client: httpx.Client, sleep: Callable[[float], None]) -> None:
        self._http = http_client
        self._sleep = sleep

    def get(self, url: str, *, timeout: float) -> httpx.Response:
        """One JWKS fetch, with up to ``len(RETRY_DELAYS)`` retries."""
        for delay in (*RETRY_DELAYS, None):
            try:
                response = self._http.get(url, timeout=timeout)
            except httpx.TransportError:
                if delay is None:
                    raise
            else:
                if response.status_code < 500 or delay is None:
                    return response
            self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover


# How long a tenant's OpenID configuration is reused; MSAL keeps it a day in a long-lived object.
DISCOVERY_TTL_SECONDS = 3600.0
DISCOVERY_MAX_TENANTS = 1024
_DISCOVERY_SUFFIX = "/.well-known/openid-configuration"
K = TypeVar("K")
V = TypeVar("V")


class Kept(Generic[K, V]):
    """Values kept for ``ttl_seconds`` each, at most ``max_entries`` (the oldest go first)."""

    def __init__(
        self, ttl_seconds: float, max_entries: int, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl = ttl_seconds
        self._max_entries = max_entries
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._values: dict[K, tuple[float, V]] = {}

    def get(self, key: K) -> V | None:
        """The value kept under ``key``, or None when there is none or it is too old."""
        now = self._monotonic()
        with self._lock:
            kept = self._values.get(key)
        return kept[1] if kept is not None and now < kept[0] else None

    def put(self, key: K, value: V) -> None:
        """Keep ``value`` under ``key`` from now on, replacing what was there."""
        until = self._monotonic() + self._ttl
        with self._lock:
            self._values.pop(key, None)
            while len(self._values) >= self._max_entries:
                self._values.pop(next(iter(self._values)))
            self._values[key] = (until, value)


class DiscoveryCache:
    """MSAL's HTTP client: the routed client, with tenant discovery documents remembered.

    MSAL fetches the tenant's OpenID configuration whenever an application object
    is built, and :meth:`Microsoft._application` builds one per call (an MSAL object
    remembers error answers and tokens, which must not outlive the call). The
    document is public, names only endpoints, and changes rarely: a 200 answer is
    reused for ``ttl_seconds``. Anything else (an unknown tenant's 400, a 5xx, a
    transport error) is not kept, and every other request goes straight through.
    """

    def __init__(
        self,
        http_client: httpx.Client,
        *,
        ttl_seconds: float = DISCOVERY_TTL_SECONDS,
        max_entries: int = DISCOVERY_MAX_TENANTS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = http_client
        self._documents: Kept[str, httpx.Response] = Kept(ttl_seconds, max_entries, monotonic)

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        """GET ``url``; a discovery document comes from the cache while it is fresh."""
        if not urlsplit(url).path.endswith(_DISCOVERY_SUFFIX) or kwargs.get("params"):
            return self._http.get(url, **kwargs)
        kept = self._documents.get(url)
        if kept is not None:
            return kept
        response = self._http.get(url, **kwargs)
        if response.status_code == 200:
            response.read()
            self._documents.put(url, response)
        return response

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        """POST ``url`` (token requests): never cached."""
        return self._http.post(url, **kwargs)

    def close(self) -> None:
        """Close the underlying client."""
        self._http.close()


@dataclass(frozen=True)
class SignIn:
    """A completed sign-in: MSAL's result and the ID token claims we verified."""

    result: Mapping[str, Any]
    claims: IdTokenClaims


@dataclass(frozen=True)
class ConsentCheck:
    """What an app-only token says about a consent in a tenant."""

    visible: bool
    tenant_id: str | None
    roles: tuple[str, ...]


# Microsoft's own advice for the codes an app-only token request meets when an
# app registration or its credential is wrong (learn.microsoft.com, "Microsoft
# Entra authentication and authorization error codes"), in short.
AADSTS_FIXES = {
    "7000215": "Invalid client secret: use the secret's Value (not its Secret ID) from "
    "Certificates & secrets, or create a new secret.",
    "7000222": "The client secret has expired: create a new one under Certificates & "
    "secrets and update CTT_APP_CREDENTIALS.",
    "700016": "Application not found in the directory: check clientId, and that "
    "homeTenantId is the tenant the app is registered in.",
    "700027": "The client assertion's signature is invalid: upload the certificate whose "
    "key signs it to the app registration.",
    "90002": "Tenant not found: check homeTenantId (a tenant GUID or a verified domain).",
    "900023": "The tenant is not a valid tenant id or domain: check homeTenantId.",
    "7000229": "The app has no service principal in this tenant: register it there or "
    "have an admin consent to it.",
    "500011": "The resource principal (Microsoft Graph) was not found in the tenant: "
    "check the tenant and CTT_GRAPH_HOST.",
    "1002012": "The scope is not valid for client credentials: it must end in /.default.",
    "50059": "No tenant was named: set homeTenantId for this app.",
}


@dataclass(frozen=True)
class AppCheck:
    """Whether one app registration gets an app-only token in its home tenant."""

    app: str
    client_id: str
    tenant: str | None
    ok: bool
    detail: str
    aadsts: str | None = None
    fix: str | None = None


class Microsoft:
    """The broker's side of the Microsoft identity platform."""

    def __init__(
        self,
        settings: Settings,
        credentials: Credentials,
        http_client: httpx.Client,
        clock: Callable[[], datetime],
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._settings = settings
        self._credentials = credentials
        self._http = http_client
        self._msal_http = DiscoveryCache(http_client)
        self._starters: Kept[tuple[str, str, str], msal.ConfidentialClientApplication] = Kept(
            DISCOVERY_TTL_SECONDS, DISCOVERY_MAX_TENANTS
        )
        self._clock = clock
        self._sleep = sleep
        self.jwks = JwksCache(
            RetryingJwksClient(http_client, sleep),
            clock=clock,
            timeout_seconds=settings.microsoft_timeout_seconds,
        )

    @property
    def http_client(self) -> httpx.Client:
        """The routed client every call to Microsoft uses (Graph calls too)."""
        return self._http

    @property
    def sleep(self) -> Callable[[float], None]:
        """The injected pause used between retries."""
        return self._sleep

    # -- admin consent ---------------------------------------------------------

    def build_consent_url(self, spec: ActionSpec, tenant: str, state: str) -> str:
        """The admin consent URL of ``spec``'s app for ``tenant``, carrying ``state``."""
        query = urlencode(
            {
                "client_id": self._credentials.app(spec.app).client_id,
                "redirect_uri": self._settings.redirect_uri,
                "state": state,
                "scope": f"{self._settings.graph_host}/.default",
            }
        )
        return f"{self._settings.login_browser_url}/{tenant}/v2.0/adminconsent?{query}"

    def confirm_consent(
        self,
        spec: ActionSpec,
        tenant: str,
        attempts: int | None = None,
        log: CallLog | None = None,
    ) -> ConsentCheck:
        """Ask for an app-only token in ``tenant``; retry while the grant propagates.

        The token comes straight from the token endpoint over TLS, so its claims
        are read without a signature check (OIDC core 3.1.3.7 applies the same
        reasoning to ID tokens). A fresh MSAL object per try: MSAL remembers a
        400 answer for a minute, which would hide a grant that just appeared.
        """
        attempts = attempts or self._settings.consent_confirm_attempts
        for attempt in range(attempts):
            check: ConsentCheck = self._retried(lambda: self._client_credentials(spec, tenant), log)
            if check.visible:
                return check
            if attempt + 1 < attempts:
                self._sleep(self._settings.consent_confirm_interval_seconds)
        return ConsentCheck(visible=False, tenant_id=None, roles=())

    def _client_credentials(self, spec: ActionSpec, tenant: str) -> ConsentCheck:
        result = self._call(
            lambda: self._application(spec.app, tenant).acquire_token_for_client(
                scopes=[f"{self._settings.graph_host}/.default"]
            )
        )
        if "access_token" not in result:
            error = microsoft_error(result.get("error"), result.get("error_description"))
            # Only the codes Entra uses for "no service principal yet": a wrong or
            # expired client secret must surface, not look like a slow consent.
            if error.extra.get("aadsts") in _NOT_YET_VISIBLE:
                return ConsentCheck(visible=False, tenant_id=None, roles=())
            raise error
        try:
            claims = jwt.decode(result["access_token"], options={"verify_signature": False})
        except jwt.PyJWTError:
            raise errors.ConsentNotConfirmed("the app-only token could not be read") from None
        roles = claims.get("roles")
        return ConsentCheck(
            visible=True,
            tenant_id=claims.get("tid") if isinstance(claims.get("tid"), str) else None,
            roles=tuple(r for r in roles if isinstance(r, str)) if isinstance(roles, list) else (),
        )

    def check_app(self, app: str) -> AppCheck:
        """Ask for an app-only token for ``app`` in its home tenant; say what is wrong if none."""
        credential = self._credentials.app(app)
        tenant = credential.home_tenant_id
        if tenant is None:
            return AppCheck(
                app,
                credential.client_id,
                None,
                False,
                "no homeTenantId in CTT_APP_CREDENTIALS",
                fix=AADSTS_FIXES["50059"],
            )
        try:
            result = self._call(
                lambda: self._application(app, tenant).acquire_token_for_client(
                    scopes=[f"{self._settings.graph_host}/.default"]
                )
            )
        except errors.BrokerError as exc:
            return AppCheck(app, credential.client_id, tenant, False, f"{exc.code}: {exc.detail}")
        if "access_token" in result:
            return AppCheck(app, credential.client_id, tenant, True, "app-only token issued")
        error = microsoft_error(result.get("error"), result.get("error_description"))
        aadsts = error.extra.get("aadsts")
        return AppCheck(
            app,
            credential.client_id,
            tenant,
            False,
            error.detail,
            aadsts=aadsts,
            fix=AADSTS_FIXES.get(aadsts or "", "See Microsoft's AADSTS error code reference."),
        )

    # -- sign-in ---------------------------------------------------------------

    def start_sign_in(
        self, spec: ActionSpec, tenant: str, state: str, login_hint: str | None = None
    ) -> tuple[str, dict[str, Any]]:
        """Begin the authorization code flow; returns the URL and MSAL's secret flow dict.

        At most the discovery document is fetched here (when the kept MSAL object is
        rebuilt, see :meth:`_sign_in_starter`): retried like any idempotent call.
        """
        flow = self._retried(
            lambda: self._call(
                lambda: self._sign_in_starter(spec.app, tenant).initiate_auth_code_flow(
                    scopes=list(spec.scopes),
                    redirect_uri=self._settings.redirect_uri,
                    state=state,
                    prompt="select_account",
                    login_hint=login_hint,
                )
            ),
            None,
        )
        if "auth_uri" not in flow:
            raise microsoft_error(flow.get("error"), flow.get("error_description"))
        return str(flow["auth_uri"]), dict(flow)

    def _sign_in_starter(self, app: str, tenant: str) -> msal.ConfidentialClientApplication:
        """The MSAL object that begins sign-ins of ``app`` in ``tenant``, kept a while.

        Beginning a sign-in builds a URL and the flow's secrets (PKCE, nonce) from the
        tenant's endpoints: it sends no request, reads no token and keeps no answer, so one
        object serves every launch instead of one built per click (building one costs about
        0.3 ms of CPU, a sixth of the launch handler's). It is kept for
        ``DISCOVERY_TTL_SECONDS`` from when it was built (its endpoints may come from a
        discovery answer kept up to as long before), and rebuilt for a new client id;
        redemptions never use it (see :meth:`complete_sign_in`).
        """
        key = (app, tenant, self._credentials.app(app).client_id)
        kept = self._starters.get(key)
        if kept is not None:
            return kept
        application = self._application(app, tenant)  # raises when discovery fails: not kept
        self._starters.put(key, application)
        return application

    def complete_sign_in(
        self,
        spec: ActionSpec,
        tenant: str,
        flow: Mapping[str, Any],
        response: Mapping[str, str],
        *,
        deadline: datetime | None = None,
        log: CallLog | None = None,
    ) -> SignIn:
        """Redeem the code with MSAL, then validate the ID token ourselves (MSAL does not).

        The redemption is retried on connection errors and 5xx until ``deadline``
        (the flow's own expiry); ``invalid_grant`` after a lost answer ends it.
        """

        def redeem() -> Any:
            # A fresh MSAL object per try: MSAL remembers a 5xx answer for a while.
            application = self._call(lambda: self._application(spec.app, tenant))
            try:
                result = self._call(
                    lambda: application.acquire_token_by_auth_code_flow(dict(flow), dict(response))
                )
            except RuntimeError:
                # MSAL's own ID token checks (nonce first of all) refused it.
                raise errors.IdTokenInvalid("MSAL refused the ID token") from None
            if "error" in result or "id_token" not in result:
                raise microsoft_error(result.get("error"), result.get("error_description"))
            return result

        result = self._retried(redeem, log, deadline=deadline)
        # MSAL sends sha256(nonce) to Microsoft and keeps the nonce in the flow.
        expected_nonce = hashlib.sha256(str(flow.get("nonce", "")).encode()).hexdigest()
        unverified = result.get("id_token_claims") or {}
        tid = unverified.get("tid") if isinstance(unverified, Mapping) else None
        if isinstance(tid, str) and tid.lower() == PERSONAL_ACCOUNT_TENANT_ID:
            raise errors.PersonalAccountNotAllowed("a personal Microsoft account signed in")
        if not isinstance(tid, str) or not is_guid(tid):
            # Checked before the value goes into a URL (the tenant's JWKS address).
            raise errors.IdTokenInvalid("the ID token carries no valid tid")
        claims = validate_id_token(
            str(result["id_token"]),
            jwks=self.jwks,
            jwks_uri=f"{self._settings.login_host}/{tid}/discovery/v2.0/keys",
            client_id=self._credentials.app(spec.app).client_id,
            authority_host=self._settings.login_host,
            expected_nonce=expected_nonce,
            now=self._clock(),
        )
        return SignIn(result=result, claims=claims)

    # -- plumbing --------------------------------------------------------------

    def _retried(
        self,
        action: Callable[[], Any],
        log: CallLog | None,
        *,
        deadline: datetime | None = None,
    ) -> Any:
        """Run ``action``, again after a pause while Microsoft fails transiently.

        Stops after ``RETRY_DELAYS`` run out, or when the next try would start
        after ``deadline``. Permanent answers (4xx, OAuth errors) are not retried.
        """
        for delay in (*RETRY_DELAYS, None):
            if log is not None:
                log.attempts += 1
            try:
                return action()
            except errors.MicrosoftUnavailable:
                if delay is None:
                    raise
                if deadline is not None and self._clock() + timedelta(seconds=delay) >= deadline:
                    raise
            self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _application(self, app: str, tenant: str) -> msal.ConfidentialClientApplication:
        credential = self._credentials.app(app)
        return msal.ConfidentialClientApplication(
            credential.client_id,
            client_credential=credential.msal_credential(
                f"{self._settings.login_host}/{tenant}/oauth2/v2.0/token"
            ),
            authority=f"{self._settings.login_host}/{tenant}",
            http_client=self._msal_http,
            # The login host is a setting (national clouds, the emulator): no discovery
            # round trip to the public cloud, and no authority allow-list.
            instance_discovery=False,
            validate_authority=False,
            timeout=self._settings.microsoft_timeout_seconds,
        )

    @staticmethod
    def _call(action: Callable[[], Any]) -> Any:
        """Run one MSAL step, turning transport failures into our errors."""
        try:
            return action()
        except httpx.TimeoutException:
            raise errors.MicrosoftTimeout("Microsoft did not answer in time") from None
        except (httpx.TransportError, msal.exceptions.MsalServiceError) as exc:
            raise errors.MicrosoftUnavailable(
                f"Microsoft is unavailable ({type(exc).__name__})"
            ) from None
        except httpx.HTTPStatusError as exc:
            raise errors.MicrosoftUnavailable(
                f"Microsoft answered HTTP {exc.response.status_code}"
            ) from None
        except ValueError:
            # MSAL raises ValueError for answers it cannot read: a 400 discovery
            # document (unknown tenant), a non-JSON body, a response without code.
            raise errors.MicrosoftError("Microsoft's answer could not be used") from None
