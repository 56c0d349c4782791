"""The demo provider portal: client (broker API), views (HTML) and routes (Starlette)."""

from sandbox.portal.client import PortalConfig
from sandbox.portal.routes import create_portal_app

__all__ = ["PortalConfig", "create_portal_app"]
