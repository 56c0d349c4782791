"""Provider authentication, named by ``x-bearerInfoFunc`` in ``openapi.yaml``."""

from __future__ import annotations

from typing import Any

from anyio import to_thread

from broker.providers import authenticate
from handlers.context import runtime_from_scope


async def provider_from_api_key(token: str, request: Any) -> dict[str, str]:
    """Map a bearer API key to ``{"sub": provider_id}``; a bad key raises a 401 error.

    The database lookup runs in a worker thread so the event loop never blocks.
    """
    runtime = runtime_from_scope(request.scope)
    provider_id = await to_thread.run_sync(authenticate, runtime, token)
    return {"sub": provider_id}
