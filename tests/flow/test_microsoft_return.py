"""Whatever comes back with a valid state ends in an outcome the provider hears of.

Each class of malformed return (missing, extra, oversized, repeated, malformed
fields) is generated; with the genuine state and cookie, the admin always goes
back to the provider with ``failed`` and ``MICROSOFT_RESPONSE_INVALID``, never
to a bare "Invalid request" page with the action item left open.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlencode

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.microsoft_return import FIELDS, MAX_FIELDS, read_return
from tests.flow.conftest import CONTOSO_ADMIN, World, returned

FLOW_EXAMPLES = settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
KNOWN = sorted(FIELDS)
printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
hostile = st.text(st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=40).filter(
    lambda text: any(not 0x20 <= ord(ch) <= 0x7E for ch in text)
)


def sign_in_return(world: World, action_type: str = "REGISTRATION") -> list[tuple[str, str]]:
    launched = world.click(world.link(action_type, reregister=True)["url"])
    return list(world.at_microsoft(launched.headers["location"], CONTOSO_ADMIN).items())


def send(world: World, pairs: list[tuple[str, str]]) -> Any:
    return world.broker.get("/oauth/callback?" + urlencode(pairs), follow_redirects=False)


def assert_failed_as_malformed(world: World, response: Any) -> None:
    query = returned(response)
    assert (query["status"], query["errorCode"]) == ("failed", "MICROSOFT_RESPONSE_INVALID")
    item = world.broker.get(f"/actionItems/{query['actionItemId']}", headers=world.headers)
    assert item.json()["status"] == "failed"


@FLOW_EXAMPLES
@given(name=st.sampled_from(KNOWN), data=st.data())
def test_oversized_field_from_microsoft_ends_the_item_failed(
    world: World, name: str, data: st.DataObject
) -> None:
    """A field longer than Microsoft ever sends is recorded as malformed, not refused bare."""
    limit = FIELDS[name][0]
    value = "A" * data.draw(st.integers(limit + 1, limit + 50))
    pairs = [(k, v) for k, v in sign_in_return(world) if k != name] + [(name, value)]
    assert_failed_as_malformed(world, send(world, pairs))


@FLOW_EXAMPLES
@given(name=st.sampled_from(KNOWN), value=printable)
def test_repeated_field_from_microsoft_ends_the_item_failed(
    world: World, name: str, value: str
) -> None:
    """A second copy of a field (which one would MSAL use?) is recorded as malformed."""
    pairs = sign_in_return(world)
    pairs.append((name, value))
    if not any(k == name for k, _ in pairs[:-1]):
        pairs.append((name, value))
    assert_failed_as_malformed(world, send(world, pairs))


@FLOW_EXAMPLES
@given(name=st.sampled_from(["code", "error", "tenant", "scope"]), value=hostile)
def test_field_with_control_or_non_ascii_characters_ends_the_item_failed(
    world: World, name: str, value: str
) -> None:
    """Control bytes or non-ASCII where Microsoft sends ASCII: recorded as malformed."""
    pairs = [(k, v) for k, v in sign_in_return(world) if k != name] + [(name, value)]
    assert_failed_as_malformed(world, send(world, pairs))


@FLOW_EXAMPLES
@given(extra=st.integers(1, 20))
def test_flood_of_extra_fields_ends_the_item_failed(world: World, extra: int) -> None:
    """More fields than any Microsoft return carries: recorded as malformed."""
    pairs = sign_in_return(world)
    pairs += [(f"x{i}", "1") for i in range(MAX_FIELDS - len(pairs) + extra)]
    assert_failed_as_malformed(world, send(world, pairs))


def test_unknown_field_of_reasonable_size_is_ignored(world: World) -> None:
    """Microsoft adds fields over time: a small unknown one does not spoil the sign-in."""
    pairs = [*sign_in_return(world), ("cloud_instance_name", "microsoftonline.com")]
    assert returned(send(world, pairs))["status"] == "completed"


def test_sign_in_return_without_code_or_error_ends_the_item_failed(world: World) -> None:
    """A return carrying only the state is recorded, not left hanging."""
    pairs = [(k, v) for k, v in sign_in_return(world) if k == "state"]
    assert_failed_as_malformed(world, send(world, pairs))


def test_consent_return_without_admin_consent_or_error_ends_the_item_failed(
    world: World,
) -> None:
    """An admin consent return that says neither yes nor no is recorded as malformed."""
    world.register()
    launched = world.click(world.link("GET_PRESENCE_CONSENT")["url"])
    params = world.at_microsoft(launched.headers["location"], CONTOSO_ADMIN)
    pairs = [(k, v) for k, v in params.items() if k != "admin_consent"]
    assert_failed_as_malformed(world, send(world, pairs))


def test_second_different_state_is_refused_as_state_invalid(world: World) -> None:
    """An attacker appends their own state: which flow is meant? Neither: STATE_INVALID."""
    pairs = [*sign_in_return(world), ("state", "attacker-state")]
    response = send(world, pairs)
    assert response.status_code == 400
    assert "<code>STATE_INVALID</code>" in response.text


def test_same_state_sent_twice_ends_the_item_failed(world: World) -> None:
    """The state is ours, but the return repeats it: recorded as malformed, not trusted."""
    pairs = sign_in_return(world)
    pairs.append(("state", dict(pairs)["state"]))
    assert_failed_as_malformed(world, send(world, pairs))


def test_form_post_return_with_repeated_fields_is_recorded_too(world: World) -> None:
    """A repeated code in a form_post return still ends the item with an outcome."""
    pairs = sign_in_return(world)
    code = dict(pairs)["code"]
    body = urlencode([*pairs, ("code", code + "x")])
    bounced = world.broker.post(
        "/oauth/callback",
        content=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        follow_redirects=False,
    )
    assert bounced.status_code == 303, bounced.text
    response = world.broker.get(bounced.headers["location"], follow_redirects=False)
    query = returned(response)
    assert query["status"] == "failed"
    assert query["errorCode"] in ("MICROSOFT_RESPONSE_INVALID", "INVALID_GRANT")


@given(
    junk=st.lists(
        st.tuples(
            st.one_of(st.sampled_from(KNOWN), st.text(max_size=70)),
            st.one_of(printable, st.text(max_size=300)),
        ).filter(lambda p: p[0] != "state"),
        max_size=40,
    )
)
def test_any_return_with_one_state_is_read_without_raising(junk: list[tuple[str, str]]) -> None:
    """Whatever surrounds one state: the state and a verdict, never a crash or a silent pass.

    A return judged clean has unique, well-formed names, no more fields than allowed,
    and every documented field within its limit; exactly those fields are kept.
    """
    read = read_return([("state", "s.t.ate"), *junk])
    assert read.state == "s.t.ate"
    if read.problem is None:
        names = [name for name, _ in junk]
        assert len(names) == len(set(names)) and len(junk) + 1 <= MAX_FIELDS
        for name, value in junk:
            assert re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name), name
            limit, allowed = FIELDS.get(name, (2048, re.compile(r"^[\x20-\x7e]*$")))
            assert len(value) <= limit and allowed.match(value), (name, value)
        assert read.params == {"state": "s.t.ate", **{k: v for k, v in junk if k in FIELDS}}


@FLOW_EXAMPLES
@given(
    flood=st.sampled_from(["fields", "bytes"]),
    count=st.integers(60, 3000),
)
def test_return_over_the_edge_limits_still_ends_the_item_failed(
    world: World, flood: str, count: int
) -> None:
    """A return too big for the edge (fields or bytes) is cut to its state, then recorded."""
    pairs = sign_in_return(world)
    if flood == "fields":
        pairs += [(f"x{i}", "1") for i in range(count)]
    else:
        pairs += [("error_description", "A" * (24 * 1024 + count))]  # past the 24 KiB query
    assert_failed_as_malformed(world, send(world, pairs))


def test_form_post_return_over_the_edge_limits_still_ends_the_item_failed(world: World) -> None:
    """A form_post return with thousands of fields is cut to its state, then recorded."""
    pairs = sign_in_return(world) + [(f"x{i}", "1") for i in range(5000)]
    posted = world.broker.post(
        "/oauth/callback",
        content=urlencode(pairs),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        follow_redirects=False,
    )
    assert posted.status_code == 303
    assert_failed_as_malformed(
        world, world.broker.get(posted.headers["location"], follow_redirects=False)
    )
