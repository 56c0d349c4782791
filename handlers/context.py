"""How a handler finds the :class:`broker.runtime.Runtime` of the app serving it.

``create_app`` installs a middleware that puts the runtime into the ASGI
scope, so no module-level state is needed and two apps can live side by side
(the tests rely on that).
"""

from __future__ import annotations

from collections.abc import MutableMapping
from contextvars import ContextVar
from typing import Any

from broker.runtime import Runtime

SCOPE_KEY = "ctt.runtime"
# Why Microsoft's return was cut down to its state before parsing (over the head limits).
OVERFLOW_KEY = "ctt.microsoft_overflow"


def runtime_from_scope(scope: MutableMapping[str, Any]) -> Runtime:
    """The runtime the app put into this request's scope."""
    runtime = scope[SCOPE_KEY]
    assert isinstance(runtime, Runtime)
    return runtime


# Set by RuntimeMiddleware for the request's task; the thread a sync handler runs in
# gets a copy of that context. A plain context variable: Connexion's ``context.scope``
# proxy cost 3 % of getActionItemUrl's CPU to reach the same value.
REQUEST_RUNTIME: ContextVar[Runtime] = ContextVar("ctt_request_runtime")


def current_runtime() -> Runtime:
    """The runtime of the request being handled."""
    return REQUEST_RUNTIME.get()


# What the edge guard leaves in the scope for handlers further in.
LIMITS_KEY = "ctt.rate_limits"
CLIENT_IP_KEY = "ctt.client_ip"
MICROSOFT_LIMITER_KEY = "ctt.microsoft_limiter"
