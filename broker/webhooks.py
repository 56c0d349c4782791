"""Signed webhook delivery from the event outbox, to the Standard Webhooks scheme.

Every event a provider must learn of is already in the ``events`` table,
written in the transaction that made the change. This module pushes those
events to the provider's webhook URL:

* :func:`enqueue_new_events` gives each new event of a provider with a webhook
  URL one row in ``webhook_deliveries`` (idempotent, safe with many workers).
* :func:`deliver_due` claims due rows with a lease (a conditional update, so
  two workers never send the same attempt at once), POSTs the event's stored
  JSON bytes exactly, signed with every live secret of the provider, and
  records each attempt in ``webhook_attempts``.
* The ``webhook-id`` header is the event id on every attempt and every manual
  :func:`redeliver`, so a receiver dedupes on it: delivery is at least once.

Retry schedule. A *round* starts with the first attempt (or a redelivery).
After the n-th failed attempt of a round the next one waits a random delay in
``[0, min(6 h, 30 s * 2**(n-1))]`` ("full jitter"): ceilings of 30 s, 1, 2, 4,
8, 16, 32 and 64 min, 2 h 8 min, 4 h 16 min, then 6 h. Retries never go past
24 h after the round started: the next attempt is moved back to that moment,
so there is always a last attempt exactly 24 h in, and an attempt that fails
at or after it ends the round as ``failed`` (about 15-20 attempts in all). A
pass attempts each due delivery at most once, so a worker loop never storms.

Anything but a 2xx answer is a failure: a 3xx is not followed, a timeout or a
refused connection is retried. Before sending, the URL is checked again with
the callback rules; a provider not marked for development may not target a
loopback, private or otherwise non-global address (literal or resolved).
"""

from __future__ import annotations

import base64
import ipaddress
import json
import logging
import socket
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import (
    ColumnElement,
    Connection,
    Insert,
    Select,
    and_,
    case,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from broker import errors
from broker.callbacks import parse_callback_url
from broker.db import (
    UtcDateTime,
    events,
    provider_webhook_secrets,
    providers,
    webhook_attempts,
    webhook_deliveries,
)
from broker.ids import new_id
from broker.providers import get_provider
from broker.runtime import RandomBytes, Runtime

__all__ = [
    "DeliveryPass",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookSecret",
    "WebhookVerificationError",
    "deliver_due",
    "delivery_report",
    "enqueue_new_events",
    "ensure_webhook_secret",
    "get_delivery",
    "list_attempts",
    "live_secrets",
    "make_webhook_client",
    "redeliver",
    "retry_delay",
    "rotate_webhook_secret",
    "sign_webhook",
    "verify_webhook",
]

logger = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"  # noqa: S105 - the scheme's prefix, not a secret
RETRY_BASE_SECONDS = 30
RETRY_CAP_SECONDS = 6 * 3600
GIVE_UP_AFTER_SECONDS = 24 * 3600
DEFAULT_TIMEOUT_SECONDS = 10.0
# A provider that sets a webhook URL late is not flooded with its history:
# older events stay readable through the events API.
ENQUEUE_MAX_AGE_SECONDS = 24 * 3600
MAX_OVERLAP_SECONDS = 30 * 86400
USER_AGENT = "ctt-broker-webhooks/1"

PENDING = "pending"
DELIVERING = "delivering"
DELIVERED = "delivered"
FAILED = "failed"

_ERROR_LENGTH = 200
_d = webhook_deliveries.c


@dataclass(frozen=True)
class WebhookSecret:
    """One signing secret of a provider; the secret itself is kept out of ``repr``."""

    secret_id: str
    created_at: datetime
    expires_at: datetime | None
    secret: str = field(repr=False)


@dataclass(frozen=True)
class WebhookDelivery:
    """Where one event's delivery stands."""

    event_id: str
    provider_id: str
    url: str
    status: str
    attempts: int
    next_attempt_at: datetime
    give_up_at: datetime | None
    delivered_at: datetime | None
    last_status_code: int | None
    last_error: str | None


@dataclass(frozen=True)
class WebhookAttempt:
    """One POST (or refusal to POST) of an event; ``outcome`` says how it went.

    Outcomes: ``delivered`` (2xx), ``rejected`` (any other status, 3xx
    included), ``timeout``, ``network_error`` (no answer), ``refused`` (the
    URL or the missing secret forbade sending; nothing was sent).
    """

    attempt: int
    url: str
    started_at: datetime
    duration_ms: int
    status_code: int | None
    error: str | None
    outcome: str


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


# -- secrets -------------------------------------------------------------------


def rotate_webhook_secret(runtime: Runtime, provider_id: str, overlap_seconds: int) -> str:
    """Create a new signing secret and return it (the only time it is shown).

    The provider's current secrets keep signing for ``overlap_seconds`` (0 ends
    them at once; one already due to expire sooner keeps its expiry). During
    the overlap every delivery carries one signature per live secret.
    """
    if not 0 <= overlap_seconds <= MAX_OVERLAP_SECONDS:
        raise errors.InvalidRequest(f"overlap must be between 0 and {MAX_OVERLAP_SECONDS} seconds")
    provider = get_provider(runtime, provider_id)
    now = runtime.now()
    cutoff = now + timedelta(seconds=overlap_seconds)
    secrets_table = provider_webhook_secrets.c
    with runtime.engine.begin() as connection:
        _lock_provider(connection, provider.provider_id)
        connection.execute(
            update(provider_webhook_secrets)
            .where(
                secrets_table.provider_id == provider.provider_id,
                or_(secrets_table.expires_at.is_(None), secrets_table.expires_at > cutoff),
            )
            .values(expires_at=cutoff)
        )
        return _insert_secret(runtime, connection, provider.provider_id, now)


def ensure_webhook_secret(runtime: Runtime, provider_id: str) -> str | None:
    """Create a signing secret if the provider has no live one; return it, else ``None``.

    For the CLI to print once when a webhook URL is first set.
    """
    provider = get_provider(runtime, provider_id)
    now = runtime.now()
    with runtime.engine.begin() as connection:
        _lock_provider(connection, provider.provider_id)
        if _live_secrets(connection, provider.provider_id, now):
            return None
        return _insert_secret(runtime, connection, provider.provider_id, now)


def live_secrets(runtime: Runtime, provider_id: str) -> list[WebhookSecret]:
    """The provider's unexpired signing secrets, newest first (empty for an unknown id)."""
    with runtime.engine.connect() as connection:
        return _live_secrets(connection, provider_id, runtime.now())


def sign_webhook(secrets: Sequence[str], event_id: str, timestamp: int, payload: str) -> str:
    """The ``webhook-signature`` value: one ``v1,<base64>`` per secret, space-separated."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    return " ".join(
        Webhook(secret).sign(msg_id=event_id, timestamp=moment, data=payload) for secret in secrets
    )


def verify_webhook(secret: str, body: bytes | str, headers: Mapping[str, str]) -> Any:
    """Verify a delivery as a receiver should and return the parsed JSON body.

    Wraps ``standardwebhooks.Webhook.verify`` (signature in constant time,
    timestamp within 5 minutes of now), which raises ``ValueError`` or
    ``UnicodeDecodeError`` on some malformed input (a non-ASCII or comma-less
    signature, a body that is not UTF-8). Here every bad delivery raises
    :class:`WebhookVerificationError`. A malformed *secret* is the receiver's
    configuration error and is not masked.
    """
    webhook = Webhook(secret)
    try:
        webhook.verify(body, dict(headers), json_parse=False)
        return json.loads(body)
    except WebhookVerificationError:
        raise
    except Exception as exc:
        raise WebhookVerificationError("malformed webhook headers or body") from exc


def _new_secret(runtime: Runtime) -> str:
    return SECRET_PREFIX + base64.b64encode(runtime.random_bytes(32)).decode("ascii")


def _insert_secret(
    runtime: Runtime, connection: Connection, provider_id: str, now: datetime
) -> str:
    secret = _new_secret(runtime)
    connection.execute(
        insert(provider_webhook_secrets).values(
            id=new_id(runtime, "whs", now),
            provider_id=provider_id,
            secret=secret,
            created_at=now,
        )
    )
    return secret


def _live_secrets(connection: Connection, provider_id: str, now: datetime) -> list[WebhookSecret]:
    table = provider_webhook_secrets.c
    rows = connection.execute(
        select(provider_webhook_secrets)
        .where(
            table.provider_id == provider_id,
            or_(table.expires_at.is_(None), table.expires_at > now),
        )
        .order_by(table.id.desc())
    ).mappings()
    return [
        WebhookSecret(
            secret_id=row["id"],
            created_at=row["created_at"],
            expires_at=row["expires_at"],
            secret=row["secret"],
        )
        for row in rows
    ]


def _lock_provider(connection: Connection, provider_id: str) -> None:
    # A no-op write takes the provider's row lock (PostgreSQL) or the write
    # lock (SQLite) first, so concurrent rotations of one provider serialise.
    connection.execute(
        update(providers)
        .where(providers.c.id == provider_id)
        .values(webhook_url=providers.c.webhook_url)
    )


# -- the queue -------------------------------------------------------------------


def enqueue_new_events(runtime: Runtime, *, max_age_seconds: int = ENQUEUE_MAX_AGE_SECONDS) -> int:
    """Queue every recent event of a provider with a webhook URL that has no delivery yet.

    One ``INSERT ... SELECT`` that skips rows another worker inserted first;
    returns how many deliveries it created. Events older than
    ``max_age_seconds`` are left to the events API.
    """
    now = runtime.now()
    source = (
        select(
            events.c.id,
            events.c.provider_id,
            providers.c.webhook_url,
            literal(PENDING),
            literal(0),
            literal(0),
            literal(now, UtcDateTime()),
            literal(now, UtcDateTime()),
        )
        .join_from(events, providers, events.c.provider_id == providers.c.id)
        .where(
            providers.c.webhook_url.is_not(None),
            events.c.created_at >= now - timedelta(seconds=max_age_seconds),
            ~exists().where(_d.event_id == events.c.id),
        )
    )
    columns = [
        "event_id",
        "provider_id",
        "url",
        "status",
        "attempts",
        "round_attempts",
        "next_attempt_at",
        "created_at",
    ]
    with runtime.engine.begin() as connection:
        # Counted with RETURNING: rowcount is unreliable for INSERT ... SELECT.
        inserted = connection.execute(
            _insert_new_only(connection, columns, source).returning(_d.event_id)
        )
        return len(inserted.all())


def redeliver(runtime: Runtime, provider_id: str, event_id: str) -> WebhookDelivery:
    """Make the event due now with a fresh retry round; same ``webhook-id`` as before.

    Works for delivered, failed and pending deliveries, and queues an event
    that has none yet. Raises :class:`errors.EventNotFound` for an event of another
    provider, :class:`errors.DeliveryInProgress` while an attempt is in flight and
    :class:`errors.WebhookNotConfigured` when the provider has no webhook URL.
    """
    provider = get_provider(runtime, provider_id)
    now = runtime.now()
    with runtime.engine.begin() as connection:
        result = connection.execute(
            update(webhook_deliveries)
            .where(
                _d.event_id == event_id,
                _d.provider_id == provider.provider_id,
                or_(_d.status != DELIVERING, _d.lease_until.is_(None), _d.lease_until < now),
            )
            .values(
                status=PENDING,
                next_attempt_at=now,
                round_attempts=0,
                give_up_at=None,
                lease_until=None,
            )
        )
        if result.rowcount == 0:
            _queue_one(connection, provider.provider_id, provider.webhook_url, event_id, now)
    return get_delivery(runtime, provider.provider_id, event_id)


def get_delivery(runtime: Runtime, provider_id: str, event_id: str) -> WebhookDelivery:
    """The delivery of one of the provider's events; :class:`errors.EventNotFound` otherwise."""
    with runtime.engine.connect() as connection:
        row = (
            connection.execute(
                select(webhook_deliveries).where(
                    _d.event_id == event_id, _d.provider_id == provider_id
                )
            )
            .mappings()
            .first()
        )
    if row is None:
        raise errors.EventNotFound(f"event {event_id!r} has no webhook delivery")
    return WebhookDelivery(
        event_id=row["event_id"],
        provider_id=row["provider_id"],
        url=row["url"],
        status=row["status"],
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"],
        give_up_at=row["give_up_at"],
        delivered_at=row["delivered_at"],
        last_status_code=row["last_status_code"],
        last_error=row["last_error"],
    )


def list_attempts(runtime: Runtime, provider_id: str, event_id: str) -> list[WebhookAttempt]:
    """Every delivery attempt of one of the provider's events, oldest first.

    Empty when the event has not been attempted; :class:`errors.EventNotFound` when
    it is not the provider's event.
    """
    attempts = webhook_attempts.c
    with runtime.engine.connect() as connection:
        owned = connection.execute(
            select(events.c.id).where(events.c.id == event_id, events.c.provider_id == provider_id)
        ).first()
        if owned is None:
            raise errors.EventNotFound(f"no event {event_id!r}")
        rows = connection.execute(
            select(webhook_attempts).where(attempts.event_id == event_id).order_by(attempts.attempt)
        ).mappings()
        return [
            WebhookAttempt(
                attempt=row["attempt"],
                url=row["url"],
                started_at=row["started_at"],
                duration_ms=row["duration_ms"],
                status_code=row["status_code"],
                error=row["error"],
                outcome=row["outcome"],
            )
            for row in rows
        ]


def delivery_report(
    runtime: Runtime, provider_id: str, event_id: str
) -> tuple[WebhookDelivery | None, list[WebhookAttempt]]:
    """An event's delivery (None if it was never queued) and its attempts.

    :class:`errors.EventNotFound` when the event is not the provider's.
    """
    attempts = list_attempts(runtime, provider_id, event_id)
    try:
        return get_delivery(runtime, provider_id, event_id), attempts
    except errors.EventNotFound:
        return None, attempts  # never queued: no webhook URL when it happened


def _queue_one(
    connection: Connection,
    provider_id: str,
    webhook_url: str | None,
    event_id: str,
    now: datetime,
) -> None:
    # The caller's update matched nothing: a row that exists is mid-attempt.
    existing = connection.execute(
        select(_d.event_id).where(_d.event_id == event_id, _d.provider_id == provider_id)
    ).first()
    if existing is not None:
        raise errors.DeliveryInProgress(
            f"event {event_id!r} is being delivered right now; try again"
        )
    owned = connection.execute(
        select(events.c.id).where(events.c.id == event_id, events.c.provider_id == provider_id)
    ).first()
    if owned is None:
        raise errors.EventNotFound(f"no event {event_id!r}")
    if webhook_url is None:
        raise errors.WebhookNotConfigured("the provider has no webhook URL")
    source = select(
        literal(event_id),
        literal(provider_id),
        literal(webhook_url),
        literal(PENDING),
        literal(0),
        literal(0),
        literal(now, UtcDateTime()),
        literal(now, UtcDateTime()),
    ).where(~exists().where(_d.event_id == event_id))
    columns = [
        "event_id",
        "provider_id",
        "url",
        "status",
        "attempts",
        "round_attempts",
        "next_attempt_at",
        "created_at",
    ]
    connection.execute(_insert_new_only(connection, columns, source))


def _insert_new_only(
    connection: Connection, columns: list[str], source: Select[*tuple[Any, ...]]
) -> Insert:
    # NOT EXISTS alone races between workers; ON CONFLICT settles the race.
    dialect = connection.dialect.name
    if dialect == "postgresql":
        return (
            postgresql.insert(webhook_deliveries)
            .from_select(columns, source)
            .on_conflict_do_nothing(index_elements=["event_id"])
        )
    if dialect == "sqlite":
        return (
            sqlite.insert(webhook_deliveries)
            .from_select(columns, source)
            .on_conflict_do_nothing(index_elements=["event_id"])
        )
    return insert(webhook_deliveries).from_select(columns, source)


# -- delivering ----------------------------------------------------------------


def make_webhook_client() -> httpx.Client:
    """The HTTP client for webhook delivery: no redirects, no proxy settings from the env."""
    return httpx.Client(trust_env=False, follow_redirects=False, timeout=DEFAULT_TIMEOUT_SECONDS)


def retry_delay(failed_attempts: int, random_bytes: RandomBytes) -> timedelta:
    """The wait after the ``failed_attempts``-th failure of a round (full jitter)."""
    exponent = min(max(failed_attempts, 1) - 1, 20)
    ceiling = min(RETRY_CAP_SECONDS, RETRY_BASE_SECONDS * 2**exponent)
    fraction = int.from_bytes(random_bytes(8), "big") / 2**64
    return timedelta(seconds=ceiling * fraction)


def resolve_host(host: str) -> list[str]:
    """The addresses ``host`` resolves to (raises ``OSError`` when it does not)."""
    infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


@dataclass(frozen=True)
class _Result:
    url: str
    started_at: datetime
    duration_ms: int
    status_code: int | None
    error: str | None
    outcome: str


@dataclass(frozen=True)
class _Pass:
    runtime: Runtime
    client: httpx.Client
    clock: Callable[[], datetime]
    timeout_seconds: float
    resolve: Callable[[str], Sequence[str]]

    @property
    def lease(self) -> timedelta:
        # httpx times connect, write and read separately: leave room for all.
        return timedelta(seconds=60 + 4 * self.timeout_seconds)


def deliver_due(
    runtime: Runtime,
    http_client: httpx.Client,
    *,
    max_parallel: int = 8,
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    now: datetime | None = None,
    limit: int = 500,
    resolve: Callable[[str], Sequence[str]] = resolve_host,
) -> DeliveryPass:
    """Attempt every due delivery once: in parallel across providers, one at a time per provider.

    ``now`` replaces the runtime's clock for the whole pass. ``timeout_seconds``
    bounds each phase of one attempt (connect, send, wait for the answer).
    ``resolve`` turns a host name into addresses for the private-target check.
    """
    context = _Pass(
        runtime=runtime,
        client=http_client,
        clock=(lambda: now) if now is not None else runtime.now,
        timeout_seconds=timeout_seconds,
        resolve=resolve,
    )
    moment = context.clock()
    with runtime.engine.connect() as connection:
        due = connection.execute(
            select(_d.event_id, _d.provider_id, _d.attempts)
            .where(_claimable(moment))
            .order_by(_d.next_attempt_at, _d.event_id)
            .limit(limit)
        ).all()
    by_provider: dict[str, list[tuple[str, int]]] = {}
    for event_id, provider_id, attempts in due:
        by_provider.setdefault(provider_id, []).append((event_id, attempts))
    tally: Counter[str] = Counter()
    if by_provider:
        workers = max(1, min(max_parallel, len(by_provider)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="webhook") as pool:
            futures = [
                pool.submit(_deliver_for_provider, context, provider_id, rows)
                for provider_id, rows in by_provider.items()
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


def _claimable(moment: datetime) -> ColumnElement[bool]:
    return or_(
        and_(
            _d.status == PENDING,
            _d.next_attempt_at <= moment,
            or_(_d.lease_until.is_(None), _d.lease_until < moment),
        ),
        # An attempt whose worker died: its lease ran out, so try again.
        and_(_d.status == DELIVERING, _d.lease_until < moment),
    )


def _deliver_for_provider(
    context: _Pass, provider_id: str, rows: list[tuple[str, int]]
) -> list[str]:
    labels: list[str] = []
    for event_id, attempts in rows:
        try:
            labels.extend(_deliver_one(context, event_id, attempts))
        except Exception:
            logger.exception("webhook delivery of %s to %s broke off", event_id, provider_id)
            labels.append("errors")
    return labels


def _deliver_one(context: _Pass, event_id: str, seen_attempts: int) -> list[str]:
    runtime = context.runtime
    moment = context.clock()
    attempt = seen_attempts + 1
    with runtime.engine.begin() as connection:
        claimed = connection.execute(
            update(webhook_deliveries)
            .where(
                _d.event_id == event_id,
                _d.attempts == seen_attempts,
                _claimable(moment),
            )
            .values(
                status=DELIVERING,
                lease_until=moment + context.lease,
                attempts=attempt,
                round_attempts=_d.round_attempts + 1,
                give_up_at=case(
                    (_d.round_attempts == 0, moment + timedelta(seconds=GIVE_UP_AFTER_SECONDS)),
                    else_=func.coalesce(
                        _d.give_up_at, moment + timedelta(seconds=GIVE_UP_AFTER_SECONDS)
                    ),
                ),
            )
        )
    if claimed.rowcount != 1:
        return ["lost"]
    with runtime.engine.connect() as connection:
        row = (
            connection.execute(
                select(
                    _d.provider_id,
                    _d.url,
                    _d.round_attempts,
                    _d.give_up_at,
                    events.c.payload,
                    providers.c.webhook_url,
                    providers.c.development,
                )
                .join_from(webhook_deliveries, events, events.c.id == _d.event_id)
                .join(providers, providers.c.id == _d.provider_id)
                .where(_d.event_id == event_id)
            )
            .mappings()
            .one()
        )
        secrets = _live_secrets(connection, row["provider_id"], moment)
    url: str | None = row["webhook_url"]
    refusal = _refusal(context, url, row["development"])
    if refusal is None and not secrets:
        refusal = ("refused", "the provider has no live webhook signing secret")
    if refusal is not None or url is None:
        outcome, error = refusal or ("refused", "the provider has no webhook URL")
        result = _Result(url or row["url"], context.clock(), 0, None, error, outcome)
    else:
        result = _post(context, url, event_id, row["payload"], [s.secret for s in secrets])
    label = _finish(context, event_id, attempt, row["round_attempts"], row["give_up_at"], result)
    return [label, "refused"] if result.outcome == "refused" else [label]


def _refusal(context: _Pass, url: str | None, development: bool) -> tuple[str, str] | None:
    if url is None:
        return ("refused", "the provider has no webhook URL")
    try:
        parsed = parse_callback_url(url, development=development)
    except errors.CallbackUrlRejected as exc:
        return ("refused", f"webhook URL refused: {exc.code}")
    if development:
        return None
    if parsed.is_loopback:
        return ("refused", "webhook URL refused: loopback target")
    try:
        addresses: Sequence[str] = [str(ipaddress.ip_address(parsed.host))]
    except ValueError:
        try:
            addresses = context.resolve(parsed.host)
        except OSError as exc:
            return ("network_error", _short(f"cannot resolve {parsed.host}: {exc}"))
    for address in addresses:
        if not ipaddress.ip_address(address).is_global:
            return ("refused", f"webhook URL refused: {parsed.host} is not a public address")
    return None


def _post(context: _Pass, url: str, event_id: str, payload: str, secrets: list[str]) -> _Result:
    started_at = context.clock()
    timestamp = int(started_at.timestamp())
    headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": event_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign_webhook(secrets, event_id, timestamp, payload),
    }
    began = time.monotonic()
    status_code: int | None = None
    error: str | None = None
    try:
        # Streaming, and closing without reading: a receiver cannot make us
        # download a large answer.
        with context.client.stream(
            "POST",
            url,
            content=payload.encode("utf-8"),
            headers=headers,
            timeout=context.timeout_seconds,
            follow_redirects=False,
        ) as response:
            status_code = response.status_code
    except httpx.TimeoutException:
        outcome, error = "timeout", f"no answer within {context.timeout_seconds:g} s"
    except httpx.HTTPError as exc:
        outcome, error = "network_error", _short(f"{type(exc).__name__}: {exc}")
    else:
        if 200 <= status_code < 300:
            outcome = "delivered"
        elif 300 <= status_code < 400:
            outcome, error = "rejected", f"redirect (HTTP {status_code}) not followed"
        else:
            outcome, error = "rejected", f"HTTP {status_code}"
    duration_ms = int((time.monotonic() - began) * 1000)
    return _Result(url, started_at, duration_ms, status_code, error, outcome)


def _finish(
    context: _Pass,
    event_id: str,
    attempt: int,
    round_attempts: int,
    give_up_at: datetime,
    result: _Result,
) -> str:
    runtime = context.runtime
    finished = context.clock()
    values: dict[str, Any] = {
        "url": result.url,
        "lease_until": None,
        "last_status_code": result.status_code,
        "last_error": result.error,
    }
    if result.outcome == "delivered":
        label = "delivered"
        values.update(status=DELIVERED, delivered_at=finished)
    elif finished >= give_up_at:
        label = "gave_up"
        values.update(status=FAILED)
    else:
        label = "retrying"
        retry_at = finished + retry_delay(round_attempts, runtime.random_bytes)
        values.update(status=PENDING, next_attempt_at=min(retry_at, give_up_at))
    with runtime.engine.begin() as connection:
        connection.execute(
            insert(webhook_attempts).values(
                id=new_id(runtime, "wha", result.started_at),
                event_id=event_id,
                attempt=attempt,
                url=result.url,
                started_at=result.started_at,
                duration_ms=result.duration_ms,
                status_code=result.status_code,
                error=result.error,
                outcome=result.outcome,
            )
        )
        updated = connection.execute(
            update(webhook_deliveries)
            .where(
                _d.event_id == event_id,
                _d.attempts == attempt,
                _d.status == DELIVERING,
            )
            .values(**values)
        )
    if updated.rowcount != 1:
        # Our lease ran out and another worker took over: its attempt decides.
        logger.warning("webhook attempt %s of %s finished after its lease", attempt, event_id)
    return label


def _short(text: str) -> str:
    return text if len(text) <= _ERROR_LENGTH else text[: _ERROR_LENGTH - 1] + "…"
