"""PostgreSQL fails: in the middle of an admin's callback, and under API load (issue 9.1, 9.3)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import httpx
import pytest

from tests.faults.invariant import item_records, settle
from tests.faults.servers import wait_until
from tests.faults.stack import Browser, Stack, browser_outcome, table

pytestmark = [pytest.mark.faults, pytest.mark.slow]

TOKEN_DELAY_SECONDS = 3.0
STOP_AFTER_SECONDS = 1.0
OUTAGE_SECONDS = 3.0
LOAD_THREADS = 3
SETTLE_SECONDS = 15.0


@pytest.mark.timeout(90)
def test_database_stops_mid_callback_loses_no_outcome(stack: Stack) -> None:
    """Issue 9.1: Microsoft takes 3 s to redeem the code and PostgreSQL stops 1 s into the
    callback. Once it is back, the admin's refresh finishes the flow or the item ends failed with
    a code and an event: never a spent flow without an outcome, never a 500."""
    provider = stack.registered_provider("db-mid-callback")
    item, link = stack.link(provider)
    browser = Browser(stack)
    callback = browser.at_microsoft(browser.click(link))
    stack.emulator.set_token_delay(TOKEN_DELAY_SECONDS)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(browser.get, callback)
        time.sleep(STOP_AFTER_SECONDS)
        stack.postgres.crash()
        # Down until the broker answered the admin, or long enough that it is clearly waiting.
        wait_until(pending.done, TOKEN_DELAY_SECONDS + 6)
        stack.postgres.start()
        first = pending.result(timeout=40)
    stack.emulator.set_token_delay(0)
    refresh = browser.get(callback)
    problems = settle(stack, provider, SETTLE_SECONDS, settled=[item], browsers=[browser])
    record = item_records(stack.engine, provider.provider_id)[item]
    print(
        table(
            "database stopped mid-callback",
            {
                "first answer": first.status_code,
                "refresh answer": refresh.status_code,
                "browser outcome": browser_outcome(refresh, provider)
                or browser_outcome(first, provider),
                "stored status": f"{record.status} {record.error_code or ''}".strip(),
                "results": record.results,
                "events": ", ".join(record.events) or "none",
                "spent flows": record.spent_flows,
            },
        )
    )
    assert problems == []
    assert record.status in ("completed", "failed")
    seen = browser_outcome(refresh, provider) or browser_outcome(first, provider)
    if seen is not None:
        assert seen == record.status, "the browser was told another outcome than the one stored"
    assert refresh.status_code < 500, refresh.text[:300]


@dataclass(frozen=True)
class Call:
    """One getActionItemUrl call made while the database went away and came back."""

    at: float
    status: int
    retry_after: str | None
    code: str | None


def _valid_retry_after(value: str | None) -> bool:
    """Retry-After is delay-seconds or an HTTP-date (RFC 9110, 10.2.3)."""
    if value is None:
        return False
    if value.isdigit():
        return True
    try:
        parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return False
    return True


def _load(
    stack: Stack,
    provider_headers: dict[str, str],
    body: dict[str, str],
    number: int,
    stop: threading.Event,
    calls: list[Call],
) -> None:
    with httpx.Client(base_url=stack.instances[number % 2], timeout=15) as client:
        while not stop.is_set():
            try:
                answer = client.post(
                    "/enterprise/getActionItemUrl", json=body, headers=provider_headers
                )
            except httpx.TransportError:
                calls.append(Call(time.monotonic(), 0, None, "transport error"))
                continue
            code = None
            if answer.headers.get("content-type", "").startswith("application/problem+json"):
                code = answer.json().get("code")
            calls.append(
                Call(time.monotonic(), answer.status_code, answer.headers.get("retry-after"), code)
            )
            time.sleep(0.02)


@pytest.mark.timeout(90)
def test_database_outage_under_load_answers_503_not_500(stack: Stack) -> None:
    """Issue 9.3: while PostgreSQL is down, getActionItemUrl answers 503 SERVICE_UNAVAILABLE
    with Retry-After (never 500), admins get a try-again page, and everything recovers without
    a restart; admins who came back from Microsoft during the outage finish on a refresh."""
    provider = stack.registered_provider("db-outage")
    body = {
        "actionType": "LOGIN_ENTERPRISE_ADMIN",
        "enterpriseId": provider.enterprise_id,
        "callbackUrl": provider.callback_url,
    }
    # Two admins open their link during the outage; two come back from Microsoft during it.
    openers = [(Browser(stack), stack.link(provider)) for _ in range(2)]
    returners = []
    for number in range(2):
        browser = Browser(stack)
        item, link = stack.link(provider)
        returners.append((browser, item, browser.at_microsoft(browser.click(link, number))))

    calls: list[Call] = []
    stop = threading.Event()
    threads = [
        threading.Thread(
            target=_load, args=(stack, provider.headers, body, number, stop, calls), daemon=True
        )
        for number in range(LOAD_THREADS)
    ]
    for thread in threads:
        thread.start()
    during: list[httpx.Response] = []
    try:
        time.sleep(1.0)
        stack.postgres.crash()
        down_at = time.monotonic()
        for number, (browser, (_item, link)) in enumerate(openers):
            during.append(browser.get(link, number))
        for number, (browser, _item, callback) in enumerate(returners):
            during.append(browser.get(callback, number))
        time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - down_at)))
        restart_at = time.monotonic()
        stack.postgres.start()
        back_at = time.monotonic()
        wait_until(lambda: any(c.status == 201 and c.at > back_at for c in list(calls)), 10)
        time.sleep(1.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=20)

    refreshed = {item: browser.get(callback) for browser, item, callback in returners}
    reopened = [browser.get(link) for browser, (_item, link) in openers]
    problems = settle(
        stack,
        provider,
        SETTLE_SECONDS,
        settled=list(refreshed),
        browsers=[browser for browser, _ in openers] + [browser for browser, _, _ in returners],
    )
    records = item_records(stack.engine, provider.provider_id)
    statuses = Counter(call.status for call in calls)
    # Calls that started and ended while the server was surely down (not while it stopped or
    # started again).
    outage = [call for call in calls if down_at + 0.5 <= call.at <= restart_at]
    first_after = min((c.at for c in calls if c.status == 201 and c.at > back_at), default=None)
    seen = Counter(browser_outcome(answer, provider) for answer in refreshed.values())
    stored = Counter(records[item].status for item in refreshed)
    print(table("getActionItemUrl status codes", dict(sorted(statuses.items()))))
    print(
        table(
            "database outage",
            {
                "calls during the outage": len(outage),
                "first 201 after restart": (
                    f"{first_after - back_at:.2f} s" if first_after else "never"
                ),
                "admin pages during the outage": [answer.status_code for answer in during],
                "outcomes seen by browsers": dict(seen),
                "outcomes stored": dict(stored),
            },
        )
    )
    assert statuses[500] == 0, "a 500 reached the API during the outage"
    assert set(statuses) <= {201, 503}, statuses
    assert outage and all(call.status == 503 for call in outage), Counter(c.status for c in outage)
    for call in calls:
        if call.status == 503:
            assert call.code == "SERVICE_UNAVAILABLE"
            assert _valid_retry_after(call.retry_after), call.retry_after
    assert first_after is not None and first_after - back_at < 5, "no recovery without restart"
    for answer in during:
        assert answer.status_code == 503, answer.text[:300]
        assert answer.headers["content-type"].startswith("text/html")
    for answer in reopened:
        assert answer.status_code == 302, "the link works again after the outage"
    # Back from Microsoft during the outage: the refresh finishes the flow, or (if the code was
    # spent at Microsoft) the item fails with a code; either way the browser hears the truth.
    assert seen == stored
    assert set(stored) <= {"completed", "failed"}, stored
    assert problems == []
