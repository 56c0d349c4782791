"""The webhook sender: one signed POST per attempt, to a checked address, within a deadline.

No receiver can stall the broker, and no provider can aim it inward:

* **One resolution, pinned.** The URL's host is resolved once and every address
  is checked by the destination policy (:mod:`broker.destinations`); the
  connection then goes to the checked address, so a second DNS answer cannot
  swap in a private one (DNS rebinding). TLS still verifies the certificate
  for the URL's host name: httpcore does the handshake with the URL's host as
  server name, over our already-connected socket.
* **A wall-clock deadline per attempt.** Every socket operation (connect, TLS,
  write, each read) gets at most the time left until the attempt's deadline,
  so a receiver that answers ``200`` and then trickles a byte every few
  seconds is cut at the deadline, not kept alive read by read. The answer's
  body is never read.
* **Bulkheads.** :class:`DeliveryLoop` gives each provider at most one attempt
  in flight, on a small bounded pool: a slow provider holds one slot for at
  most one deadline, and the others go on. The worker's other jobs run in
  their own loop.
* **Coarse errors.** An attempt's ``error`` is a class (``timeout``,
  ``refused``, ``tls``, ``http_status``, ``dns``, ``blocked``, ``network``,
  ``unconfigured``), never the socket's message, so the attempts API is no
  port-scan oracle.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import httpcore

from broker import errors
from broker.destinations import DestinationUnresolved, Resolver, pick_address, system_resolver
from broker.runtime import Runtime
from broker.tls import trusted_context
from broker.webhook_queue import (
    AttemptResult,
    Claim,
    DueDelivery,
    claim_delivery,
    due_deliveries,
    enqueue_new_events,
    finish_attempt,
    next_due_per_provider,
)
from broker.webhook_signatures import sign_webhook

logger = logging.getLogger(__name__)

DEFAULT_DEADLINE_SECONDS = 10.0
# A lease outlives its attempt by this much (database round trips before and
# after the POST); a worker that died holds an event no longer than that.
LEASE_MARGIN_SECONDS = 5.0
USER_AGENT = "ctt-broker-webhooks/1"
# How many providers with due events one tick looks at (the fairest of them go first).
PROVIDERS_PER_TICK = 256

Connect = Callable[[str, int, float], httpcore.NetworkStream]
Monotonic = Callable[[], float]


def connect_tcp(address: str, port: int, timeout: float) -> httpcore.NetworkStream:
    """Open a TCP connection to an address literal (never a name: nothing to resolve)."""
    return httpcore.SyncBackend().connect_tcp(address, port, timeout=timeout)


@dataclass(frozen=True)
class DeliveryPass:
    """What one :func:`deliver_due` pass did.

    ``attempted`` counts claims won; each ends as ``delivered``, ``retrying``
    or ``gave_up`` (``refused`` counts those of them not sent at all).
    ``lost`` counts due rows another worker claimed first; ``errors`` counts
    attempts cut short by an unexpected error (the lease expires and the
    delivery is retried).
    """

    attempted: int = 0
    delivered: int = 0
    retrying: int = 0
    gave_up: int = 0
    refused: int = 0
    lost: int = 0
    errors: int = 0


class WebhookSender:
    """Sends attempts; holds the policy inputs (deadline, resolver, mode) and the network.

    ``connect`` and ``resolve`` are the network boundary: tests give fakes.
    """

    def __init__(
        self,
        *,
        deadline_seconds: float = DEFAULT_DEADLINE_SECONDS,
        production: bool = False,
        resolve: Resolver = system_resolver,
        connect: Connect = connect_tcp,
        ssl_context: ssl.SSLContext | None = None,
        monotonic: Monotonic = time.monotonic,
    ) -> None:
        self.deadline_seconds = deadline_seconds
        self.production = production
        self._resolve = resolve
        self._connect = connect
        self._ssl_context = ssl_context or trusted_context()
        self._monotonic = monotonic

    @classmethod
    def for_runtime(cls, runtime: Runtime, **options: Any) -> WebhookSender:
        """A sender configured from the runtime's settings."""
        settings = runtime.settings
        return cls(
            deadline_seconds=settings.webhook_attempt_seconds,
            production=settings.mode == "production",
            **options,
        )

    @property
    def lease(self) -> timedelta:
        """How long a claimed delivery stays ours: the deadline plus a margin."""
        return timedelta(seconds=self.deadline_seconds + LEASE_MARGIN_SECONDS)

    def send(self, claim: Claim, started_at: datetime) -> AttemptResult:
        """Make one attempt for ``claim``; never raises for anything the receiver does."""
        began = self._monotonic()
        deadline = began + self.deadline_seconds
        url = claim.webhook_url

        def result(outcome: str, error: str | None, status: int | None = None) -> AttemptResult:
            elapsed = int((self._monotonic() - began) * 1000)
            return AttemptResult(
                url or claim.previous_url, started_at, elapsed, status, error, outcome
            )

        if url is None or not claim.secrets:
            return result("refused", "unconfigured")  # no URL, or nothing to sign with
        try:
            destination = pick_address(
                url,
                development=claim.development,
                production=self.production,
                resolve=self._resolve,
            )
        except errors.WebhookUrlBlocked:
            return result("refused", "blocked")
        except DestinationUnresolved:
            return result("network_error", "dns")
        timestamp = int(started_at.timestamp())
        headers: dict[bytes | str, bytes | str] = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": claim.event_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign_webhook(claim.secrets, claim.event_id, timestamp, claim.body),
        }
        backend = _PinnedBackend(destination.address, deadline, self._connect, self._monotonic)
        pool = httpcore.ConnectionPool(
            ssl_context=self._ssl_context,
            network_backend=backend,
            max_connections=1,
            max_keepalive_connections=0,
            retries=0,
        )
        try:
            with (
                pool,
                pool.stream(
                    "POST",
                    destination.url.url,
                    headers=headers,
                    content=claim.body.encode("utf-8"),
                ) as response,
            ):
                # Closing without reading: a receiver cannot make us download a body.
                status = response.status
        except httpcore.TimeoutException:
            return result("timeout", "timeout")
        except httpcore.ConnectError as exc:
            return result("network_error", _connect_error_class(exc))
        except (httpcore.NetworkError, httpcore.ProtocolError):
            return result("network_error", "network")
        if 200 <= status < 300:
            return result("delivered", None, status)
        return result("rejected", "http_status", status)


def attempt_delivery(runtime: Runtime, sender: WebhookSender, due: DueDelivery) -> list[str]:
    """Claim one due delivery, send it and record the attempt; returns its pass labels."""
    claim = claim_delivery(runtime, due, runtime.now(), sender.lease)
    if claim is None:
        return ["lost"]
    outcome = sender.send(claim, runtime.now())
    label = finish_attempt(runtime, claim, outcome)
    if label == "lost":
        logger.warning("webhook attempt %s of %s outlived its lease", claim.attempt, due.event_id)
    return [label, "refused"] if outcome.outcome == "refused" else [label]


def deliver_due(
    runtime: Runtime, sender: WebhookSender, *, max_parallel: int = 8, limit: int = 500
) -> DeliveryPass:
    """Attempt every due delivery once: in parallel across providers, one at a time per provider.

    For ``worker --once`` and tests; the long-running worker uses :class:`DeliveryLoop`.
    """
    by_provider: dict[str, list[DueDelivery]] = {}
    for due in due_deliveries(runtime, runtime.now(), limit=limit):
        by_provider.setdefault(due.provider_id, []).append(due)
    tally: Counter[str] = Counter()
    if by_provider:
        workers = max(1, min(max_parallel, len(by_provider)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="webhook") as pool:
            futures = [
                pool.submit(_deliver_in_turn, runtime, sender, rows)
                for rows in by_provider.values()
            ]
            for future in futures:
                tally.update(future.result())
    return DeliveryPass(
        attempted=tally["delivered"] + tally["retrying"] + tally["gave_up"],
        delivered=tally["delivered"],
        retrying=tally["retrying"],
        gave_up=tally["gave_up"],
        refused=tally["refused"],
        lost=tally["lost"],
        errors=tally["errors"],
    )


class DeliveryLoop:
    """The worker's delivery loop: at most one attempt in flight per provider.

    Each :meth:`tick` claims due deliveries of providers with nothing in flight,
    up to the pool's free slots, and returns at once; an attempt finishing
    wakes the loop so that provider's next event goes out without waiting for
    the interval. A slot is held for at most one attempt's deadline.
    """

    def __init__(self, runtime: Runtime, sender: WebhookSender, *, concurrency: int) -> None:
        self._runtime = runtime
        self._sender = sender
        self._concurrency = concurrency
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="webhook")
        self._in_flight: set[str] = set()
        self._last_started: dict[str, float] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self.tally: Counter[str] = Counter()

    def tick(self) -> int:
        """Start attempts for due deliveries of idle providers; returns how many started."""
        with self._lock:
            busy = frozenset(self._in_flight)
        free = self._concurrency - len(busy)
        if free <= 0:
            return 0
        first_due = {
            due.provider_id: due
            for due in next_due_per_provider(
                self._runtime, self._runtime.now(), skip_providers=busy, limit=PROVIDERS_PER_TICK
            )
        }
        # The provider served longest ago goes first: with every slot taken by
        # slow receivers, a waiting provider still gets the next free one.
        order = sorted(first_due, key=lambda provider: self._last_started.get(provider, 0.0))
        chosen = {provider: first_due[provider] for provider in order[:free]}
        for provider_id, due in chosen.items():
            with self._lock:
                self._in_flight.add(provider_id)
                self._last_started[provider_id] = time.monotonic()
            future = self._pool.submit(attempt_delivery, self._runtime, self._sender, due)
            future.add_done_callback(partial(self._finished, provider_id))
        return len(chosen)

    def run(self, stop: threading.Event, interval: float) -> None:
        """Enqueue and tick until ``stop`` is set; sleeps ``interval`` when nothing is due."""
        while not stop.is_set():
            try:
                enqueue_new_events(self._runtime)
                self.tick()
            except Exception:  # the database may be back next time
                logger.exception("webhook delivery loop: tick failed")
            self._wake.wait(interval)
            self._wake.clear()

    def close(self) -> None:
        """Let attempts in flight finish (each within its deadline) and stop the pool."""
        self._pool.shutdown(wait=True)

    def _finished(self, provider_id: str, future: Future[list[str]]) -> None:
        with self._lock:
            self._in_flight.discard(provider_id)
            try:
                self.tally.update(future.result())
            except Exception:
                logger.exception("webhook delivery to %s broke off", provider_id)
                self.tally.update(["errors"])
        self._wake.set()


def _deliver_in_turn(runtime: Runtime, sender: WebhookSender, rows: list[DueDelivery]) -> list[str]:
    labels: list[str] = []
    for due in rows:
        try:
            labels.extend(attempt_delivery(runtime, sender, due))
        except Exception:
            logger.exception("webhook delivery of %s broke off", due.event_id)
            labels.append("errors")
    return labels


def _connect_error_class(exc: httpcore.ConnectError) -> str:
    # httpcore keeps the socket's exception as the first argument (the pool
    # re-raises ``from None``, dropping ``__cause__``).
    causes = [exc.__cause__, *exc.args]
    if any(isinstance(cause, ssl.SSLError | ssl.CertificateError) for cause in causes):
        return "tls"
    if any(isinstance(cause, ConnectionRefusedError) for cause in causes):
        return "refused"
    return "network"


class _PinnedBackend(httpcore.NetworkBackend):
    """Connects every request to one checked address, under one deadline."""

    def __init__(
        self, address: str, deadline: float, connect: Connect, monotonic: Monotonic
    ) -> None:
        self._address = address
        self._deadline = deadline
        self._connect = connect
        self._monotonic = monotonic

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        # ``host`` is the URL's name: it is deliberately not resolved again.
        left = _time_left(self._deadline, self._monotonic, httpcore.ConnectTimeout)
        stream = self._connect(self._address, port, left)
        return _DeadlineStream(stream, self._deadline, self._monotonic)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("webhooks never use unix sockets")


class _DeadlineStream(httpcore.NetworkStream):
    """A stream whose every operation ends by the attempt's deadline."""

    def __init__(
        self, inner: httpcore.NetworkStream, deadline: float, monotonic: Monotonic
    ) -> None:
        self._inner = inner
        self._deadline = deadline
        self._monotonic = monotonic

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        left = _time_left(self._deadline, self._monotonic, httpcore.ReadTimeout)
        return self._inner.read(max_bytes, left)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        left = _time_left(self._deadline, self._monotonic, httpcore.WriteTimeout)
        self._inner.write(buffer, left)

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        left = _time_left(self._deadline, self._monotonic, httpcore.ConnectTimeout)
        secured = self._inner.start_tls(ssl_context, server_hostname, left)
        return _DeadlineStream(secured, self._deadline, self._monotonic)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


def _time_left(deadline: float, monotonic: Monotonic, timeout: type[Exception]) -> float:
    left = deadline - monotonic()
    if left <= 0:
        raise timeout("the attempt's deadline has passed")
    return left
