"""Provider authentication, named by ``x-bearerInfoFunc`` in ``openapi.yaml``."""

from __future__ import annotations

from typing import Any

from anyio import to_thread

from broker import errors
from broker.observability import annotate
from broker.providers import authenticate
from broker.ratelimits import RateLimits
from handlers.context import CLIENT_IP_KEY, LIMITS_KEY, runtime_from_scope


async def provider_from_api_key(token: str, request: Any) -> dict[str, str]:
    """Map a bearer API key to ``{"sub": provider_id}``; a bad key raises a 401 error.

    A client IP with too many failed keys, and a key with too many requests,
    get 429 before the database is asked. The lookup runs in a worker thread so
    the event loop never blocks.
    """
    scope = request.scope
    limits: RateLimits = scope[LIMITS_KEY]
    ip: str = scope[CLIENT_IP_KEY]
    await _run(limits, limits.refuse_if_exhausted, "auth_failure", ip)
    try:
        provider_id = await to_thread.run_sync(authenticate, runtime_from_scope(scope), token)
    except errors.Unauthenticated:
        await _run(limits, limits.hit, "auth_failure", ip)
        raise
    await _run(limits, limits.enforce, "api", token)
    annotate(providerId=provider_id)
    return {"sub": provider_id}


async def _run(limits: RateLimits, call: Any, bucket: str, key: str) -> Any:
    # Redis answers over the network: off the event loop. Memory answers at once.
    if limits.uses_network:
        return await to_thread.run_sync(call, bucket, key)
    return call(bucket, key)
