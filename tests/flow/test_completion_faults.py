"""The database fails at each step of a callback's completion: no outcome is ever lost.

A :class:`FailingDatabase` is an engine of its own on the test database whose
``n``-th statement or commit raises, as PostgreSQL going away would. The
runtime that completes the flow is given that engine (nothing is patched).
After each failure the database is "back" (the healthy runtime) and either the
admin's refresh or the worker finishes the job. Then the invariant holds:
every action item that reached Microsoft ends with exactly one outcome and one
event set, and no flow is spent without an outcome.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import Engine, event, func, select
from sqlalchemy.exc import OperationalError

from broker import errors, flows
from broker.db import action_items, audit_log, events, make_engine
from broker.db import flows as flows_table
from broker.flow_store import claim_lease
from broker.lifecycle import FINISHED_ITEM_STATES, fail_abandoned_flows
from broker.outcomes import write_delays
from broker.runtime import Runtime
from tests.conftest import Database
from tests.flow.conftest import CONTOSO_ADMIN, World


class FailingDatabase:
    """An engine whose ``fail_at``-th step (a statement or a commit) raises, once."""

    def __init__(self, url: str) -> None:
        self.engine: Engine = make_engine(url)
        self.steps = 0
        self.fail_at: int | None = None
        self.failed = False
        event.listen(self.engine, "before_cursor_execute", self._step)
        event.listen(self.engine, "commit", self._step)

    def arm(self, fail_at: int | None) -> None:
        self.steps, self.fail_at, self.failed = 0, fail_at, False

    def _step(self, *_: Any, **__: Any) -> None:
        self.steps += 1
        if self.steps == self.fail_at:
            self.failed = True
            raise OperationalError("injected", None, ConnectionError("the database went away"))


def down_for_good(runtime: Runtime, engine: Engine) -> Runtime:
    """``runtime`` on ``engine``, giving up at the first failed write: the database stays down."""
    patient = replace(runtime.settings, outcome_write_patience_seconds=0)
    return replace(runtime, engine=engine, settings=patient)


@pytest.fixture
def failing(database: Database) -> Iterator[FailingDatabase]:
    faulty = FailingDatabase(database.url)
    yield faulty
    faulty.engine.dispose()


def at_callback(world: World, action_type: str) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """A flow up to Microsoft's answer: the callback's query and the browser's cookies."""
    # reregister: each round registers the same enterprise again.
    extra = {"reregister": True} if action_type == "REGISTRATION" else {}
    launched = world.broker.get(
        urlsplit(world.link(action_type, **extra)["url"]).path, follow_redirects=False
    )
    name, value = launched.headers["set-cookie"].split(";", 1)[0].split("=", 1)
    params = world.at_microsoft(launched.headers["location"], CONTOSO_ADMIN)
    return list(params.items()), {name: value}


def assert_one_outcome_per_flow(runtime: Runtime) -> None:
    """Every item whose flow came back ended once, with one event set; no orphan spent flow."""
    with runtime.engine.connect() as connection:
        returned_items = set(
            connection.execute(
                select(flows_table.c.action_item_id).where(flows_table.c.claim_token.is_not(None))
            ).scalars()
        )
        for item_id, status in connection.execute(
            select(action_items.c.id, action_items.c.status).where(
                action_items.c.id.in_(returned_items)
            )
        ):
            assert status in FINISHED_ITEM_STATES, (item_id, status)
            outcome_events = connection.execute(
                select(func.count())
                .select_from(events)
                .where(events.c.action_item_id == item_id, events.c.type.like("actionItem.%"))
            ).scalar_one()
            outcome_audits = connection.execute(
                select(func.count())
                .select_from(audit_log)
                .where(
                    audit_log.c.action_item_id == item_id,
                    audit_log.c.action.in_([f"actionItem.{s}" for s in FINISHED_ITEM_STATES]),
                )
            ).scalar_one()
            assert (outcome_events, outcome_audits) == (1, 1), item_id
        spent_without_outcome = connection.execute(
            select(func.count())
            .select_from(flows_table.join(action_items))
            .where(
                flows_table.c.consumed_at.is_not(None),
                action_items.c.status.in_(("created", "opened")),
            )
        ).scalar_one()
        assert spent_without_outcome == 0


def complete_with_fault(
    world: World, failing: FailingDatabase, action_type: str, fail_at: int
) -> tuple[list[tuple[str, str]], dict[str, str], bool]:
    """Complete one flow on the failing engine; returns its query, cookies and if it failed."""
    pairs, cookies = at_callback(world, action_type)
    failing.arm(fail_at)
    try:
        flows.complete(down_for_good(world.runtime, failing.engine), pairs, cookies)
    except OperationalError:
        assert failing.failed
    failed = failing.failed
    failing.arm(None)
    return pairs, cookies, failed


@pytest.mark.parametrize("action_type", ["REGISTRATION", "GET_PRESENCE_CONSENT"])
def test_database_failing_at_any_completion_step_is_finished_by_the_admins_refresh(
    world: World, failing: FailingDatabase, action_type: str
) -> None:
    """The database drops out at step n of the callback; the admin's refresh later ends it."""
    if action_type != "REGISTRATION":
        world.register()
    fail_at = 1
    while True:
        pairs, cookies, failed = complete_with_fault(world, failing, action_type, fail_at)
        if not failed:
            break  # past the last step: this completion simply succeeded
        try:
            done = flows.complete(world.runtime, pairs, cookies)
        except errors.FlowInProgress:
            world.clock.advance(seconds=claim_lease(world.runtime.settings).total_seconds() + 1)
            done = flows.complete(world.runtime, pairs, cookies)
        assert done.outcome.status in ("completed", "failed")
        with pytest.raises(errors.StateReplayed):
            flows.complete(world.runtime, pairs, cookies)
        fail_at += 1
    assert fail_at > 5, "completion takes more than a handful of database steps"
    assert_one_outcome_per_flow(world.runtime)


def test_database_failing_after_microsoft_redeemed_the_code_reports_invalid_grant(
    world: World, failing: FailingDatabase
) -> None:
    """The issue's reproduction: Microsoft redeemed the code, then the outcome's commit failed.

    Before: the item stayed ``opened``, its flow spent, and a refresh said STATE_REPLAYED.
    Now: the refresh is asked to wait out the claim, then records Microsoft's invalid_grant.
    """
    pairs, cookies = at_callback(world, "REGISTRATION")
    failing.arm(None)
    faulty = down_for_good(world.runtime, failing.engine)
    event.listen(failing.engine, "commit", _fail_the_outcome_commit(failing))
    with pytest.raises(OperationalError):
        flows.complete(faulty, pairs, cookies)
    with pytest.raises(errors.FlowInProgress):
        flows.complete(world.runtime, pairs, cookies)
    world.clock.advance(seconds=claim_lease(world.runtime.settings).total_seconds() + 1)
    done = flows.complete(world.runtime, pairs, cookies)
    assert (done.outcome.status, done.outcome.error_code) == ("failed", "INVALID_GRANT")
    assert_one_outcome_per_flow(world.runtime)


def test_database_back_within_the_patience_gets_the_admin_the_outcome_at_once(
    world: World, failing: FailingDatabase
) -> None:
    """The outcome's commit fails once (PostgreSQL restarting): the broker tries again and the
    admin goes back to the provider with the outcome in the same request, no reload needed."""
    pairs, cookies = at_callback(world, "REGISTRATION")
    failing.arm(None)
    event.listen(failing.engine, "commit", _fail_the_outcome_commit(failing))
    done = flows.complete(replace(world.runtime, engine=failing.engine), pairs, cookies)
    assert done.outcome.status == "completed"
    with pytest.raises(errors.StateReplayed):
        flows.complete(world.runtime, pairs, cookies)
    assert_one_outcome_per_flow(world.runtime)


def test_outcome_write_pauses_add_up_to_the_patience() -> None:
    """The broker's retries of an outcome write are bounded by the setting, never endless."""
    assert write_delays(0) == []
    for patience in (0.3, 1, 7.5, 20, 50):
        delays = write_delays(patience)
        assert sum(delays) <= patience
        assert max(delays) <= 2.0


def _fail_the_outcome_commit(failing: FailingDatabase) -> Any:
    commits = {"seen": 0}

    def hook(*_: Any) -> None:
        commits["seen"] += 1
        if commits["seen"] == 2:  # the claim's commit, then the outcome's
            raise OperationalError("injected", None, ConnectionError("the database went away"))

    return hook


@pytest.mark.parametrize("action_type", ["REGISTRATION", "GET_PRESENCE_CONSENT"])
def test_database_failing_mid_callback_with_no_refresh_is_failed_by_the_worker(
    world: World, failing: FailingDatabase, action_type: str
) -> None:
    """The admin closes the tab after the failure: the worker ends the item, once."""
    if action_type != "REGISTRATION":
        world.register()
    for fail_at in range(1, 40):
        _, _, failed = complete_with_fault(world, failing, action_type, fail_at)
        if not failed:
            break
    world.clock.advance(seconds=world.runtime.settings.flow_ttl_seconds + 1)
    claimed_and_stranded = fail_abandoned_flows(world.runtime)
    assert claimed_and_stranded > 0
    assert fail_abandoned_flows(world.runtime) == 0
    assert_one_outcome_per_flow(world.runtime)
    with world.runtime.engine.connect() as connection:
        codes = set(
            connection.execute(
                select(action_items.c.error_code).where(action_items.c.status == "failed")
            ).scalars()
        )
    assert "COMPLETION_INTERRUPTED" in codes


def test_racing_callbacks_one_claims_the_flow_the_other_is_asked_to_wait(world: World) -> None:
    """A double click lands while Microsoft is slow: one completes, the other is told to wait."""
    pairs, cookies = at_callback(world, "REGISTRATION")
    world.emulator.set_token_delay(0.5)
    gate = threading.Barrier(2)
    answers: list[str] = []

    def hit() -> None:
        gate.wait()
        try:
            answers.append(flows.complete(world.runtime, pairs, cookies).outcome.status)
        except errors.BrokerError as exc:
            answers.append(exc.code)

    threads = [threading.Thread(target=hit) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == ["FLOW_IN_PROGRESS", "completed"]
    with pytest.raises(errors.StateReplayed):
        flows.complete(world.runtime, pairs, cookies)
    assert_one_outcome_per_flow(world.runtime)


def test_the_claim_lease_outlasts_the_slowest_completion_the_settings_allow(
    world: World,
) -> None:
    """A refresh must not take a flow over while its first callback still waits on Microsoft
    (it would redeem the code again and record invalid_grant over a good sign-in)."""
    settings = world.runtime.settings
    slowest_redemption = 2 * 4 * settings.microsoft_timeout_seconds  # MSAL set-up + token, 4 tries
    lease = claim_lease(settings).total_seconds()
    assert lease >= slowest_redemption + settings.outcome_write_patience_seconds
    short_flows = replace(settings, flow_ttl_seconds=60)
    assert claim_lease(short_flows).total_seconds() == 60  # never past the flow's own life


def test_an_interrupted_flow_waits_while_the_admins_second_flow_runs(
    world: World, failing: FailingDatabase
) -> None:
    """The database fails mid-callback and the admin clicks the link again: the worker leaves
    the item to the new flow instead of failing it under the admin's feet."""
    world.register()
    link = world.link("GET_PRESENCE_CONSENT")
    first = world.click(link["url"])
    params = world.at_microsoft(first.headers["location"], CONTOSO_ADMIN)
    name, value = first.headers["set-cookie"].split(";", 1)[0].split("=", 1)
    failing.arm(None)
    event.listen(failing.engine, "commit", _fail_the_outcome_commit(failing))
    with pytest.raises(OperationalError):
        flows.complete(
            down_for_good(world.runtime, failing.engine), list(params.items()), {name: value}
        )
    ttl = world.runtime.settings.flow_ttl_seconds
    world.clock.advance(seconds=ttl - 30)
    second = world.click(link["url"])  # the admin tries again before the first flow expires
    world.clock.advance(seconds=60)  # the first flow's claim and life are over
    assert fail_abandoned_flows(world.runtime) == 0
    params = world.at_microsoft(second.headers["location"], CONTOSO_ADMIN)
    name, value = second.headers["set-cookie"].split(";", 1)[0].split("=", 1)
    done = flows.complete(world.runtime, list(params.items()), {name: value})
    assert done.outcome.status == "completed"
    assert fail_abandoned_flows(world.runtime) == 0
    assert_one_outcome_per_flow(world.runtime)
