"""The invariant checker itself: it must see every way an outcome can be lost or doubled."""

from __future__ import annotations

import pytest

from tests.faults.invariant import ItemRecord, item_violations

pytestmark = pytest.mark.faults


def record(**changes: object) -> ItemRecord:
    """A LOGIN action item completed once: one result, one event, one spent flow."""
    values: dict[str, object] = {
        "item_id": "act_1",
        "action_type": "LOGIN_ENTERPRISE_ADMIN",
        "status": "completed",
        "error_code": None,
        "results": 1,
        "events": ("actionItem.completed",),
        "flows": 1,
        "spent_flows": 1,
    }
    values.update(changes)
    return ItemRecord(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("broken", "complaint"),
    [
        (record(status="opened", results=0, events=()), "a spent flow but no outcome"),
        (record(results=0), "0 results"),
        (record(results=2), "2 results"),
        (record(status="opened", spent_flows=0, results=1, events=()), "results without"),
        (record(status="failed", events=("actionItem.failed",)), "without an error code"),
        (record(events=("actionItem.completed", "actionItem.completed")), "more than once"),
        (record(events=("actionItem.failed", "actionItem.completed")), "outcome events"),
        (record(events=()), "outcome events"),
        (record(status="opened", spent_flows=0, results=0), "without an outcome"),
        (
            record(action_type="REGISTRATION", events=("actionItem.completed",)),
            "enterprise.registered",
        ),
    ],
)
def test_invariant_flags_every_lost_or_doubled_outcome(broken: ItemRecord, complaint: str) -> None:
    """Each broken record is reported, with a message that says how it is broken."""
    problems = item_violations(broken)
    assert any(complaint in problem for problem in problems), problems


@pytest.mark.parametrize(
    "sound",
    [
        record(),
        record(status="failed", error_code="MICROSOFT_UNAVAILABLE", events=("actionItem.failed",)),
        record(status="opened", spent_flows=0, results=0, events=()),
        record(status="created", flows=0, spent_flows=0, results=0, events=()),
        record(
            action_type="GET_PRESENCE_CONSENT",
            status="pending",
            events=("actionItem.pending", "consent.pending"),
        ),
        record(
            action_type="GET_PRESENCE_CONSENT",
            events=(
                "actionItem.pending",
                "consent.pending",
                "actionItem.completed",
                "consent.granted",
            ),
        ),
        record(
            action_type="REGISTRATION", events=("actionItem.completed", "enterprise.registered")
        ),
    ],
)
def test_invariant_accepts_every_sound_lifecycle(sound: ItemRecord) -> None:
    """An item left open before Microsoft, or finished once (also in the background), passes."""
    assert item_violations(sound) == []
