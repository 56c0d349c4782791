"""HTTP clients for the loopback servers the tests start.

httpx loads the CA bundle into a new SSL context for every client it builds (tens of
milliseconds of CPU), even one that only ever speaks plain HTTP to 127.0.0.1. Tests that
build many clients (one per simulated browser, one per probe) share the broker's
process-wide context instead: each client is still separate (its own connections and
cookies), and TLS, where a test uses it, is verified as before (against certifi's CAs:
``SSL_CERT_FILE`` and ``SSL_CERT_DIR`` are not read, as in the broker).
"""

from __future__ import annotations

from typing import Any

import httpx

from broker.tls import trusted_context


def client(**options: Any) -> httpx.Client:
    """``httpx.Client(**options)`` on the shared trust store."""
    return httpx.Client(verify=trusted_context(), **options)


def get(url: str, **options: Any) -> httpx.Response:
    """``httpx.get(url, **options)`` on the shared trust store."""
    with client(timeout=options.pop("timeout", 5.0)) as one:
        return one.get(url, **options)
