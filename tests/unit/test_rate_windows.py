"""In-process rate-limit windows (``memory://``) and the key a client address is counted under."""

from __future__ import annotations

import ipaddress
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.ratelimits import ProcessWindows, RateLimits, ip_bucket_key

RATES = {"admin": "3/minute", "link": "2/minute", "auth_failure": "2/minute", "api": "5/second"}


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_window_allows_its_amount_then_refuses_until_it_ends() -> None:
    clock = Clock()
    windows = ProcessWindows(clock)
    answers = [windows.hit("k", 3, 60) for _ in range(5)]
    assert [allowed for allowed, _ in answers] == [True, True, True, False, False]
    assert {end for _, end in answers} == {clock.now + 60}
    clock.now += 59.9
    assert windows.hit("k", 3, 60)[0] is False
    clock.now += 0.1  # the window opened by the first hit has ended
    assert windows.hit("k", 3, 60) == (True, clock.now + 60)


def test_test_counts_nothing() -> None:
    clock = Clock()
    windows = ProcessWindows(clock)
    for _ in range(10):
        assert windows.test("k", 2)[0] is True
    windows.hit("k", 2, 60)
    assert windows.test("k", 2)[0] is True
    windows.hit("k", 2, 60)
    assert windows.test("k", 2) == (False, clock.now + 60)


def test_keys_have_windows_of_their_own() -> None:
    clock = Clock()
    windows = ProcessWindows(clock)
    assert windows.hit("a", 1, 60)[0] is True
    assert windows.hit("a", 1, 60)[0] is False
    assert windows.hit("b", 1, 60)[0] is True


@given(st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 90)), max_size=60))
def test_windows_match_a_plain_model_of_fixed_windows(steps: list[tuple[str, int]]) -> None:
    """Any sequence of hits and pauses: the same verdicts as a dictionary that never forgets."""
    clock = Clock()
    windows = ProcessWindows(clock)
    model: dict[str, tuple[float, int]] = {}
    for key, pause in steps:
        clock.now += pause
        end, hits = model.get(key, (0.0, 0))
        if end <= clock.now:
            end, hits = clock.now + 30, 0
        model[key] = (end, hits + 1)
        assert windows.hit(key, 2, 30) == (hits + 1 <= 2, end)
    assert len(windows) <= len({key for key, _ in steps})


def test_a_spray_of_distinct_clients_costs_no_sweep_and_is_forgotten_when_its_windows_end() -> None:
    """Many addresses in one window: no background thread, and no cost left once they pass.

    The ``limits`` library's memory storage swept every live key from a thread about every
    10 ms of traffic, so a flood from many addresses made every later second dearer.
    """
    clock = Clock()
    limits = RateLimits("memory://", RATES, "spray", clock=clock)
    threads = threading.active_count()
    for n in range(50_000):
        assert limits.hit("admin", f"10.{n >> 16}.{(n >> 8) & 255}.{n & 255}").allowed
    assert threading.active_count() == threads
    assert limits.windows_held == 50_000
    clock.now += 61
    assert limits.hit("admin", "192.0.2.1").allowed
    assert limits.windows_held == 1  # the ended windows went with the next hit
    for _ in range(2_000):
        limits.hit("api", "one key")
    assert threading.active_count() == threads
    assert limits.windows_held == 2


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("2001:DB8:1:2:0:0:0:9", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("unknown", "unknown"),
    ],
)
def test_client_addresses_are_counted_by_ipv4_address_or_ipv6_64(address: str, key: str) -> None:
    assert ip_bucket_key(address) == key


@given(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))
def test_every_address_of_one_ipv6_64_shares_a_key(host_a: int, host_b: int) -> None:
    network = 0x20010DB8_00010002 << 64
    first = str(ipaddress.IPv6Address(network | host_a))
    second = str(ipaddress.IPv6Address(network | host_b))
    assert ip_bucket_key(first) == ip_bucket_key(second) == "2001:db8:1:2::/64"
