"""The broker's ASGI app, built once per database and settings, lent to one test at a time.

Building the Connexion app (the spec parsed and validated, every operation resolved) costs
about half a second; the suite used to pay it in almost every test. :func:`serving_app`
returns an app built earlier for the same settings (the per-test data directory aside;
the database URL is part of them, so each backend has its own), after putting into it
everything a test may change or use up: the runtime (engine, clock, credentials,
Microsoft client, settings), fresh rate limits, an empty in-flight count per bulkhead
and a fresh Microsoft concurrency limiter. Those are
all the state the broker's own middleware holds between requests; :func:`_check_state`
refuses to lend an app whose middleware grew other attributes, so new state cannot leak
from one test to the next unnoticed.

An app is lent to one test at a time: a test that asks twice (two clients side by side)
gets two apps, and every app goes back to the pool when the test ends
(:func:`release_apps`, called by an autouse fixture).

The app's one tie to an engine is the pool gauges (``metrics.watch_pool``), which
``create_app`` attaches to the runtime's engine: lending to a runtime on an engine no app
watches yet attaches them too.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from anyio import CapacityLimiter
from sqlalchemy import Engine

from broker import metrics
from broker.ratelimits import RateLimits, open_rate_limits
from broker.runtime import Runtime
from broker.settings import Settings

if TYPE_CHECKING:
    from handlers.middleware import RequestGuard, RuntimeMiddleware

MIDDLEWARE_MODULES = ("handlers.middleware", "handlers.spec_documents")
PRODUCT_PACKAGES = ("handlers.", "broker.")

# What each of our middlewares may hold: configuration fixed by the settings (part of the
# pool key) or state that ``_lend`` replaces. Anything else is unknown state: refuse.
_KNOWN_ATTRIBUTES: dict[str, frozenset[str]] = {
    "RequestLogMiddleware": frozenset({"app"}),
    "SecurityHeadersMiddleware": frozenset({"app", "headers"}),
    "RequestGuard": frozenset(
        {
            "app",
            "rate_limits",
            "trusted_proxies",
            "max_concurrent_requests",
            "microsoft_limiter",
            "in_flight",
        }
    ),
    "PathGuard": frozenset({"app"}),
    "BodyGuardMiddleware": frozenset({"app", "max_body_bytes", "max_package_bytes"}),
    "RuntimeMiddleware": frozenset({"app", "runtime"}),
    # Its cache holds documents rendered from the spec alone, the same for every app.
    "SpecDocuments": frozenset({"app", "_spec", "_render", "_documents"}),
}


@dataclass
class _Built:
    app: Any
    guard: RequestGuard
    runtime_layer: RuntimeMiddleware
    layers: list[Any]


_free: dict[Settings, list[_Built]] = {}
_lent: list[tuple[Settings, _Built]] = []
# Engines whose pool gauges an app already feeds (``create_app`` calls ``watch_pool``).
_watched: weakref.WeakSet[Engine] = weakref.WeakSet()
builds = {"built": 0, "lent": 0}


def serving_app(runtime: Runtime, rate_limits: RateLimits | None = None) -> Any:
    """``create_app(runtime.settings, runtime, rate_limits)``, from the pool when it can be."""
    key = replace(runtime.settings, data_dir=Path())
    pool = _free.setdefault(key, [])
    built = pool.pop() if pool else _build(runtime)
    _lend(built, runtime, rate_limits)
    _lent.append((key, built))
    builds["lent"] += 1
    return built.app


def forget_database(url: str) -> None:
    """The session database at ``url`` is going away: drop its apps."""
    for key in [key for key in _free if key.database_url == url]:
        del _free[key]


def release_apps() -> None:
    """The test is over: its apps go back to the pool."""
    while _lent:
        key, built = _lent.pop()
        _free.setdefault(key, []).append(built)


def _build(runtime: Runtime) -> _Built:
    from handlers.app import create_app
    from handlers.middleware import RequestGuard, RuntimeMiddleware

    builds["built"] += 1
    app = create_app(runtime.settings, runtime)
    _watched.add(runtime.engine)
    # What Connexion does on the first request: build the middleware stack (once per app).
    connexion = app.middleware
    connexion.app, connexion.middleware_stack = connexion._build_middleware_stack()
    layers = list(connexion.middleware_stack)
    guards = [layer for layer in layers if isinstance(layer, RequestGuard)]
    runtimes = [layer for layer in layers if isinstance(layer, RuntimeMiddleware)]
    assert len(guards) == 1 and len(runtimes) == 1, layers
    return _Built(app, guards[0], runtimes[0], layers)


def _check_state(built: _Built) -> None:
    for layer in built.layers:
        if not type(layer).__module__.startswith(PRODUCT_PACKAGES):
            continue
        known = _KNOWN_ATTRIBUTES.get(type(layer).__qualname__)
        if known is None or type(layer).__module__ not in MIDDLEWARE_MODULES:
            raise AssertionError(
                f"{type(layer).__name__} is new: say in tests/shared_app.py what state it holds"
            )
        unknown = set(vars(layer)) - known
        assert not unknown, (
            f"{type(layer).__name__} holds {sorted(unknown)}: reset it in tests/shared_app.py "
            "or the next test inherits it"
        )


def _lend(built: _Built, runtime: Runtime, rate_limits: RateLimits | None) -> None:
    """Everything a fresh ``create_app(runtime.settings, runtime, rate_limits)`` would hold."""
    _check_state(built)
    settings = runtime.settings
    if runtime.engine not in _watched:
        metrics.watch_pool(runtime.engine)
        _watched.add(runtime.engine)
    built.runtime_layer.runtime = runtime
    built.guard.rate_limits = rate_limits or open_rate_limits(settings)
    built.guard.in_flight = dict.fromkeys(built.guard.in_flight, 0)
    built.guard.microsoft_limiter = CapacityLimiter(settings.microsoft_concurrency)
    logging.getLogger("ctt_broker").setLevel(settings.log_level)
