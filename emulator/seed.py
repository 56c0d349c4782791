"""Deterministic seed data: two work tenants, a personal account, three app registrations.

The ids are fixed so that tests, the sandbox and documentation can name them.
"""

from __future__ import annotations

from emulator.config import (
    CONSUMERS_TENANT_ID,
    GLOBAL_ADMIN_ROLE_ID,
    TEAMS_ADMIN_ROLE_ID,
    AppRegistration,
    EmulatorConfig,
    Tenant,
    User,
)

CONTOSO_TENANT_ID = "aaaaaaaa-0000-4000-8000-00000000c0c0"
CONTOSO_DOMAIN = "contoso.onmicrosoft.com"
CONTOSO_ADMIN = User(
    oid="aaaaaaaa-0000-4000-8000-0000000000a1",
    name="Adele Admin",
    preferred_username="admin@contoso.onmicrosoft.com",
    wids=(GLOBAL_ADMIN_ROLE_ID,),
)
CONTOSO_USER = User(
    oid="aaaaaaaa-0000-4000-8000-0000000000a2",
    name="Megan User",
    preferred_username="user@contoso.onmicrosoft.com",
)
CONTOSO_DECLINER = User(
    oid="aaaaaaaa-0000-4000-8000-0000000000a3",
    name="Diego Decliner",
    preferred_username="decliner@contoso.onmicrosoft.com",
    # An admin, so that declining is the only reason their flows fail.
    wids=(GLOBAL_ADMIN_ROLE_ID,),
    declines_consent=True,
)

CONTOSO_TEAMS_ADMIN = User(
    oid="aaaaaaaa-0000-4000-8000-0000000000a4",
    name="Tomas Teams-Admin",
    preferred_username="tomas@contoso.onmicrosoft.com",
    wids=(TEAMS_ADMIN_ROLE_ID,),
)

FABRIKAM_TENANT_ID = "bbbbbbbb-0000-4000-8000-00000000fab0"
FABRIKAM_DOMAIN = "fabrikam.onmicrosoft.com"
FABRIKAM_ADMIN = User(
    oid="bbbbbbbb-0000-4000-8000-0000000000b1",
    name="Fiona Admin",
    preferred_username="admin@fabrikam.onmicrosoft.com",
    wids=(GLOBAL_ADMIN_ROLE_ID,),
)

PERSONAL_USER = User(
    oid="00000000-0000-0000-8a2b-3c4d5e6f7a81",
    name="Pat Personal",
    preferred_username="pat.personal@outlook.com",
)

SIGNIN_APP_ID = "a1a1a1a1-0000-4000-8000-000000000001"
SIGNIN_APP_SECRET = "emulator-signin-secret"  # noqa: S105 - a public, emulator-only value
USER_SYNC_APP_ID = "a2a2a2a2-0000-4000-8000-000000000002"
USER_SYNC_APP_SECRET = "emulator-usersync-secret"  # noqa: S105
PRESENCE_APP_ID = "a3a3a3a3-0000-4000-8000-000000000003"
PRESENCE_APP_SECRET = "emulator-presence-secret"  # noqa: S105

DEFAULT_REDIRECT_URIS = (
    "http://localhost:8000/callback",
    "https://broker.example.test/callback",
)


def default_tenants() -> tuple[Tenant, ...]:
    """Contoso (admin, user, decliner, Teams admin), Fabrikam (admin), the personal tenant."""
    return (
        Tenant(
            tenant_id=CONTOSO_TENANT_ID,
            domain=CONTOSO_DOMAIN,
            display_name="Contoso",
            users=(CONTOSO_ADMIN, CONTOSO_USER, CONTOSO_DECLINER, CONTOSO_TEAMS_ADMIN),
        ),
        Tenant(
            tenant_id=FABRIKAM_TENANT_ID,
            domain=FABRIKAM_DOMAIN,
            display_name="Fabrikam",
            users=(FABRIKAM_ADMIN,),
        ),
        Tenant(
            tenant_id=CONSUMERS_TENANT_ID,
            domain="live.com",
            display_name="Microsoft Accounts",
            users=(PERSONAL_USER,),
            personal=True,
        ),
    )


def default_apps(
    redirect_uris: tuple[str, ...] = DEFAULT_REDIRECT_URIS,
) -> tuple[AppRegistration, ...]:
    """One sign-in app (delegated scopes) and two consent apps with different app roles."""
    return (
        AppRegistration(
            client_id=SIGNIN_APP_ID,
            client_secret=SIGNIN_APP_SECRET,
            display_name="CTT Broker Sign-in",
            redirect_uris=redirect_uris,
            delegated_scopes=("User.Read", "AppCatalog.ReadWrite.All"),
        ),
        AppRegistration(
            client_id=USER_SYNC_APP_ID,
            client_secret=USER_SYNC_APP_SECRET,
            display_name="CTT User Sync",
            redirect_uris=redirect_uris,
            app_roles=("User.Read.All",),
        ),
        AppRegistration(
            client_id=PRESENCE_APP_ID,
            client_secret=PRESENCE_APP_SECRET,
            display_name="CTT Presence",
            redirect_uris=redirect_uris,
            app_roles=("Presence.Read.All", "Presence.ReadWrite.All"),
        ),
    )


def default_config(
    issuer_base_url: str = "https://login.microsoftonline.com",
    browser_base_url: str | None = None,
    *,
    apps: tuple[AppRegistration, ...] | None = None,
    enable_control_routes: bool = False,
    consent_propagation_delay: float = 0.0,
) -> EmulatorConfig:
    """The seeded configuration; pass `apps` to replace the default app registrations."""
    return EmulatorConfig(
        issuer_base_url=issuer_base_url,
        browser_base_url=browser_base_url,
        tenants=default_tenants(),
        apps=default_apps() if apps is None else apps,
        enable_control_routes=enable_control_routes,
        consent_propagation_delay=consent_propagation_delay,
    )
