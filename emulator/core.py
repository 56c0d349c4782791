"""The emulator's core: its in-memory directory and the protocol logic (framework-free).

`app.py` turns HTTP requests into calls on an `Emulator`; tests may call it directly too.
All public methods take the instance lock, so one Emulator can serve concurrent requests.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote_plus

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from emulator import tokens
from emulator.config import (
    GRAPH_APP_ID,
    GRAPH_DEFAULT_SCOPE,
    GRAPH_RESOURCE,
    OIDC_SCOPES,
    AppRegistration,
    EmulatorConfig,
    Tenant,
    User,
)
from emulator.directory import Audience, find_tenant, resolve
from emulator.errors import (
    EntraError,
    missing_parameter,
    redirect_error_params,
    redirect_uri_mismatch,
    unknown_client,
    user_declined,
)
from emulator.faults import Faults, TokenFault
from emulator.graph import GraphCatalog
from emulator.keys import KeyRing
from emulator.seed import default_config

Clock = Callable[[], float]
ResponseMode = Literal["query", "fragment", "form_post"]
FlowKind = Literal["authorize", "adminconsent"]


@dataclass(frozen=True)
class ShowPicker:
    """Render the account picker for transaction `txn_id`."""

    txn_id: str
    kind: FlowKind
    app: AppRegistration
    accounts: tuple[tuple[Tenant, User], ...]


@dataclass(frozen=True)
class ShowConsent:
    """Render the consent page (Accept / Cancel) for transaction `txn_id`."""

    txn_id: str
    kind: FlowKind
    app: AppRegistration
    user: User
    tenant: Tenant
    permissions: tuple[str, ...]


@dataclass(frozen=True)
class Respond:
    """Send the browser back to the app's redirect URI with `params`."""

    redirect_uri: str
    params: tuple[tuple[str, str], ...]
    response_mode: ResponseMode


Step = ShowPicker | ShowConsent | Respond


@dataclass
class _Transaction:
    txn_id: str
    kind: FlowKind
    audience: Audience
    app: AppRegistration
    redirect_uri: str
    state: str | None
    response_mode: ResponseMode
    resource_scopes: tuple[str, ...]
    oidc_scopes: frozenset[str]
    nonce: str | None
    code_challenge: str | None
    created_at: float
    requested_scope: str = ""
    account: tuple[Tenant, User] | None = None


@dataclass
class _Code:
    client_id: str
    redirect_uri: str
    tenant_id: str
    user: User
    resource_scopes: tuple[str, ...]
    oidc_scopes: frozenset[str]
    nonce: str | None
    code_challenge: str | None
    issued_at: float
    redeemed: bool = False


@dataclass
class _RefreshToken:
    client_id: str
    tenant_id: str
    user: User
    resource_scopes: tuple[str, ...]
    oidc_scopes: frozenset[str]
    expires_at: float


@dataclass(frozen=True)
class _Grant:
    visible_at: float
    roles: tuple[str, ...]


@dataclass
class _ServicePrincipal:
    grants: list[_Grant] = field(default_factory=list)


def _short_scope(scope: str) -> str:
    """`https://graph.microsoft.com/User.Read` and `User.Read` name the same permission."""
    for prefix in (f"{GRAPH_RESOURCE}/", f"{GRAPH_APP_ID}/"):
        if scope.lower().startswith(prefix.lower()):
            return scope[len(prefix) :]
    return scope


CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def _certificate_for(app: AppRegistration, header: Mapping[str, Any]) -> x509.Certificate | None:
    """The registered certificate named by the assertion's ``x5t`` (SHA-1) or ``x5t#S256``."""
    for pem in app.certificates:
        certificate = x509.load_pem_x509_certificate(pem.encode())
        for name, algorithm in (("x5t", hashes.SHA1()), ("x5t#S256", hashes.SHA256())):  # noqa: S303
            named = header.get(name)
            if isinstance(named, str):
                thumbprint = base64.urlsafe_b64encode(certificate.fingerprint(algorithm))
                if hmac.compare_digest(named.rstrip("=").encode(), thumbprint.rstrip(b"=")):
                    return certificate
    return None


def _pkce_s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii", errors="replace")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _session_expired() -> EntraError:
    return EntraError(
        90100,
        "The sign-in page has expired or was already used. Start again from the application.",
    )


class Emulator:
    """An in-memory Microsoft Entra ID (v2 endpoints) for tests and the sandbox.

    `clock` returns Unix seconds; inject a fake to control code expiry and consent propagation.
    """

    def __init__(self, config: EmulatorConfig | None = None, *, clock: Clock = time.time) -> None:
        self._config = config or default_config()
        self._clock = clock
        self._lock = threading.RLock()
        self._keys = KeyRing()
        self._init_state()

    def _init_state(self) -> None:
        self._transactions: dict[str, _Transaction] = {}
        self._codes: dict[str, _Code] = {}
        self._refresh_tokens: dict[str, _RefreshToken] = {}
        self._service_principals: dict[tuple[str, str], _ServicePrincipal] = {}
        self._faults = Faults()
        self._propagation_delay = self._config.consent_propagation_delay
        # Microsoft Graph's Teams app catalog, per tenant (emulator/graph.py).
        self.graph = GraphCatalog(
            jwks=self.jwks,
            now=self.now,
            known_tenants=lambda: tuple(
                t.tenant_id for t in self._config.tenants if not t.personal
            ),
        )

    # ----------------------------------------------------------------- inspection and control

    @property
    def config(self) -> EmulatorConfig:
        """The immutable configuration this emulator was built with."""
        return self._config

    def now(self) -> float:
        """The injected clock's current time."""
        return self._clock()

    def reset(self) -> None:
        """Forget consents, codes, refresh tokens, open pages and faults. Keys are kept."""
        with self._lock:
            self._init_state()

    def rotate_signing_key(self) -> str:
        """Publish a new signing key and sign with it from now on; returns its kid."""
        with self._lock:
            return self._keys.rotate().kid

    def use_unpublished_signing_key(self) -> str:
        """Sign with a key absent from the JWKS (unknown-kid tests); returns its kid.

        `rotate_signing_key()` returns to a published key.
        """
        with self._lock:
            return self._keys.use_unpublished_key().kid

    @property
    def active_kid(self) -> str:
        """The kid of the key new tokens are signed with."""
        with self._lock:
            return self._keys.active.kid

    def fail_next_token_requests(self, count: int, status: int = 503) -> None:
        """Make the token endpoint answer `status` (5xx) for the next `count` requests."""
        if count < 0 or not 500 <= status <= 599:
            raise ValueError("count must be >= 0 and status a 5xx code")
        with self._lock:
            self._faults.failures_remaining = count
            self._faults.failure_status = status

    def set_token_delay(self, seconds: float) -> None:
        """Delay every token endpoint response by `seconds` (0 turns it off)."""
        if seconds < 0:
            raise ValueError("delay must be >= 0")
        with self._lock:
            self._faults.delay_seconds = seconds

    def set_consent_propagation_delay(self, seconds: float) -> None:
        """Consents made from now on become visible to client_credentials after `seconds`."""
        if seconds < 0:
            raise ValueError("delay must be >= 0")
        with self._lock:
            self._propagation_delay = seconds

    def override_next_id_token_claims(
        self, claims: Mapping[str, object | None], count: int = 1
    ) -> None:
        """Tamper with the next `count` ID tokens: set each claim, or delete it when None.

        The token is still validly signed, so this tests the relying party's claim checks.
        """
        with self._lock:
            for _ in range(count):
                self._faults.id_token_overrides.append(dict(claims))

    def take_token_fault(self) -> TokenFault:
        """Consume the fault (delay, forced 5xx) that applies to the current token request."""
        with self._lock:
            return self._faults.take_token_fault()

    def grant_admin_consent(self, tenant: str, client_id: str) -> None:
        """Record an admin consent as if a Global Admin had accepted it (test shortcut)."""
        with self._lock:
            found = find_tenant(self._config, tenant)
            app = self._require_app(client_id, found.tenant_id)
            self._record_consent(found.tenant_id, app, app.app_roles)

    def revoke_consent(self, tenant: str, client_id: str) -> None:
        """Delete the app's service principal from the tenant (a GA removing the app)."""
        with self._lock:
            found = find_tenant(self._config, tenant)
            self._service_principals.pop((found.tenant_id, client_id.lower()), None)

    def consented_roles(self, tenant: str, client_id: str) -> tuple[str, ...] | None:
        """The app roles client_credentials would see now; None if no visible service principal."""
        with self._lock:
            found = find_tenant(self._config, tenant)
            return self._visible_roles(found.tenant_id, client_id)

    # ----------------------------------------------------------------- metadata

    def discovery_document(self, segment: str) -> dict[str, object]:
        """The OpenID configuration for `/{segment}/v2.0/.well-known/openid-configuration`."""
        audience = resolve(self._config, segment)
        base = self._config.issuer_base
        if audience.is_multi_tenant:
            issuer_tenant = "{tenantid}"
        else:
            assert audience.specific is not None
            issuer_tenant = audience.specific.tenant_id
        seg = audience.segment
        return {
            "token_endpoint": f"{base}/{seg}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": [
                "client_secret_post",
                "private_key_jwt",
                "client_secret_basic",
            ],
            "jwks_uri": f"{base}/{seg}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{base}/{issuer_tenant}/v2.0",
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
            "authorization_endpoint": f"{self._config.browser_base}/{seg}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/{seg}/oauth2/v2.0/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{self._config.browser_base}/{seg}/oauth2/v2.0/logout",
            "claims_supported": [
                "sub",
                "iss",
                "cloud_instance_name",
                "cloud_instance_host_name",
                "cloud_graph_host_name",
                "msgraph_host",
                "aud",
                "exp",
                "iat",
                "auth_time",
                "acr",
                "nonce",
                "preferred_username",
                "name",
                "tid",
                "ver",
                "at_hash",
                "c_hash",
                "email",
            ],
            "kerberos_endpoint": f"{base}/{seg}/kerberos",
            "tenant_region_scope": None if audience.is_multi_tenant else "NA",
            "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": "graph.microsoft.com",
            "rbac_url": "https://pas.windows.net",
        }

    def jwks(self, segment: str) -> dict[str, object]:
        """The JWKS for `/{segment}/discovery/v2.0/keys`: every published key."""
        audience = resolve(self._config, segment)
        tenant = "{tenantid}" if audience.specific is None else audience.specific.tenant_id
        issuer = f"{self._config.issuer_base}/{tenant}/v2.0"
        with self._lock:
            return {"keys": [key.jwk(issuer) for key in self._keys.published]}

    def instance_discovery(self) -> dict[str, object]:
        """MSAL's `/common/discovery/instance` answer, naming only this emulator's host."""
        host = self._config.issuer_base.split("://", 1)[-1]
        return {
            "tenant_discovery_endpoint": (
                f"{self._config.issuer_base}/common/v2.0/.well-known/openid-configuration"
            ),
            "api-version": "1.1",
            "metadata": [
                {"preferred_network": host, "preferred_cache": host, "aliases": [host]},
            ],
        }

    # ----------------------------------------------------------------- interactive legs

    def start_authorize(self, segment: str, query: Mapping[str, str]) -> Step:
        """Validate an OIDC authorization request and decide the first page.

        Raises EntraError: non-redirectable ones (bad client, bad redirect_uri, unknown tenant)
        must be shown as an error page; redirectable ones go back via `error_response()`.
        """
        with self._lock:
            app, redirect_uri = self._validate_client_and_redirect(segment, query)
            audience = resolve(self._config, segment)
            response_mode = self._response_mode(query)
            try:
                if query.get("response_type", "") != "code":
                    raise EntraError(
                        700054,
                        f"response_type '{query.get('response_type', '')}' is not enabled for "
                        "the application.",
                        error="unsupported_response_type",
                    )
                if (
                    audience.specific is not None
                    and audience.specific.personal
                    and not (app.allow_personal_accounts)
                ):
                    raise EntraError(
                        700016,
                        "The client does not exist or is not enabled for consumers.",
                        error="unauthorized_client",
                    )
                challenge = query.get("code_challenge") or None
                method = query.get("code_challenge_method", "plain" if challenge else "")
                if challenge and method != "S256":
                    raise EntraError(
                        501491,
                        "The emulator accepts only code_challenge_method=S256.",
                    )
                resource_scopes, oidc_scopes = self._parse_delegated_scopes(
                    app, query.get("scope", "")
                )
                if query.get("prompt") == "none":
                    raise EntraError(
                        50058,
                        "A silent sign-in request was sent but no user is signed in.",
                        error="login_required",
                    )
            except EntraError as err:
                return self._error_step(redirect_uri, response_mode, query.get("state"), err)
            txn = _Transaction(
                txn_id=secrets.token_urlsafe(24),
                kind="authorize",
                audience=audience,
                app=app,
                redirect_uri=redirect_uri,
                state=query.get("state"),
                response_mode=response_mode,
                resource_scopes=resource_scopes,
                oidc_scopes=oidc_scopes,
                nonce=query.get("nonce") or None,
                code_challenge=challenge,
                created_at=self.now(),
                requested_scope=query.get("scope", ""),
            )
            return self._first_page(txn, query.get("login_hint"))

    def start_admin_consent(self, segment: str, query: Mapping[str, str]) -> Step:
        """Validate a `/{tenant}/v2.0/adminconsent` request and decide the first page."""
        with self._lock:
            app, redirect_uri = self._validate_client_and_redirect(segment, query)
            audience = resolve(self._config, segment)
            if audience.specific is not None and audience.specific.personal:
                err = EntraError(
                    90094,
                    "Personal Microsoft accounts cannot grant admin consent.",
                    error="access_denied",
                )
                return self._error_step(redirect_uri, "query", query.get("state"), err)
            scope = query.get("scope", GRAPH_DEFAULT_SCOPE)
            if not all(s.endswith("/.default") for s in scope.split()):
                err = EntraError(
                    70011,
                    f"The provided value for the input parameter 'scope' is not valid. The "
                    f"scope {scope} is not valid. Admin consent takes only '/.default' scopes.",
                    error="invalid_scope",
                )
                return self._error_step(redirect_uri, "query", query.get("state"), err)
            work_only = Audience(
                audience.segment,
                tuple(t for t in audience.tenants if not t.personal),
                audience.specific,
            )
            txn = _Transaction(
                txn_id=secrets.token_urlsafe(24),
                kind="adminconsent",
                audience=work_only,
                app=app,
                redirect_uri=redirect_uri,
                state=query.get("state"),
                response_mode="query",
                resource_scopes=(),
                oidc_scopes=frozenset(),
                nonce=None,
                code_challenge=None,
                created_at=self.now(),
                requested_scope=scope,
            )
            return self._first_page(txn, query.get("login_hint"))

    def select_account(self, txn_id: str, username: str) -> Step:
        """The user picked `username` on the account picker."""
        with self._lock:
            txn = self._live_transaction(txn_id)
            found = txn.audience.find_user(username, allow_personal=txn.app.allow_personal_accounts)
            if found is None:
                raise EntraError(
                    50034,
                    f"The user account {username} does not exist in this directory.",
                )
            return self._after_account(txn, found)

    def decide(self, txn_id: str, accept: bool) -> Respond:
        """The user pressed Accept or Cancel on the consent page; the transaction ends."""
        with self._lock:
            txn = self._live_transaction(txn_id)
            if txn.account is None:
                raise _session_expired()
            del self._transactions[txn_id]
            tenant, user = txn.account
            if not accept:
                return self._finish_error(txn, user_declined())
            if txn.kind == "adminconsent":
                self._record_consent(tenant.tenant_id, txn.app, txn.app.app_roles)
                granted = " ".join(f"{GRAPH_RESOURCE}/{r}" for r in txn.app.app_roles)
                params = [("admin_consent", "True"), ("tenant", tenant.tenant_id)]
                if txn.state is not None:
                    params.append(("state", txn.state))
                params.append(("scope", granted))
                return Respond(txn.redirect_uri, tuple(params), "query")
            # A user's consent at sign-in creates the service principal too (without roles).
            if not tenant.personal:
                self._record_consent(tenant.tenant_id, txn.app, ())
            code = "1.A" + secrets.token_urlsafe(48)
            self._codes[code] = _Code(
                client_id=txn.app.client_id,
                redirect_uri=txn.redirect_uri,
                tenant_id=tenant.tenant_id,
                user=user,
                resource_scopes=txn.resource_scopes,
                oidc_scopes=txn.oidc_scopes,
                nonce=txn.nonce,
                code_challenge=txn.code_challenge,
                issued_at=self.now(),
            )
            params = [("code", code)]
            if txn.state is not None:
                params.append(("state", txn.state))
            params.append(("session_state", str(uuid.uuid4())))
            return Respond(txn.redirect_uri, tuple(params), txn.response_mode)

    # ----------------------------------------------------------------- token endpoint

    def token(
        self, segment: str, form: Mapping[str, str], authorization: str | None = None
    ) -> dict[str, object]:
        """Answer a token endpoint POST; raises EntraError with the status to send."""
        with self._lock:
            audience = resolve(self._config, segment)
            grant_type = form.get("grant_type", "")
            if not grant_type:
                raise missing_parameter("grant_type")
            app = self._authenticate_client(audience, form, authorization)
            if grant_type == "authorization_code":
                return self._redeem_code(audience, app, form)
            if grant_type == "client_credentials":
                return self._client_credentials(audience, app, form)
            if grant_type == "refresh_token":
                return self._redeem_refresh_token(audience, app, form)
            raise EntraError(
                70003,
                f"The app requested an unsupported grant type '{grant_type}'.",
                error="unsupported_grant_type",
            )

    # ----------------------------------------------------------------- internals

    def _require_app(self, client_id: str, directory: str) -> AppRegistration:
        app = self._config.app(client_id)
        if app is None:
            raise unknown_client(client_id, directory)
        return app

    def _validate_client_and_redirect(
        self, segment: str, query: Mapping[str, str]
    ) -> tuple[AppRegistration, str]:
        # Entra validates the app and its reply URL before anything else and never redirects
        # to an unregistered URL: these errors become an error page.
        client_id = query.get("client_id", "")
        if not client_id:
            raise missing_parameter("client_id")
        app = self._require_app(client_id, segment)
        redirect_uri = query.get("redirect_uri", "")
        if not redirect_uri:
            raise missing_parameter("redirect_uri")
        if redirect_uri not in app.redirect_uris:
            raise redirect_uri_mismatch(redirect_uri, app.client_id)
        resolve(self._config, segment)
        return app, redirect_uri

    @staticmethod
    def _response_mode(query: Mapping[str, str]) -> ResponseMode:
        mode = query.get("response_mode", "query")
        if mode == "form_post":
            return "form_post"
        if mode == "fragment":
            return "fragment"
        return "query"

    def _parse_delegated_scopes(
        self, app: AppRegistration, scope: str
    ) -> tuple[tuple[str, ...], frozenset[str]]:
        oidc: set[str] = set()
        resource: list[str] = []
        allowed = {s.lower(): s for s in app.delegated_scopes}
        for raw in scope.split():
            if raw in OIDC_SCOPES:
                oidc.add(raw)
                continue
            short = _short_scope(raw)
            if short == ".default":
                resource.extend(s for s in app.delegated_scopes if s not in resource)
                continue
            canonical = allowed.get(short.lower())
            if canonical is None:
                raise EntraError(
                    650053,
                    f"The application '{app.display_name}' asked for scope '{short}' that "
                    f"doesn't exist on the resource '{GRAPH_APP_ID}'. Contact the app vendor.",
                    error="invalid_client",
                )
            if canonical not in resource:
                resource.append(canonical)
        return tuple(resource), frozenset(oidc)

    def _error_step(
        self,
        redirect_uri: str,
        mode: ResponseMode,
        state: str | None,
        err: EntraError,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> Respond:
        params = redirect_error_params(err, now=self.now())
        if state is not None:
            params.append(("state", state))
        return Respond(redirect_uri, (*params, *extra), mode)

    def _finish_error(self, txn: _Transaction, err: EntraError) -> Respond:
        self._transactions.pop(txn.txn_id, None)
        extra: tuple[tuple[str, str], ...] = ()
        if txn.kind == "adminconsent" and txn.account is not None:
            # Entra's admin consent error redirect still says admin_consent=True and names
            # the tenant; a relying party must let `error` win.
            extra = (("admin_consent", "True"), ("tenant", txn.account[0].tenant_id))
        return self._error_step(txn.redirect_uri, txn.response_mode, txn.state, err, extra)

    def _first_page(self, txn: _Transaction, login_hint: str | None) -> Step:
        self._purge_expired()
        self._transactions[txn.txn_id] = txn
        allow_personal = txn.app.allow_personal_accounts
        if login_hint:
            found = txn.audience.find_user(login_hint, allow_personal=allow_personal)
            if found is not None:
                return self._after_account(txn, found)
        return ShowPicker(
            txn_id=txn.txn_id,
            kind=txn.kind,
            app=txn.app,
            accounts=tuple(txn.audience.users(allow_personal=allow_personal)),
        )

    def _after_account(self, txn: _Transaction, account: tuple[Tenant, User]) -> Step:
        tenant, user = account
        txn.account = account
        if user.declines_consent:
            return self._finish_error(txn, user_declined())
        if txn.kind == "adminconsent":
            if not user.is_global_admin:
                return self._finish_error(
                    txn,
                    EntraError(
                        90094,
                        f"{txn.app.display_name} needs permission to access resources in your "
                        "organization that only an admin can grant. Please ask an admin to "
                        "grant permission to this app before you can use it.",
                        error="access_denied",
                    ),
                )
            permissions = tuple(f"{r} (application)" for r in txn.app.app_roles)
        else:
            permissions = (
                ("Sign you in and read your profile",)
                + tuple(f"{s} (delegated)" for s in txn.resource_scopes)
                + (
                    ("Maintain access to data you have given it access to",)
                    if "offline_access" in txn.oidc_scopes
                    else ()
                )
            )
        return ShowConsent(
            txn_id=txn.txn_id,
            kind=txn.kind,
            app=txn.app,
            user=user,
            tenant=tenant,
            permissions=permissions,
        )

    def _live_transaction(self, txn_id: str) -> _Transaction:
        txn = self._transactions.get(txn_id)
        if txn is None or self.now() - txn.created_at > self._config.transaction_lifetime:
            self._transactions.pop(txn_id, None)
            raise _session_expired()
        return txn

    def _purge_expired(self) -> None:
        now = self.now()
        for key in [
            k
            for k, t in self._transactions.items()
            if now - t.created_at > self._config.transaction_lifetime
        ]:
            del self._transactions[key]
        for key in [
            k for k, c in self._codes.items() if now - c.issued_at > 2 * self._config.code_lifetime
        ]:
            del self._codes[key]

    def _record_consent(self, tenant_id: str, app: AppRegistration, roles: tuple[str, ...]) -> None:
        sp = self._service_principals.setdefault(
            (tenant_id, app.client_id.lower()), _ServicePrincipal()
        )
        sp.grants.append(_Grant(visible_at=self.now() + self._propagation_delay, roles=roles))

    def _visible_roles(self, tenant_id: str, client_id: str) -> tuple[str, ...] | None:
        sp = self._service_principals.get((tenant_id, client_id.lower()))
        if sp is None:
            return None
        now = self.now()
        visible = [g for g in sp.grants if g.visible_at <= now]
        if not visible:
            return None
        roles: list[str] = []
        for grant in visible:
            roles.extend(r for r in grant.roles if r not in roles)
        return tuple(roles)

    def _authenticate_client(
        self, audience: Audience, form: Mapping[str, str], authorization: str | None
    ) -> AppRegistration:
        client_id = form.get("client_id", "")
        secret = form.get("client_secret")
        if authorization and authorization.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
                basic_id, _, basic_secret = decoded.partition(":")
            except (binascii.Error, UnicodeDecodeError) as exc:
                raise EntraError(
                    7000218,
                    "The Authorization header is malformed.",
                    error="invalid_client",
                    status=401,
                ) from exc
            # RFC 6749 2.3.1: both halves are form-urlencoded before base64.
            client_id = client_id or unquote_plus(basic_id)
            secret = unquote_plus(basic_secret)
        if not client_id:
            raise missing_parameter("client_id")
        app = self._require_app(client_id, audience.segment)
        assertion = form.get("client_assertion")
        if assertion is not None and secret is None:
            self._check_client_assertion(audience, app, form, assertion)
            return app
        if secret is None:
            raise EntraError(
                7000218,
                "The request body must contain the following parameter: 'client_assertion' "
                "or 'client_secret'.",
                error="invalid_client",
                status=401,
            )
        if not hmac.compare_digest(secret.encode(), app.client_secret.encode()):
            raise EntraError(
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is "
                f"the client secret value, not the client secret ID, for a secret added to app "
                f"'{app.client_id}'.",
                error="invalid_client",
                status=401,
            )
        return app

    def _check_client_assertion(
        self, audience: Audience, app: AppRegistration, form: Mapping[str, str], assertion: str
    ) -> None:
        """A certificate credential: a JWT signed by the key of a registered certificate."""
        if form.get("client_assertion_type") != CLIENT_ASSERTION_TYPE:
            raise EntraError(
                700025,
                "Client assertion type is invalid: expected " + CLIENT_ASSERTION_TYPE,
                error="invalid_client",
                status=401,
            )
        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError as exc:
            raise EntraError(
                50027, "JWT token is invalid or malformed.", error="invalid_request"
            ) from exc
        certificate = _certificate_for(app, header)
        if certificate is None:
            raise EntraError(
                700027,
                "Client assertion failed signature validation. [Reason - The key was not "
                f"found., Thumbprint of key used by client: '{header.get('x5t', '')}']",
                error="invalid_client",
                status=401,
            )
        token_endpoint = f"{self._config.issuer_base}/{audience.segment}/oauth2/v2.0/token"
        try:
            claims = jwt.decode(
                assertion,
                certificate.public_key(),  # type: ignore[arg-type]
                algorithms=["RS256", "PS256"],
                audience=token_endpoint,
                options={"require": ["exp", "iss", "sub", "aud"], "verify_exp": False},
            )
        except jwt.PyJWTError as exc:
            raise EntraError(
                700027,
                f"Client assertion failed signature validation. [Reason - {type(exc).__name__}]",
                error="invalid_client",
                status=401,
            ) from exc
        if claims["iss"] != app.client_id or claims["sub"] != app.client_id:
            raise EntraError(
                700021,
                "Client assertion application identifier doesn't match 'client_id' parameter.",
                error="invalid_client",
                status=401,
            )
        if not isinstance(claims["exp"], int | float) or claims["exp"] < self.now():
            raise EntraError(
                700024,
                "Client assertion is not within its valid time range.",
                error="invalid_client",
                status=401,
            )

    def _redeem_code(
        self, audience: Audience, app: AppRegistration, form: Mapping[str, str]
    ) -> dict[str, object]:
        code_value = form.get("code", "")
        if not code_value:
            raise missing_parameter("code")
        code = self._codes.get(code_value)
        if code is None:
            raise EntraError(
                9002313, "Invalid request. Request is malformed or invalid.", error="invalid_grant"
            )
        if code.redeemed:
            raise EntraError(
                54005,
                "OAuth2 Authorization code was already redeemed, please retry with a new valid "
                "code or use an existing refresh token.",
                error="invalid_grant",
            )
        # Entra burns a code on its first redemption attempt, even a failed one.
        code.redeemed = True
        if self.now() - code.issued_at > self._config.code_lifetime:
            raise EntraError(
                70008,
                "The provided authorization code or refresh token has expired due to "
                "inactivity. Send a new interactive authorization request for this user and "
                "resource.",
                error="invalid_grant",
            )
        if code.client_id.lower() != app.client_id.lower() or not audience.admits(code.tenant_id):
            raise EntraError(
                70000, "Provided grant is invalid or malformed.", error="invalid_grant"
            )
        redirect_uri = form.get("redirect_uri", "")
        if redirect_uri not in app.redirect_uris:
            raise redirect_uri_mismatch(redirect_uri, app.client_id)
        if redirect_uri != code.redirect_uri:
            raise EntraError(
                70000,
                "Provided grant is invalid or malformed: the redirect_uri differs from the one "
                "used in the authorization request.",
                error="invalid_grant",
            )
        if code.code_challenge is not None:
            verifier = form.get("code_verifier", "")
            if not verifier or not hmac.compare_digest(_pkce_s256(verifier), code.code_challenge):
                raise EntraError(
                    501481,
                    "The Code_Verifier does not match the code_challenge supplied in the "
                    "authorization request.",
                    error="invalid_grant",
                )
        return self._user_tokens(
            app, code.user, code.tenant_id, code.resource_scopes, code.oidc_scopes, code.nonce
        )

    def _redeem_refresh_token(
        self, audience: Audience, app: AppRegistration, form: Mapping[str, str]
    ) -> dict[str, object]:
        value = form.get("refresh_token", "")
        if not value:
            raise missing_parameter("refresh_token")
        record = self._refresh_tokens.get(value)
        if record is None:
            raise EntraError(
                9002313, "Invalid request. Request is malformed or invalid.", error="invalid_grant"
            )
        if self.now() > record.expires_at:
            raise EntraError(
                700082,
                "The refresh token has expired due to inactivity.",
                error="invalid_grant",
            )
        if record.client_id.lower() != app.client_id.lower() or not audience.admits(
            record.tenant_id
        ):
            raise EntraError(
                70000, "Provided grant is invalid or malformed.", error="invalid_grant"
            )
        resource = record.resource_scopes
        oidc = record.oidc_scopes
        if form.get("scope"):
            requested, requested_oidc = self._parse_delegated_scopes(app, form["scope"])
            if any(s not in record.resource_scopes for s in requested):
                raise EntraError(
                    65001,
                    "The user or administrator has not consented to use the application with "
                    f"ID '{app.client_id}'. Send an interactive authorization request for this "
                    "user and resource.",
                    error="invalid_grant",
                )
            resource = requested or record.resource_scopes
            oidc = requested_oidc | frozenset({"offline_access"})
        return self._user_tokens(app, record.user, record.tenant_id, resource, oidc, None)

    def _client_credentials(
        self, audience: Audience, app: AppRegistration, form: Mapping[str, str]
    ) -> dict[str, object]:
        if audience.specific is None or audience.segment == "consumers":
            raise EntraError(
                50059,
                "No tenant-identifying information found in either the request or implied by "
                "any provided credentials.",
                error="invalid_request",
            )
        scope = form.get("scope", "")
        accepted = (
            GRAPH_DEFAULT_SCOPE,
            f"{GRAPH_APP_ID}/.default",
            f"{self._config.graph_resource}/.default",
        )
        if scope.strip() not in accepted:
            raise EntraError(
                1002012,
                f"The provided value for scope {scope} is not valid. Client credential flows "
                "must have a scope value with /.default suffixed to the resource identifier "
                "(application ID URI).",
                error="invalid_scope",
            )
        tenant = audience.specific
        roles = None if tenant.personal else self._visible_roles(tenant.tenant_id, app.client_id)
        if roles is None and tenant.tenant_id == app.home_tenant_id:
            roles = ()  # the home tenant holds the app's service principal, consent or not
        if roles is None:
            raise unknown_client(app.client_id, tenant.tenant_id)
        now = self.now()
        lifetime = self._config.token_lifetime
        claims = tokens.app_access_token_claims(
            app=app, tenant_id=tenant.tenant_id, roles=roles, now=now, lifetime=lifetime
        )
        return {
            "token_type": "Bearer",
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": self._keys.active.sign(claims),
        }

    def _user_tokens(
        self,
        app: AppRegistration,
        user: User,
        tenant_id: str,
        resource_scopes: tuple[str, ...],
        oidc_scopes: frozenset[str],
        nonce: str | None,
    ) -> dict[str, object]:
        now = self.now()
        lifetime = self._config.token_lifetime
        key = self._keys.active
        granted = resource_scopes or ("User.Read",)
        returned_oidc = [s for s in ("openid", "profile", "email") if s in oidc_scopes]
        body: dict[str, object] = {
            "token_type": "Bearer",
            "scope": " ".join((*granted, *returned_oidc)),
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": key.sign(
                tokens.delegated_access_token_claims(
                    app=app,
                    user=user,
                    tenant_id=tenant_id,
                    scopes=granted,
                    now=now,
                    lifetime=lifetime,
                )
            ),
        }
        if "offline_access" in oidc_scopes:
            refresh = "1.A" + secrets.token_urlsafe(64)
            self._refresh_tokens[refresh] = _RefreshToken(
                client_id=app.client_id,
                tenant_id=tenant_id,
                user=user,
                resource_scopes=resource_scopes,
                oidc_scopes=oidc_scopes,
                expires_at=now + self._config.refresh_token_lifetime,
            )
            body["refresh_token"] = refresh
        if "openid" in oidc_scopes:
            claims = tokens.id_token_claims(
                issuer_base=self._config.issuer_base,
                app=app,
                user=user,
                tenant_id=tenant_id,
                nonce=nonce,
                scopes=oidc_scopes,
                now=now,
                lifetime=lifetime,
            )
            for name, value in self._faults.take_id_token_override().items():
                if value is None:
                    claims.pop(name, None)
                else:
                    claims[name] = value
            body["id_token"] = key.sign(claims)
        body["client_info"] = tokens.client_info(user.oid, tenant_id)
        return body
