"""Configuration of the Entra ID emulator: tenants, users, app registrations.

Everything here is a frozen value so one config can be shared between emulator instances and tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field

GLOBAL_ADMIN_ROLE_ID = "62e90394-69f5-4237-9190-012177145e10"
"""The directory role template id of Global Administrator, as it appears in the `wids` claim."""

TEAMS_ADMIN_ROLE_ID = "69091246-20e8-4a56-aa4d-066075b2a7a8"
"""The directory role template id of Teams Administrator (Entra built-in roles reference)."""

CONSUMERS_TENANT_ID = "9188040d-6c67-4c5b-b112-36a304b66dad"
"""The fixed tenant id of personal Microsoft accounts (MSA)."""

GRAPH_RESOURCE = "https://graph.microsoft.com"
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
GRAPH_DEFAULT_SCOPE = f"{GRAPH_RESOURCE}/.default"

OIDC_SCOPES = frozenset({"openid", "profile", "email", "offline_access"})
"""Scopes that belong to the sign-in itself rather than to a resource."""


@dataclass(frozen=True)
class User:
    """A seeded account that the account picker offers."""

    oid: str
    name: str
    preferred_username: str
    wids: tuple[str, ...] = ()
    declines_consent: bool = False
    """Simulates a user who always presses Cancel: picking them ends the flow in AADSTS65004."""

    @property
    def is_global_admin(self) -> bool:
        """True when the user holds the Global Administrator directory role."""
        return GLOBAL_ADMIN_ROLE_ID in self.wids


@dataclass(frozen=True)
class Tenant:
    """A directory. The personal-account directory has `personal=True`."""

    tenant_id: str
    domain: str
    display_name: str
    users: tuple[User, ...] = ()
    personal: bool = False


@dataclass(frozen=True)
class AppRegistration:
    """A multi-tenant app registration, as the broker's Microsoft settings would describe it."""

    client_id: str
    client_secret: str = field(repr=False)
    display_name: str
    redirect_uris: tuple[str, ...]
    app_roles: tuple[str, ...] = ()
    """Microsoft Graph application permissions granted by an admin consent."""
    delegated_scopes: tuple[str, ...] = ()
    """Microsoft Graph delegated permissions the app may ask for at sign-in (short names)."""
    allow_personal_accounts: bool = False
    home_tenant_id: str | None = None
    """The tenant the app is registered in: its service principal always exists there."""
    certificates: tuple[str, ...] = ()
    """PEM certificates whose keys may sign client assertions (certificate credentials)."""


@dataclass(frozen=True)
class EmulatorConfig:
    """Everything that shapes an emulator instance; start from `default_config()`."""

    issuer_base_url: str = "https://login.microsoftonline.com"
    """The login host MSAL is pointed at; issuers are `{issuer_base_url}/{tid}/v2.0`."""
    browser_base_url: str | None = None
    """Where a real browser reaches the interactive pages; defaults to `issuer_base_url`."""
    graph_resource: str = GRAPH_RESOURCE
    """The cloud's Graph host: `{this}/.default` is accepted besides the public one."""
    tenants: tuple[Tenant, ...] = ()
    apps: tuple[AppRegistration, ...] = ()
    consent_propagation_delay: float = 0.0
    """Seconds from a consent until client_credentials sees the service principal."""
    enable_control_routes: bool = False
    """Serve `/_emulator/...` fault-injection routes. Never enable on a shared host."""
    code_lifetime: float = 600.0
    token_lifetime: int = 3600
    refresh_token_lifetime: float = 90 * 24 * 3600.0
    transaction_lifetime: float = 900.0
    """How long an unfinished account-picker/consent page stays usable."""

    @property
    def issuer_base(self) -> str:
        """`issuer_base_url` without a trailing slash."""
        return self.issuer_base_url.rstrip("/")

    @property
    def browser_base(self) -> str:
        """`browser_base_url` (or the issuer base) without a trailing slash."""
        return (self.browser_base_url or self.issuer_base_url).rstrip("/")

    def app(self, client_id: str) -> AppRegistration | None:
        """The app registration with this client id, if any (case-insensitive like Entra)."""
        wanted = client_id.lower()
        return next((a for a in self.apps if a.client_id.lower() == wanted), None)
