"""The rule every fault test ends with, read from the database.

Every action item that reached Microsoft ends with exactly one outcome (a final status and one
result) and one event set, and no 500 reaches a browser. :func:`invariant_violations` lists how
a provider's items break it (empty when they do not); :func:`settle` gives the broker and its
workers a bounded time to finish interrupted work first.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, text

from tests.faults.servers import wait_until
from tests.faults.stack import Browser, Provider, Stack

FINAL = ("completed", "failed", "pending")


@dataclass(frozen=True)
class ItemRecord:
    """What the database holds about one action item."""

    item_id: str
    action_type: str
    status: str
    error_code: str | None
    results: int
    events: tuple[str, ...]
    flows: int
    spent_flows: int


def item_records(engine: Engine, provider_id: str) -> dict[str, ItemRecord]:
    """Every action item of ``provider_id`` with its results, events and flows."""
    with engine.connect() as connection:
        items = connection.execute(
            text(
                "SELECT id, action_type, status, error_code FROM action_items "
                "WHERE provider_id = :provider ORDER BY id"
            ),
            {"provider": provider_id},
        ).all()
        results: dict[str, int] = dict(
            connection.execute(
                text(
                    "SELECT action_item_id, count(*) FROM results "
                    "WHERE provider_id = :provider GROUP BY action_item_id"
                ),
                {"provider": provider_id},
            ).all()
        )
        events: dict[str, list[str]] = {}
        for item_id, event_type in connection.execute(
            text(
                "SELECT action_item_id, type FROM events "
                "WHERE provider_id = :provider AND action_item_id IS NOT NULL ORDER BY id"
            ),
            {"provider": provider_id},
        ).all():
            events.setdefault(item_id, []).append(event_type)
        flows = {
            item_id: (total, spent)
            for item_id, total, spent in connection.execute(
                text(
                    "SELECT f.action_item_id, count(*), count(f.consumed_at) FROM flows f "
                    "JOIN action_items a ON a.id = f.action_item_id "
                    "WHERE a.provider_id = :provider GROUP BY f.action_item_id"
                ),
                {"provider": provider_id},
            ).all()
        }
    return {
        item_id: ItemRecord(
            item_id=item_id,
            action_type=action_type,
            status=status,
            error_code=error_code,
            results=int(results.get(item_id, 0)),
            events=tuple(events.get(item_id, ())),
            flows=int(flows.get(item_id, (0, 0))[0]),
            spent_flows=int(flows.get(item_id, (0, 0))[1]),
        )
        for item_id, action_type, status, error_code in items
    }


def item_violations(record: ItemRecord) -> list[str]:
    """How one action item breaks "one outcome and one event set", if it does."""
    problems: list[str] = []
    name = f"{record.item_id} ({record.action_type}, {record.status})"
    final = record.status in FINAL
    if record.spent_flows and not final:
        problems.append(f"{name}: a spent flow but no outcome")
    if final and record.results != 1:
        problems.append(f"{name}: {record.results} results, expected exactly 1")
    if not final and record.results:
        problems.append(f"{name}: {record.results} results without an outcome")
    if record.status == "failed" and not record.error_code:
        problems.append(f"{name}: failed without an error code")
    counts = Counter(record.events)
    doubled = sorted(event for event, count in counts.items() if count > 1)
    if doubled:
        problems.append(f"{name}: events sent more than once: {doubled}")
    item_events = tuple(event for event in record.events if event.startswith("actionItem."))
    if final:
        # One outcome event; a consent confirmed in the background was announced pending first.
        allowed: set[tuple[str, ...]] = {(f"actionItem.{record.status}",)}
        if record.status != "pending":
            allowed.add(("actionItem.pending", f"actionItem.{record.status}"))
        if item_events not in allowed:
            problems.append(f"{name}: outcome events {list(item_events)}")
    elif record.events:
        problems.append(f"{name}: events {list(record.events)} without an outcome")
    registered = counts["enterprise.registered"]
    if record.action_type == "REGISTRATION" and record.status == "completed" and registered != 1:
        problems.append(f"{name}: enterprise.registered sent {registered} times")
    return problems


def invariant_violations(
    stack: Stack,
    provider: Provider,
    *,
    settled: Iterable[str] = (),
    browsers: Iterable[Browser] = (),
) -> list[str]:
    """Every action item that reached Microsoft ends with exactly one outcome and one event set,
    and no 500 reached a browser.

    ``settled`` names items whose round trip is over (a callback was sent): each must have its
    outcome. Items never sent back may stay ``opened``, but only without a spent flow.
    """
    records = item_records(stack.engine, provider.provider_id)
    problems = [problem for record in records.values() for problem in item_violations(record)]
    for item_id in settled:
        record = records.get(item_id)
        if record is None:
            problems.append(f"{item_id}: not in the database")
        elif record.status not in FINAL:
            problems.append(f"{item_id}: round trip over but still {record.status}")
    for browser in browsers:
        problems.extend(
            f"a browser got 500 from {a.instance}{a.path}" for a in browser.server_errors()
        )
    return problems


def settle(stack: Stack, provider: Provider, seconds: float, **checks: Any) -> list[str]:
    """The invariant's violations once they are gone, or those left after ``seconds``.

    The broker and its workers may finish an interrupted outcome in the background; this gives
    them a bounded time to do it.
    """
    problems: list[str] = []

    def clean() -> bool:
        nonlocal problems
        try:
            problems = invariant_violations(stack, provider, **checks)
        except Exception as exc:  # the database may still be recovering
            problems = [f"cannot read the database: {type(exc).__name__}"]
        return not problems

    wait_until(clean, seconds, interval=0.25)
    return problems
