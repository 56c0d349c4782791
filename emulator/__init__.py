"""A Microsoft identity platform (Entra ID v2 endpoints) emulator for tests and the sandbox.

Build an `Emulator` (optionally from `default_config(...)`), then serve it with
`create_emulator_app(emulator)` or `python -m emulator`.
"""

from emulator.app import create_emulator_app
from emulator.config import (
    CONSUMERS_TENANT_ID,
    GLOBAL_ADMIN_ROLE_ID,
    GRAPH_DEFAULT_SCOPE,
    AppRegistration,
    EmulatorConfig,
    Tenant,
    User,
)
from emulator.core import Emulator
from emulator.driver import AuthorizeResult, complete_browser_flow
from emulator.errors import EntraError
from emulator.seed import default_apps, default_config, default_tenants

__all__ = [
    "CONSUMERS_TENANT_ID",
    "GLOBAL_ADMIN_ROLE_ID",
    "GRAPH_DEFAULT_SCOPE",
    "AppRegistration",
    "AuthorizeResult",
    "Emulator",
    "EmulatorConfig",
    "EntraError",
    "Tenant",
    "User",
    "complete_browser_flow",
    "create_emulator_app",
    "default_apps",
    "default_config",
    "default_tenants",
]
