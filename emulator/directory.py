"""Resolving the tenant segment of a URL path (`/{tenant}/...`) the way Entra does."""

from __future__ import annotations

from dataclasses import dataclass

from emulator.config import CONSUMERS_TENANT_ID, EmulatorConfig, Tenant, User
from emulator.errors import tenant_not_found

MULTI_TENANT_ALIASES = ("common", "organizations")


@dataclass(frozen=True)
class Audience:
    """Who may sign in through a given tenant segment."""

    segment: str
    """The path segment as Entra would echo it in endpoint URLs (GUID, `common`, ...)."""
    tenants: tuple[Tenant, ...]
    specific: Tenant | None
    """The one tenant the segment names; None for `common` and `organizations`."""

    @property
    def is_multi_tenant(self) -> bool:
        """True for `common` and `organizations`, whose issuer carries the `{tenantid}` template."""
        return self.specific is None

    def admits(self, tenant_id: str) -> bool:
        """Whether a code or token of `tenant_id` may be redeemed through this segment."""
        return any(t.tenant_id.lower() == tenant_id.lower() for t in self.tenants)

    def find_user(self, username: str, *, allow_personal: bool) -> tuple[Tenant, User] | None:
        """The user whose preferred_username (case-insensitive) matches, in an admitted tenant."""
        wanted = username.strip().lower()
        for tenant, user in self.users(allow_personal=allow_personal):
            if user.preferred_username.lower() == wanted:
                return tenant, user
        return None

    def users(self, *, allow_personal: bool) -> list[tuple[Tenant, User]]:
        """Every (tenant, user) the account picker may offer."""
        return [
            (tenant, user)
            for tenant in self.tenants
            if allow_personal or not tenant.personal
            for user in tenant.users
        ]


def resolve(config: EmulatorConfig, segment: str) -> Audience:
    """Map a path segment (GUID, domain, common, organizations, consumers) to an Audience.

    Raises EntraError AADSTS90002 for an unknown tenant.
    """
    lowered = segment.lower()
    work = tuple(t for t in config.tenants if not t.personal)
    personal = tuple(t for t in config.tenants if t.personal)
    if lowered == "common":
        return Audience("common", work + personal, None)
    if lowered == "organizations":
        return Audience("organizations", work, None)
    if lowered in ("consumers", CONSUMERS_TENANT_ID):
        if not personal:
            raise tenant_not_found(segment)
        return Audience(
            "consumers" if lowered == "consumers" else CONSUMERS_TENANT_ID, personal, personal[0]
        )
    for tenant in work:
        if lowered in (tenant.tenant_id.lower(), tenant.domain.lower()):
            return Audience(tenant.tenant_id, (tenant,), tenant)
    raise tenant_not_found(segment)


def find_tenant(config: EmulatorConfig, tenant: str) -> Tenant:
    """A tenant by id or domain (for the Python and control APIs)."""
    audience = resolve(config, tenant)
    if audience.specific is None:
        raise tenant_not_found(tenant)
    return audience.specific
