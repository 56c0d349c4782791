"""The emulator, registered with exactly the apps the broker's catalog uses."""

from __future__ import annotations

from broker.catalog import Catalog
from broker.credentials import sandbox_app_credentials
from emulator import AppRegistration, EmulatorConfig, default_config


def emulator_config_for(
    catalog: Catalog,
    redirect_uri: str,
    *,
    issuer_base_url: str,
    browser_base_url: str | None = None,
    enable_control_routes: bool = False,
    consent_propagation_delay: float = 0.0,
) -> EmulatorConfig:
    """Seeded tenants and users, plus one app registration per catalog app."""
    credentials = sandbox_app_credentials(catalog)
    apps = []
    for app, credential in credentials.items():
        specs = [spec for spec in catalog.actions if spec.app == app]
        delegated = tuple(
            dict.fromkeys(s for spec in specs if spec.kind == "signin" for s in spec.scopes)
        )
        roles = tuple(
            dict.fromkeys(s for spec in specs if spec.kind == "consent" for s in spec.scopes)
        )
        apps.append(
            AppRegistration(
                client_id=credential.client_id,
                client_secret=credential.client_secret,
                display_name=f"CTT {app}",
                redirect_uris=(redirect_uri,),
                app_roles=roles,
                delegated_scopes=delegated,
            )
        )
    return default_config(
        issuer_base_url,
        browser_base_url,
        apps=tuple(apps),
        enable_control_routes=enable_control_routes,
        consent_propagation_delay=consent_propagation_delay,
    )
