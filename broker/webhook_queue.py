"""The webhook delivery queue: which event goes out next, and what each attempt did.

Every event a provider must learn of is already in the ``events`` table,
written in the transaction that made the change. The queue tracks its push:

* :func:`enqueue_new_events` gives each new event of a provider with a webhook
  URL one row in ``webhook_deliveries`` (idempotent, safe with many workers).
* :func:`claim_delivery` takes a due row with a short lease (a conditional
  update, so two workers never send the same attempt at once);
  :func:`finish_attempt` records the attempt in ``webhook_attempts`` and sets
  the next one. The sender (:mod:`broker.webhook_sender`) sits between them.
* :func:`redeliver` (one event) and :func:`redeliver_pending` (a provider's
  backlog) make events due now; the ``webhook-id`` stays the event id, so a
  receiver dedupes on it: delivery is at least once.

Retry schedule. A *round* starts with the first attempt (or a redelivery).
After the n-th failed attempt of a round the next one waits a random delay in
``[0, min(6 h, 30 s * 2**(n-1))]`` ("full jitter"). Retries never go past 24 h
after the round started: the next attempt is moved back to that moment, so
there is always a last attempt exactly 24 h in, and an attempt that fails at
or after it ends the round as ``failed``.

Recovery. A 2xx from a provider's endpoint shows it is back: every other
pending event of that provider becomes due at once instead of waiting out its
backoff.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

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

from broker import errors
from broker.db import UtcDateTime, events, providers, webhook_attempts, webhook_deliveries
from broker.event_sealing import erase_sealed_tokens, open_event_body
from broker.ids import new_id
from broker.providers import get_provider
from broker.runtime import Runtime
from broker.timestamps import rfc3339_parameter
from broker.tokens import RandomBytes
from broker.webhook_secrets import live_secrets_at

RETRY_BASE_SECONDS = 30
RETRY_CAP_SECONDS = 6 * 3600
GIVE_UP_AFTER_SECONDS = 24 * 3600
# A provider that sets a webhook URL late is not flooded with its history:
# older events stay readable through the events API.
ENQUEUE_MAX_AGE_SECONDS = 24 * 3600

PENDING = "pending"
DELIVERING = "delivering"
DELIVERED = "delivered"
FAILED = "failed"

# What an attempt's ``error`` may say: a coarse class, never the socket's own
# message, so the attempts API cannot map a network (no port-scan oracle).
ERROR_CLASSES = ("timeout", "refused", "tls", "http_status", "dns", "blocked", "network")

_d = webhook_deliveries.c
_COLUMNS = [
    "event_id",
    "provider_id",
    "url",
    "status",
    "attempts",
    "round_attempts",
    "next_attempt_at",
    "created_at",
]


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
    URL or the missing secret forbade sending; nothing was sent). ``error`` is
    one of :data:`ERROR_CLASSES` or ``None``.
    """

    attempt: int
    url: str
    started_at: datetime
    duration_ms: int
    status_code: int | None
    error: str | None
    outcome: str


@dataclass(frozen=True)
class DueDelivery:
    """A delivery whose next attempt is due, as seen before claiming it."""

    event_id: str
    provider_id: str
    attempts: int


@dataclass(frozen=True)
class Claim:
    """A delivery this worker holds the lease on, with what it needs to send it."""

    event_id: str
    provider_id: str
    attempt: int
    round_attempts: int
    give_up_at: datetime
    previous_url: str
    webhook_url: str | None
    development: bool
    body: str
    secrets: tuple[str, ...]

    def __repr__(self) -> str:  # the body may carry tokens, the secrets sign
        return f"Claim(event_id={self.event_id!r}, attempt={self.attempt})"


@dataclass(frozen=True)
class AttemptResult:
    """What one attempt did; ``error`` is a coarse class from :data:`ERROR_CLASSES`."""

    url: str
    started_at: datetime
    duration_ms: int
    status_code: int | None
    error: str | None
    outcome: str


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
    with runtime.engine.begin() as connection:
        # Counted with RETURNING: rowcount is unreliable for INSERT ... SELECT.
        inserted = connection.execute(_insert_new_only(connection, source).returning(_d.event_id))
        return len(inserted.all())


def due_deliveries(runtime: Runtime, moment: datetime, *, limit: int) -> list[DueDelivery]:
    """Deliveries due at ``moment``, oldest due first."""
    query = select(_d.event_id, _d.provider_id, _d.attempts).where(_claimable(moment))
    with runtime.engine.connect() as connection:
        rows = connection.execute(
            query.order_by(_d.next_attempt_at, _d.event_id).limit(limit)
        ).all()
    return [DueDelivery(row.event_id, row.provider_id, row.attempts) for row in rows]


def next_due_per_provider(
    runtime: Runtime, moment: datetime, *, skip_providers: frozenset[str], limit: int
) -> list[DueDelivery]:
    """Each provider's earliest due delivery (one per provider), leaving out ``skip_providers``.

    A provider with a long backlog shows up once, so it cannot hide the others.
    """
    earliest = func.min(_d.next_attempt_at)
    providers_due = select(_d.provider_id).where(_claimable(moment)).group_by(_d.provider_id)
    if skip_providers:
        providers_due = providers_due.where(_d.provider_id.not_in(sorted(skip_providers)))
    found: list[DueDelivery] = []
    with runtime.engine.connect() as connection:
        for provider_id in connection.execute(
            providers_due.order_by(earliest, _d.provider_id).limit(limit)
        ).scalars():
            row = connection.execute(
                select(_d.event_id, _d.attempts)
                .where(_d.provider_id == provider_id, _claimable(moment))
                .order_by(_d.next_attempt_at, _d.event_id)
                .limit(1)
            ).first()
            if row is not None:
                found.append(DueDelivery(row.event_id, provider_id, row.attempts))
    return found


def claim_delivery(
    runtime: Runtime, due: DueDelivery, moment: datetime, lease: timedelta
) -> Claim | None:
    """Take the lease on a due delivery; ``None`` when another worker took it first."""
    attempt = due.attempts + 1
    give_up = moment + timedelta(seconds=GIVE_UP_AFTER_SECONDS)
    with runtime.engine.begin() as connection:
        claimed = connection.execute(
            update(webhook_deliveries)
            .where(
                _d.event_id == due.event_id,
                _d.attempts == due.attempts,
                _claimable(moment),
            )
            .values(
                status=DELIVERING,
                lease_until=moment + lease,
                attempts=attempt,
                round_attempts=_d.round_attempts + 1,
                give_up_at=case(
                    (_d.round_attempts == 0, give_up),
                    else_=func.coalesce(_d.give_up_at, give_up),
                ),
            )
        )
        if claimed.rowcount != 1:
            return None
        row = (
            connection.execute(
                select(
                    _d.provider_id,
                    _d.url,
                    _d.round_attempts,
                    _d.give_up_at,
                    events.c.payload,
                    events.c.sealed_tokens,
                    providers.c.webhook_url,
                    providers.c.development,
                )
                .join_from(webhook_deliveries, events, events.c.id == _d.event_id)
                .join(providers, providers.c.id == _d.provider_id)
                .where(_d.event_id == due.event_id)
            )
            .mappings()
            .one()
        )
        secrets = live_secrets_at(connection, row["provider_id"], moment)
    return Claim(
        event_id=due.event_id,
        provider_id=row["provider_id"],
        attempt=attempt,
        round_attempts=row["round_attempts"],
        give_up_at=row["give_up_at"],
        previous_url=row["url"],
        webhook_url=row["webhook_url"],
        development=row["development"],
        body=open_event_body(runtime, row["payload"], row["sealed_tokens"]),
        secrets=tuple(s.secret for s in secrets),
    )


def finish_attempt(runtime: Runtime, claim: Claim, result: AttemptResult) -> str:
    """Record the attempt and set what happens next; returns the pass label.

    ``delivered`` also brings the provider's other pending events forward (its
    endpoint is back) and, like ``gave_up``, erases the event's sealed tokens.
    ``retrying`` schedules the next attempt with full jitter.
    """
    finished = runtime.now()
    values: dict[str, Any] = {
        "url": result.url,
        "lease_until": None,
        "last_status_code": result.status_code,
        "last_error": result.error,
    }
    if result.outcome == "delivered":
        label = "delivered"
        values.update(status=DELIVERED, delivered_at=finished)
    elif finished >= claim.give_up_at:
        label = "gave_up"
        values.update(status=FAILED)
    else:
        label = "retrying"
        retry_at = finished + retry_delay(claim.round_attempts, runtime.random_bytes)
        values.update(status=PENDING, next_attempt_at=min(retry_at, claim.give_up_at))
    with runtime.engine.begin() as connection:
        connection.execute(
            insert(webhook_attempts).values(
                id=new_id(runtime, "wha", result.started_at),
                event_id=claim.event_id,
                attempt=claim.attempt,
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
                _d.event_id == claim.event_id,
                _d.attempts == claim.attempt,
                _d.status == DELIVERING,
            )
            .values(**values)
        )
        if updated.rowcount != 1:
            # Our lease ran out and another worker took over: its attempt decides.
            return "lost"
        if label != "retrying":
            erase_sealed_tokens(connection, [claim.event_id])
        if label == "delivered":
            _bring_forward(connection, claim.provider_id, finished)
    return label


def retry_delay(failed_attempts: int, random_bytes: RandomBytes) -> timedelta:
    """The wait after the ``failed_attempts``-th failure of a round (full jitter)."""
    exponent = min(max(failed_attempts, 1) - 1, 20)
    ceiling = min(RETRY_CAP_SECONDS, RETRY_BASE_SECONDS * 2**exponent)
    fraction = int.from_bytes(random_bytes(8), "big") / 2**64
    return timedelta(seconds=ceiling * fraction)


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
                _not_in_flight(now),
            )
            .values(**_fresh_round(now))
        )
        if result.rowcount == 0:
            _queue_one(connection, provider.provider_id, provider.webhook_url, event_id, now)
    return get_delivery(runtime, provider.provider_id, event_id)


def redeliver_pending(
    runtime: Runtime,
    provider_id: str,
    *,
    since: str | None = None,
    until: str | None = None,
    include_failed: bool = True,
) -> int:
    """Make every pending (and, by default, failed) delivery of the provider due now.

    ``since``/``until`` (RFC 3339) bound the events' creation time (``until``
    excluded); a malformed time is :class:`errors.InvalidRequest`.
    Each gets a fresh retry round; attempts in flight are left alone. Returns
    how many deliveries were rescheduled. :class:`errors.WebhookNotConfigured`
    when the provider has no webhook URL.
    """
    provider = get_provider(runtime, provider_id)
    if provider.webhook_url is None:
        raise errors.WebhookNotConfigured("the provider has no webhook URL")
    now = runtime.now()
    statuses = [PENDING, FAILED] if include_failed else [PENDING]
    in_range = select(events.c.id).where(events.c.provider_id == provider.provider_id)
    if since:
        in_range = in_range.where(events.c.created_at >= rfc3339_parameter("since", since))
    if until:
        in_range = in_range.where(events.c.created_at < rfc3339_parameter("until", until))
    with runtime.engine.begin() as connection:
        result = connection.execute(
            update(webhook_deliveries)
            .where(
                _d.provider_id == provider.provider_id,
                _d.status.in_(statuses),
                _d.event_id.in_(in_range.scalar_subquery()),
                _not_in_flight(now),
            )
            .values(**_fresh_round(now))
        )
    return int(result.rowcount)


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


def _bring_forward(connection: Connection, provider_id: str, now: datetime) -> None:
    connection.execute(
        update(webhook_deliveries)
        .where(
            _d.provider_id == provider_id,
            _d.status == PENDING,
            _d.next_attempt_at > now,
        )
        .values(next_attempt_at=now)
    )


def _fresh_round(now: datetime) -> dict[str, Any]:
    return {
        "status": PENDING,
        "next_attempt_at": now,
        "round_attempts": 0,
        "give_up_at": None,
        "lease_until": None,
    }


def _not_in_flight(now: datetime) -> ColumnElement[bool]:
    return or_(_d.status != DELIVERING, _d.lease_until.is_(None), _d.lease_until < now)


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
    connection.execute(_insert_new_only(connection, source))


def _insert_new_only(connection: Connection, source: Select[*tuple[Any, ...]]) -> Insert:
    # NOT EXISTS alone races between workers; ON CONFLICT settles the race.
    dialect = connection.dialect.name
    if dialect == "postgresql":
        return (
            postgresql.insert(webhook_deliveries)
            .from_select(_COLUMNS, source)
            .on_conflict_do_nothing(index_elements=["event_id"])
        )
    if dialect == "sqlite":
        return (
            sqlite.insert(webhook_deliveries)
            .from_select(_COLUMNS, source)
            .on_conflict_do_nothing(index_elements=["event_id"])
        )
    return insert(webhook_deliveries).from_select(_COLUMNS, source)
