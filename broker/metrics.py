"""Prometheus metrics: what happens in every process, and what the database holds.

Counters and histograms live in this module and are bumped where things
happen (the access middleware, the flow, the Microsoft transport, the
database pool). Under ``ctt-broker serve`` every gunicorn worker writes them
to ``PROMETHEUS_MULTIPROC_DIR``, which ``serve`` empties at start, and the
master serves their sum on ``CTT_METRICS_BIND``, never on the public API.

Backlogs are not counted but read at scrape time from the database (see
:class:`StoreCollector`), so every instance and the worker agree on them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine, event, func, select

from broker.db import action_items, webhook_attempts, webhook_deliveries

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# What broker.webhook_sender records per attempt; always exported, zeros included.
ATTEMPT_OUTCOMES = ("delivered", "rejected", "timeout", "network_error", "refused")
# Microsoft and the database answer in milliseconds to seconds; a hung call ends at the timeout.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

REQUESTS = Counter(
    "ctt_http_requests", "Requests answered, by operationId and status.", ["operation_id", "status"]
)
REQUEST_SECONDS = Histogram(
    "ctt_http_request_duration_seconds",
    "Time to answer a request, by operationId.",
    ["operation_id"],
    buckets=LATENCY_BUCKETS,
)
FLOWS_STARTED = Counter(
    "ctt_flows_started", "Admin flows started (a link clicked).", ["action_type"]
)
FLOWS_COMPLETED = Counter("ctt_flows_completed", "Admin flows completed.", ["action_type"])
FLOWS_FAILED = Counter(
    "ctt_flows_failed", "Admin flows failed, by error code.", ["action_type", "error_code"]
)
FLOWS_PENDING = Counter(
    "ctt_flows_pending", "Consents left pending for the worker to confirm.", ["action_type"]
)
MICROSOFT_CALLS = Counter(
    "ctt_microsoft_calls",
    "HTTP calls to Microsoft (login and Graph), by endpoint and outcome.",
    ["endpoint", "outcome"],
)
MICROSOFT_SECONDS = Histogram(
    "ctt_microsoft_call_duration_seconds",
    "Time of one HTTP call to Microsoft, by endpoint.",
    ["endpoint"],
    buckets=LATENCY_BUCKETS,
)
POOL_IN_USE = Gauge(
    "ctt_db_pool_connections_in_use",
    "Database connections checked out of the pools (all processes).",
    multiprocess_mode="livesum",
)
POOL_SIZE = Gauge(
    "ctt_db_pool_size",
    "Database connections the pools may hold open (all processes).",
    multiprocess_mode="livesum",
)


def observe_request(operation_id: str | None, status: int, seconds: float) -> None:
    """Count one answered request."""
    name = operation_id or "unrouted"
    REQUESTS.labels(name, str(status)).inc()
    REQUEST_SECONDS.labels(name).observe(seconds)


def flow_started(action_type: str) -> None:
    """A link was clicked and a flow sent to Microsoft."""
    FLOWS_STARTED.labels(action_type).inc()


def flow_finished(action_type: str, status: str, error_code: str | None) -> None:
    """A flow's outcome was recorded: ``completed``, ``failed`` or ``pending``."""
    if status == "completed":
        FLOWS_COMPLETED.labels(action_type).inc()
    elif status == "pending":
        FLOWS_PENDING.labels(action_type).inc()
    else:
        FLOWS_FAILED.labels(action_type, error_code or "UNKNOWN").inc()


def microsoft_endpoint(url: httpx.URL | str) -> str:
    """A bounded label for a Microsoft URL: never a tenant id or a query."""
    parts = urlsplit(str(url))
    path = parts.path
    if path.endswith("/oauth2/v2.0/token"):
        return "token"
    if path.endswith("/discovery/v2.0/keys"):
        return "jwks"
    if "/.well-known/openid-configuration" in path:
        return "discovery"
    if path.startswith(("/v1.0/", "/beta/")):
        return "graph"
    return "other"


class MeteredTransport(httpx.BaseTransport):
    """Counts and times every call to Microsoft, failures included."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self._inner = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        endpoint = microsoft_endpoint(request.url)
        started = time.perf_counter()
        try:
            response = self._inner.handle_request(request)
        except httpx.TimeoutException:
            self._observe(endpoint, "timeout", started)
            raise
        except httpx.TransportError:
            self._observe(endpoint, "network_error", started)
            raise
        status = response.status_code
        outcome = "ok" if status < 400 else "client_error" if status < 500 else "server_error"
        self._observe(endpoint, outcome, started)
        return response

    def close(self) -> None:
        self._inner.close()

    @staticmethod
    def _observe(endpoint: str, outcome: str, started: float) -> None:
        MICROSOFT_CALLS.labels(endpoint, outcome).inc()
        MICROSOFT_SECONDS.labels(endpoint).observe(time.perf_counter() - started)


def watch_pool(engine: Engine) -> None:
    """Keep the pool gauges current for ``engine``'s connection pool."""
    size = getattr(engine.pool, "size", None)
    if callable(size):
        POOL_SIZE.inc(size())
    event.listen(engine, "checkout", lambda *_: POOL_IN_USE.inc())
    event.listen(engine, "checkin", lambda *_: POOL_IN_USE.dec())


class StoreCollector(Collector):
    """Gauges read from the database at scrape time: backlogs every process shares."""

    def __init__(self, engine: Engine, clock: Any = None) -> None:
        self._engine = engine
        self._clock = clock or (lambda: datetime.now(UTC))

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = self._clock()
        undelivered = webhook_deliveries.c.status.in_(("pending", "delivering"))
        with self._engine.connect() as connection:
            backlog, oldest = connection.execute(
                select(func.count(), func.min(webhook_deliveries.c.created_at)).where(undelivered)
            ).one()
            pending = connection.execute(
                select(func.count()).where(action_items.c.status == "pending")
            ).scalar_one()
            attempts = connection.execute(
                select(webhook_attempts.c.outcome, func.count())
                .where(webhook_attempts.c.started_at >= now - timedelta(hours=1))
                .group_by(webhook_attempts.c.outcome)
            ).all()
        yield GaugeMetricFamily(
            "ctt_webhook_backlog", "Webhook deliveries not yet delivered or given up.", backlog
        )
        age = (now - _aware(oldest)).total_seconds() if oldest is not None else 0.0
        yield GaugeMetricFamily(
            "ctt_webhook_oldest_undelivered_age_seconds",
            "Age of the oldest webhook delivery not yet delivered (0 when none).",
            max(age, 0.0),
        )
        by_outcome = GaugeMetricFamily(
            "ctt_webhook_attempts_last_hour",
            "Webhook attempts started in the last hour, by outcome.",
            labels=["outcome"],
        )
        counts = dict.fromkeys(ATTEMPT_OUTCOMES, 0) | {row[0]: row[1] for row in attempts}
        for outcome, count in counts.items():
            by_outcome.add_metric([outcome], count)
        yield by_outcome
        yield GaugeMetricFamily(
            "ctt_pending_consents", "Consents granted but not yet confirmed.", pending
        )


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class _Local(Collector):
    """This process's metrics, when not running under ``serve`` (tests, one process)."""

    def collect(self) -> Iterator[Any]:
        yield from REGISTRY.collect()


def registry_for(engine: Engine) -> CollectorRegistry:
    """Every process's metrics plus the database's gauges, collected afresh at each scrape."""
    registry = CollectorRegistry(auto_describe=False)
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry.register(_Local())
    registry.register(StoreCollector(engine))
    return registry


def scrape(engine: Engine) -> bytes:
    """The exposition text, as the metrics server answers it."""
    return bytes(generate_latest(registry_for(engine)))


def serve_metrics(bind: str, engine: Engine) -> None:
    """Serve the metrics on ``bind`` (``HOST:PORT``) from a daemon thread of this process."""
    host, _, port = bind.rpartition(":")
    start_http_server(int(port), addr=host.strip("[]"), registry=registry_for(engine))


def reset_multiprocess_dir(path: str) -> None:
    """Empty the directory the workers write to: files of dead processes from an earlier run
    would otherwise be summed in forever."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    for name in os.listdir(path):
        if name.endswith(".db"):
            os.remove(os.path.join(path, name))


def process_exited(pid: int) -> None:
    """Drop a dead worker's live gauges (its counters stay summed)."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
