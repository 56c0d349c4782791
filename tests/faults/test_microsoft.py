"""Microsoft fails while an admin comes back to us: 5xx, slow, or not listening (issue 9.4)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.faults.invariant import invariant_violations, item_records
from tests.faults.stack import (
    MICROSOFT_TIMEOUT_SECONDS,
    Browser,
    Provider,
    Stack,
    browser_outcome,
    table,
)

pytestmark = [pytest.mark.faults, pytest.mark.slow]

LOGIN = "LOGIN_ENTERPRISE_ADMIN"
CONSENT = "GET_PRESENCE_CONSENT"
# More failures than any bounded retry makes, fewer than would outlast a test's guard.
PERSISTENT_FAILURES = 20


def _at_the_callback(
    stack: Stack, provider: Provider, action_type: str
) -> tuple[Browser, str, str]:
    """An admin who clicked and answered Microsoft; returns the browser, item and callback."""
    browser = Browser(stack)
    item, link = stack.link(provider, action_type)
    return browser, item, browser.at_microsoft(browser.click(link))


def _outcome(
    stack: Stack, provider: Provider, browser: Browser, item: str, answer: httpx.Response
) -> tuple[str | None, str | None]:
    """The outcome the browser was sent back with, checked against the stored one and the
    invariant; returns the stored status and error code."""
    record = item_records(stack.engine, provider.provider_id)[item]
    print(
        table(
            f"{record.action_type}",
            {
                "browser": f"{answer.status_code} {browser_outcome(answer, provider)}",
                "stored": f"{record.status} {record.error_code or ''}".strip(),
                "events": ", ".join(record.events),
            },
        )
    )
    assert browser_outcome(answer, provider) == record.status, answer.text[:300]
    assert invariant_violations(stack, provider, settled=[item], browsers=[browser]) == []
    return record.status, record.error_code


@pytest.mark.timeout(60)
@pytest.mark.parametrize("action_type", [LOGIN, CONSENT])
def test_microsoft_transient_503_is_retried(stack: Stack, action_type: str) -> None:
    """Microsoft's token endpoint answers one 503 (a blip): the broker retries and the admin's
    flow completes, instead of failing and needing a new link."""
    provider = stack.registered_provider("ms-503")
    browser, item, callback = _at_the_callback(stack, provider, action_type)
    stack.emulator.fail_next_token_requests(1, 503)
    answer = browser.get(callback)
    assert _outcome(stack, provider, browser, item, answer) == ("completed", None)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("status", [500, 502])
def test_microsoft_persistent_5xx_ends_failed_with_a_code(stack: Stack, status: int) -> None:
    """Microsoft keeps answering 5xx: after bounded retries the item fails with
    MICROSOFT_UNAVAILABLE and the admin goes back to the provider, never to a 500 page."""
    provider = stack.registered_provider(f"ms-{status}")
    browser, item, callback = _at_the_callback(stack, provider, LOGIN)
    stack.emulator.fail_next_token_requests(PERSISTENT_FAILURES, status)
    started = time.monotonic()
    answer = browser.get(callback)
    print(f"answered after {time.monotonic() - started:.1f} s")
    assert _outcome(stack, provider, browser, item, answer) == ("failed", "MICROSOFT_UNAVAILABLE")


@pytest.mark.timeout(60)
def test_microsoft_token_timeout_ends_in_an_outcome(stack: Stack) -> None:
    """Microsoft does not answer the code redemption in time: the item ends with an outcome
    (completed by a retry, or failed with MICROSOFT_TIMEOUT), and the admin gets no 500."""
    provider = stack.registered_provider("ms-timeout")
    browser, item, callback = _at_the_callback(stack, provider, LOGIN)
    stack.emulator.set_token_delay(MICROSOFT_TIMEOUT_SECONDS + 1)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(browser.get, callback)
        # The first attempt keeps its delay; a retry after it timed out would find Microsoft well.
        time.sleep(MICROSOFT_TIMEOUT_SECONDS - 0.5)
        stack.emulator.set_token_delay(0)
        answer = pending.result(timeout=45)
    assert _outcome(stack, provider, browser, item, answer) in (
        ("completed", None),
        ("failed", "MICROSOFT_TIMEOUT"),
    )


@pytest.mark.timeout(60)
def test_microsoft_refusing_connections_ends_in_an_outcome(stack: Stack) -> None:
    """Microsoft's host refuses connections when the admin comes back and listens again 1.5 s
    later: the item ends with an outcome (completed by a retry, or failed with
    MICROSOFT_UNAVAILABLE), and the admin gets no 500."""
    provider = stack.registered_provider("ms-refused")
    browser, item, callback = _at_the_callback(stack, provider, LOGIN)
    stack.emulator_server.stop()
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(browser.get, callback)
        time.sleep(1.5)
        stack.emulator_server.start()
        answer = pending.result(timeout=45)
    assert _outcome(stack, provider, browser, item, answer) in (
        ("completed", None),
        ("failed", "MICROSOFT_UNAVAILABLE"),
    )
