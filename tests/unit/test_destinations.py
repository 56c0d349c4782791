"""The destination policy: no webhook URL, in any spelling, reaches inside our network.

Every range of ``BLOCKED_NETWORKS`` is refused when a URL is set (a literal
address) and when it is sent (whatever the host resolves to), for every
textual form of an address the URL parser accepts.
"""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker import errors
from broker.destinations import (
    BLOCKED_NETWORKS,
    DestinationUnresolved,
    blocked_reason,
    check_webhook_url,
    pick_address,
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def addresses_in(
    network: ipaddress.IPv4Network | ipaddress.IPv6Network,
) -> st.SearchStrategy[IPAddress]:
    first, last = int(network.network_address), int(network.broadcast_address)
    # ip_address(int) would make small IPv6 values IPv4: keep the network's own family.
    family = type(network.network_address)
    return st.integers(min_value=first, max_value=last).map(family)


blocked_addresses = st.sampled_from([network for network, _ in BLOCKED_NETWORKS]).flatmap(
    addresses_in
)


def spellings(address: IPAddress) -> list[str]:
    """Ways to write ``address`` as a URL host: the canonical one and the tricky ones."""
    if isinstance(address, ipaddress.IPv4Address):
        value = int(address)
        octets = [int(part) for part in str(address).split(".")]
        return [
            str(address),
            str(value),  # decimal
            hex(value),  # hex
            ".".join(f"0{part:o}" for part in octets),  # octal dotted
            ".".join(hex(part) for part in octets),  # hex dotted
            f"{octets[0]}.{(octets[1] << 16) | (octets[2] << 8) | octets[3]}",  # a.bcd
            f"{octets[0]}.{octets[1]}.{(octets[2] << 8) | octets[3]}",  # a.b.cd
            f"[::ffff:{address}]",  # mapped
            f"[::{address}]",  # compatible
            f"[64:ff9b::{address}]",  # NAT64
        ]
    text = [f"[{address.compressed}]", f"[{address.exploded}]", f"[{address.exploded.upper()}]"]
    low = int(address) & 0xFFFFFFFF
    prefix = address.exploded.rsplit(":", 2)[0]
    text.append(f"[{prefix}:{ipaddress.IPv4Address(low)}]")  # dotted tail
    return text


@settings(max_examples=400, deadline=None)
@given(address=blocked_addresses, development=st.booleans(), production=st.booleans())
def test_no_address_in_a_blocked_range_is_accepted_in_any_spelling(
    address: IPAddress, development: bool, production: bool
) -> None:
    """An operator setting a webhook URL to an internal address, however spelled, is refused."""
    loopback_allowed = development and not production
    for host in spellings(address):
        for scheme in ("https", "http"):
            try:
                accepted = check_webhook_url(
                    f"{scheme}://{host}/hook", development=development, production=production
                )
            except errors.CallbackUrlRejected:
                continue
            # The one allowance: a development provider's loopback receiver (the sandbox).
            target = ipaddress.ip_address(accepted.split("//")[1].split("/")[0].strip("[]"))
            assert loopback_allowed and target.is_loopback, accepted


@settings(max_examples=400, deadline=None)
@given(address=blocked_addresses)
def test_no_resolved_address_in_a_blocked_range_is_connected_to(address: IPAddress) -> None:
    """A public-looking name whose DNS answer is internal is refused at send time."""
    with pytest.raises(errors.WebhookUrlBlocked):
        pick_address(
            "https://hooks.partner.example/in",
            development=False,
            production=True,
            resolve=lambda host: [str(address)],
        )
    # One internal answer among public ones is enough to refuse.
    with pytest.raises(errors.WebhookUrlBlocked):
        pick_address(
            "https://hooks.partner.example/in",
            development=False,
            production=True,
            resolve=lambda host: ["52.96.0.1", str(address)],
        )


@pytest.mark.parametrize(
    "host",
    ["[::127.0.0.1]", "[64:ff9b::7f00:1]", "[fec0::1]", "[64:ff9b:1::a00:1]", "[2002:a00:1::]"],
)
def test_addresses_python_calls_global_are_still_refused(host: str) -> None:
    """``is_global`` let the broker attempt these for a production provider."""
    with pytest.raises(errors.CallbackUrlRejected):
        check_webhook_url(f"https://{host}/hook", development=False, production=True)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("10.0.0.1", "private"),
        ("169.254.169.254", "link-local"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("198.18.0.1", "benchmarking"),
        ("192.0.2.1", "documentation"),
        ("224.0.0.1", "multicast"),
        ("255.255.255.255", "reserved"),
        ("0.0.0.0", "unspecified"),  # noqa: S104 - an address under test, not a bind
        ("fd00::1", "unique local"),
        ("fec0::1", "site-local"),
        ("::ffff:10.0.0.1", "IPv4-mapped address (embeds 10.0.0.1)"),
        ("::7f00:1", "IPv4-compatible address (embeds 127.0.0.1)"),
        ("64:ff9b::7f00:1", "NAT64 address (embeds 127.0.0.1)"),
        ("2002:7f00:1::", "6to4 address (embeds 127.0.0.1)"),
        ("2001::1", "Teredo"),
    ],
)
def test_each_range_is_refused_with_its_reason(text: str, reason: str) -> None:
    found = blocked_reason(ipaddress.ip_address(text))
    assert found is not None and found.startswith(reason)


@pytest.mark.parametrize("url", ["https://10.0.0.1/hook", "https://169.254.169.254/latest"])
def test_set_webhook_to_a_private_address_is_refused(url: str) -> None:
    """``set-webhook`` accepted 10.0.0.1 and the cloud metadata address."""
    with pytest.raises(errors.WebhookUrlBlocked):
        check_webhook_url(url, development=False, production=False)


def test_public_addresses_and_names_are_accepted() -> None:
    assert check_webhook_url("https://52.96.0.1/in", development=False, production=True)
    assert check_webhook_url("https://[2603:1000::1]/in", development=False, production=True)
    picked = pick_address(
        "https://hooks.partner.example/in",
        development=False,
        production=True,
        resolve=lambda host: ["52.96.0.1", "2603:1000::1"],
    )
    assert picked.address == "52.96.0.1" and picked.url.host == "hooks.partner.example"


def test_development_loopback_is_for_the_sandbox_only() -> None:
    """A development provider may post to loopback, but not once the broker runs in production."""
    url = "http://127.0.0.1:8090/webhooks"
    assert check_webhook_url(url, development=True, production=False) == url
    with pytest.raises(errors.CallbackUrlRejected):
        check_webhook_url(url, development=True, production=True)
    with pytest.raises(errors.WebhookUrlBlocked):
        check_webhook_url("https://10.0.0.1/hook", development=True, production=False)


def test_a_name_that_does_not_resolve_is_retried_not_refused() -> None:
    def nothing(host: str) -> list[str]:
        raise OSError("NXDOMAIN")

    with pytest.raises(DestinationUnresolved):
        pick_address("https://gone.example/in", development=False, production=True, resolve=nothing)
