"""Shared helpers for the emulator tests (imported by conftest and the test modules)."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from urllib.parse import urlencode

import msal

with warnings.catch_warnings():
    # Starlette 1.x warns that its TestClient still runs on httpx; harmless for these tests.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient

ISSUER = "https://login.emulator.test"
REDIRECT_URI = "http://localhost:8000/callback"

__all__ = ["ISSUER", "REDIRECT_URI", "FakeClock", "MakeApp", "TestClient", "admin_consent_url"]


class FakeClock:
    """A settable clock: starts at real time so PyJWT's exp/iat checks still pass."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


MakeApp = Callable[..., msal.ConfidentialClientApplication]


def admin_consent_url(client_id: str, tenant: str = "organizations", state: str = "st-1") -> str:
    query = urlencode(
        {
            "client_id": client_id,
            "redirect_uri": REDIRECT_URI,
            "state": state,
            "scope": "https://graph.microsoft.com/.default",
        }
    )
    return f"{ISSUER}/{tenant}/v2.0/adminconsent?{query}"
