"""Two ``ctt-broker serve`` instances on one database, as behind a load balancer."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests import http_clients
from tests.faults.invariant import invariant_violations, item_records
from tests.faults.stack import Browser, Stack, browser_outcome, table

pytestmark = [pytest.mark.faults, pytest.mark.slow]

RACING_PAIRS = 10
CROSSING_FLOWS = 12


def _race(browser: Browser, callback: str) -> list[httpx.Response]:
    """Send one callback to both instances at the same moment, with the browser's cookies."""
    barrier = threading.Barrier(2)
    cookies = browser.cookies_header()

    def send(instance: int) -> httpx.Response:
        with http_clients.client(timeout=30, follow_redirects=False) as client:
            url = browser.on(callback, instance)
            barrier.wait(timeout=10)
            return client.get(url, headers={"Cookie": cookies})

    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(send, (0, 1)))


@pytest.mark.timeout(120)
def test_racing_callbacks_on_two_instances_have_one_winner(stack: Stack) -> None:
    """A callback arrives twice at once, once on each instance (a double click behind a load
    balancer, or an attacker replaying it): exactly one wins and records the outcome."""
    provider = stack.registered_provider("racing")
    items = []
    winners = {0: 0, 1: 0}
    losers: dict[int, int] = {}
    for number in range(RACING_PAIRS):
        browser = Browser(stack)
        item, link = stack.link(provider, instance=number % 2)
        callback = browser.at_microsoft(browser.click(link, number % 2))
        answers = _race(browser, callback)
        items.append(item)
        outcomes = [browser_outcome(answer, provider) for answer in answers]
        assert outcomes.count("completed") == 1, [a.status_code for a in answers]
        winner = outcomes.index("completed")
        winners[winner] += 1
        loser = answers[1 - winner]
        losers[loser.status_code] = losers.get(loser.status_code, 0) + 1
        assert 400 <= loser.status_code < 500, loser.text[:300]
        assert loser.headers["content-type"].startswith("text/html")
    print(table("racing callbacks", {"winner on instance 0/1": winners, "losers": losers}))
    records = item_records(stack.engine, provider.provider_id)
    assert all(records[item].status == "completed" for item in items)
    assert invariant_violations(stack, provider, settled=items) == []


@pytest.mark.timeout(120)
def test_flows_launched_on_one_instance_complete_on_the_other(stack: Stack) -> None:
    """The load balancer sends the click to one instance and Microsoft's return to the other;
    the result is redeemed once, on either."""
    provider = stack.registered_provider("crossing")
    browsers, items = [], []
    for number in range(CROSSING_FLOWS):
        launch_on, return_on = number % 2, 1 - number % 2
        browser = Browser(stack)
        item, link = stack.link(provider, instance=launch_on)
        answer = browser.round_trip(link, launch_on=launch_on, return_on=return_on)
        assert browser_outcome(answer, provider) == "completed", answer.text[:300]
        code = dict(httpx.URL(answer.headers["location"]).params)["resultCode"]
        with stack.api(launch_on) as api:
            redeemed = api.post(
                "/results/redeem", json={"resultCode": code}, headers=provider.headers
            )
        assert redeemed.status_code == 200, redeemed.text
        assert redeemed.json()["status"] == "completed"
        with stack.api(return_on) as api:
            again = api.post("/results/redeem", json={"resultCode": code}, headers=provider.headers)
        assert again.status_code == 404
        assert again.json()["code"] == "RESULT_CODE_INVALID"
        browsers.append(browser)
        items.append(item)
    assert invariant_violations(stack, provider, settled=items, browsers=browsers) == []
