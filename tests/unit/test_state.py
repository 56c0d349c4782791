"""The flow ``state`` JWT: only states we minted, for us, in time, come back as a FlowState."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from broker import errors
from broker.state import (
    CLAIM_ACTION_ITEM,
    CLAIM_ACTION_TYPE,
    CLAIM_BINDING,
    CLAIM_CALLBACK_URL,
    MAX_STATE_LENGTH,
    REQUIRED_CLAIMS,
    STATE_TYP,
    FlowState,
    StateKeyring,
    binding_hash,
    binding_matches,
    mint_state,
    new_binding_nonce,
    verify_state,
)

NOW = datetime(2026, 11, 27, 9, 0, 0, tzinfo=UTC)
ISSUER = "https://broker.example.com"
AUDIENCE = "https://broker.example.com/microsoft/return"
OLD_SECRET = bytes(range(32))
ACTIVE_SECRET = bytes(range(100, 148))
KEYRING = StateKeyring(keys={"k2": ACTIVE_SECRET, "k1": OLD_SECRET}, active_kid="k2")
NONCE = "bN0nce-of-the-admins-browser"
CALLBACK = "https://portal.example.com/teams/callback?customer=1042"
B64URL_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def rng(seed: int = 7) -> Any:
    return random.Random(seed).randbytes


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def mint(keyring: StateKeyring = KEYRING, **overrides: Any) -> tuple[str, FlowState]:
    arguments: dict[str, Any] = {
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "action_item_id": "act_01JDZ0000000000000000000AB",
        "action_type": "GET_PRESENCE_CONSENT",
        "callback_url": CALLBACK,
        "binding_nonce": NONCE,
        "now": NOW,
        "random_bytes": rng(),
    }
    arguments.update(overrides)
    return mint_state(keyring, **arguments)


def verify(token: object, keyring: StateKeyring = KEYRING, **overrides: Any) -> FlowState:
    arguments: dict[str, Any] = {"issuer": ISSUER, "audience": AUDIENCE, "now": NOW}
    arguments.update(overrides)
    return verify_state(token, keyring, **arguments)


def refused(token: object, **overrides: Any) -> errors.StateInvalid:
    with pytest.raises(errors.StateInvalid) as caught:
        verify(token, **overrides)
    return caught.value


def good_claims(**changes: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": int(NOW.timestamp()),
        "exp": int(NOW.timestamp()) + 600,
        "jti": "A" * 22,
        CLAIM_ACTION_ITEM: "act_01JDZ0000000000000000000AB",
        CLAIM_ACTION_TYPE: "GET_PRESENCE_CONSENT",
        CLAIM_CALLBACK_URL: CALLBACK,
        CLAIM_BINDING: binding_hash(NONCE),
    }
    claims.update(changes)
    return claims


def good_header(**changes: Any) -> dict[str, Any]:
    header: dict[str, Any] = {"alg": "HS256", "typ": STATE_TYP, "kid": "k2"}
    header.update(changes)
    return header


def forge(
    header: dict[str, Any] | str,
    claims: dict[str, Any] | str,
    secret: bytes = ACTIVE_SECRET,
    digest: Any = hashlib.sha256,
) -> str:
    """A compact JWS built by hand, so no library guardrail decides what an attacker may send."""
    header_text = header if isinstance(header, str) else json.dumps(header)
    claims_text = claims if isinstance(claims, str) else json.dumps(claims)
    signing_input = f"{b64(header_text.encode())}.{b64(claims_text.encode())}"
    signature = hmac.new(secret, signing_input.encode(), digest).digest()
    return f"{signing_input}.{b64(signature)}"


TOKEN, FLOW = mint()


# -- the happy path ------------------------------------------------------------


def test_minted_state_verifies_to_what_was_minted() -> None:
    """The broker reads back exactly the flow it wrote."""
    assert verify(TOKEN) == FLOW
    assert FLOW.action_item_id == "act_01JDZ0000000000000000000AB"
    assert FLOW.action_type == "GET_PRESENCE_CONSENT"
    assert FLOW.callback_url == CALLBACK
    assert FLOW.binding_hash == binding_hash(NONCE)
    assert FLOW.issued_at == NOW
    assert FLOW.expires_at == NOW + timedelta(seconds=600)
    assert FLOW.issued_at.tzinfo is UTC


def test_state_carries_the_documented_header_and_claims_only() -> None:
    """Nothing beyond the documented claims travels through the browser."""
    header = jwt.get_unverified_header(TOKEN)
    assert header == {"alg": "HS256", "typ": "ctt-state+jwt", "kid": "k2"}
    claims = jwt.decode(TOKEN, options={"verify_signature": False})
    assert set(claims) == set(REQUIRED_CLAIMS)
    assert claims["iss"] == ISSUER
    assert claims["aud"] == AUDIENCE
    assert claims["exp"] - claims["iat"] == 600
    assert claims["jti"] == FLOW.jti


def test_jti_is_128_random_bits_and_differs_per_flow() -> None:
    """Two flows never share a flow id, so their server-side records never collide."""
    _, first = mint(random_bytes=rng(1))
    _, second = mint(random_bytes=rng(2))
    assert len(unb64(first.jti)) == 16
    assert first.jti != second.jti


def test_microseconds_in_now_do_not_change_the_flow_read_back() -> None:
    """JWT times are whole seconds; the FlowState returned at minting agrees with verification."""
    moment = NOW + timedelta(microseconds=999_999)
    token, flow = mint(now=moment)
    assert verify(token, now=moment) == flow
    assert flow.issued_at == NOW


# -- attacks on the token --------------------------------------------------------


def test_tampered_state_is_refused() -> None:
    """An admin edits the action item id in the state to hijack another provider's item."""
    header_text, _, signature = TOKEN.split(".")
    claims = jwt.decode(TOKEN, options={"verify_signature": False})
    claims[CLAIM_ACTION_ITEM] = "act_01JDZ0000000000000000000ZZ"
    tampered = f"{header_text}.{b64(json.dumps(claims).encode())}.{signature}"
    assert "signature" in refused(tampered).detail


def test_redirected_callback_url_in_state_is_refused() -> None:
    """An attacker re-signs a state with a guessed key to send the admin elsewhere."""
    claims = good_claims(**{CLAIM_CALLBACK_URL: "https://evil.example/steal"})
    refused(forge(good_header(), claims, secret=b"x" * 32))


def test_expired_state_is_refused() -> None:
    """An admin who left the Microsoft page open for an hour cannot finish the old flow."""
    later = NOW + timedelta(seconds=600 + 5)
    with pytest.raises(errors.StateExpired):
        verify(TOKEN, now=later)


def test_small_clock_skew_at_expiry_is_tolerated() -> None:
    """An instance whose clock runs a few seconds ahead still accepts a state in time."""
    assert verify(TOKEN, now=NOW + timedelta(seconds=604)) == FLOW
    with pytest.raises(errors.StateExpired):
        verify(TOKEN, now=NOW + timedelta(seconds=604), leeway_seconds=0)


def test_state_for_another_audience_is_refused() -> None:
    """A state minted for another deployment's return endpoint is not accepted here."""
    token, _ = mint(audience="https://staging.example.com/microsoft/return")
    refused(token)


def test_state_with_an_audience_list_is_refused() -> None:
    """A state addressed to several parties, ours among them, is not a state for us."""
    refused(forge(good_header(), good_claims(aud=[AUDIENCE, "https://other.example"])))


def test_state_from_another_issuer_is_refused() -> None:
    """A token some other service signed with a shared key cannot pose as our state."""
    token, _ = mint(issuer="https://other-service.example.com")
    refused(token)


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(jwt.encode(good_claims(), "", algorithm="none"), id="pyjwt-none"),
        pytest.param(
            jwt.encode(good_claims(), "", algorithm="none", headers=good_header(alg="none")),
            id="pyjwt-none-with-our-header",
        ),
        # Past the shape check: a 43-character signature that the header says to ignore.
        pytest.param(forge(good_header(alg="none"), good_claims()), id="none-with-signature"),
        pytest.param(forge(good_header(alg="None"), good_claims()), id="None"),
        pytest.param(forge(good_header(alg=""), good_claims()), id="empty"),
        pytest.param(forge(good_header(alg=None), good_claims()), id="null"),
    ],
)
def test_alg_none_state_is_refused(token: str) -> None:
    """An attacker strips the signature and declares the state unsigned."""
    refused(token)


RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_PUBLIC_PEM = RSA_KEY.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(
            jwt.encode(good_claims(), RSA_KEY, algorithm="RS256", headers=good_header(alg="RS256")),
            id="plain-rs256",
        ),
        pytest.param(
            jwt.encode(good_claims(), EC_KEY, algorithm="ES256", headers=good_header(alg="ES256")),
            id="plain-es256",
        ),
        pytest.param(
            forge(good_header(alg="RS256"), good_claims(), secret=RSA_PUBLIC_PEM),
            id="rs256-header-hmac-with-public-pem",
        ),
        pytest.param(
            forge(good_header(), good_claims(), secret=RSA_PUBLIC_PEM),
            id="hs256-hmac-with-public-pem",
        ),
    ],
)
def test_hs_rs_swapped_state_is_refused(token: str) -> None:
    """An attacker signs with a key pair or with a public key as HMAC secret; neither is ours."""
    refused(token)


def test_public_key_cannot_become_a_state_secret() -> None:
    """An operator who pastes a public key as the state secret would let anyone forge states."""
    with pytest.raises(ValueError, match="public key"):
        StateKeyring(keys={"k1": RSA_PUBLIC_PEM}, active_kid="k1")
    setting = f"k1:{b64(RSA_PUBLIC_PEM)}"
    with pytest.raises(ValueError, match="public key"):
        StateKeyring.from_setting(setting)


@pytest.mark.parametrize(
    ("alg", "digest"),
    [
        ("HS384", hashlib.sha384),
        ("HS512", hashlib.sha512),
        ("hs256", hashlib.sha256),
        (["HS256"], hashlib.sha256),
    ],
)
def test_state_with_another_algorithm_is_refused(alg: Any, digest: Any) -> None:
    """Only HS256 is ever accepted, even when signed with our own key."""
    refused(forge(good_header(alg=alg), good_claims(), digest=digest))


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(good_header(kid="k0"), id="unknown-kid"),
        pytest.param(good_header(kid=""), id="empty-kid"),
        pytest.param(good_header(kid=["k2"]), id="list-kid"),
        pytest.param({"alg": "HS256", "typ": STATE_TYP}, id="no-kid"),
    ],
)
def test_state_signed_with_unknown_key_id_is_refused(header: dict[str, Any]) -> None:
    """A state naming a key we do not hold (or none) never reaches signature checking."""
    assert "key" in refused(forge(header, good_claims())).detail


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(good_header(typ="JWT"), id="JWT"),
        pytest.param(good_header(typ="ctt-result+jwt"), id="another-of-ours"),
        pytest.param(good_header(typ="CTT-STATE+JWT"), id="upper-case"),
        pytest.param({"alg": "HS256", "kid": "k2"}, id="no-typ"),
    ],
)
def test_state_with_wrong_typ_is_refused(header: dict[str, Any]) -> None:
    """Another kind of token signed with the same key cannot be replayed as a state."""
    refused(forge(header, good_claims()))


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(good_header(jku="https://evil.example/jwks"), id="jku"),
        pytest.param(good_header(crit=["b64"], b64=False), id="crit-b64"),
        pytest.param(
            '{"alg":"none","alg":"HS256","typ":"ctt-state+jwt","kid":"k2"}', id="duplicate-alg"
        ),
        pytest.param('["HS256"]', id="not-an-object"),
    ],
)
def test_state_with_a_strange_header_is_refused(header: dict[str, Any] | str) -> None:
    """Header tricks (remote keys, detached payloads, ambiguous JSON) are refused outright."""
    refused(forge(header, good_claims()))


@pytest.mark.parametrize("claim", REQUIRED_CLAIMS)
def test_state_missing_a_claim_is_refused(claim: str) -> None:
    """A correctly signed token lacking any claim the callback relies on is not a state."""
    claims = good_claims()
    del claims[claim]
    refused(forge(good_header(), claims))
    refused(forge(good_header(), good_claims(**{claim: None})))


@pytest.mark.parametrize(
    "changes",
    [
        {"iat": str(int(NOW.timestamp()))},
        {"iat": True},
        {"exp": float(NOW.timestamp() + 600)},
        {"jti": 12345},
        {"jti": ""},
        {CLAIM_ACTION_ITEM: ["act_1"]},
        {CLAIM_ACTION_TYPE: {"x": 1}},
        {CLAIM_CALLBACK_URL: ""},
        {CLAIM_BINDING: 1},
        {"exp": int(NOW.timestamp())},
        {"exp": 10**30, "iat": 10**29},
    ],
    ids=str,
)
def test_state_with_mistyped_claims_is_refused(changes: dict[str, Any]) -> None:
    """Claims of the wrong type or impossible times are refused even under a valid signature."""
    error = refused(forge(good_header(), good_claims(**changes)))
    assert type(error) is errors.StateInvalid


def test_state_from_the_future_is_refused() -> None:
    """A state issued later than now (a skewed or compromised minter) is not accepted."""
    token, _ = mint(now=NOW + timedelta(minutes=2))
    error = refused(token)
    assert type(error) is errors.StateInvalid
    assert verify(token, now=NOW + timedelta(minutes=2) - timedelta(seconds=5))


def test_rotated_key_still_verifies_flows_in_flight() -> None:
    """A flow started just before a key rotation completes just after it."""
    before = StateKeyring(keys={"k1": OLD_SECRET}, active_kid="k1")
    token, flow = mint(keyring=before)
    after = StateKeyring(keys={"k2": ACTIVE_SECRET, "k1": OLD_SECRET}, active_kid="k2")
    assert verify(token, keyring=after) == flow
    new_token, _ = mint(keyring=after)
    assert jwt.get_unverified_header(new_token)["kid"] == "k2"
    retired = StateKeyring(keys={"k2": ACTIVE_SECRET}, active_kid="k2")
    refused(token, keyring=retired)


def test_kid_cannot_pick_another_keys_secret() -> None:
    """A state signed with the old key but claiming the active key id does not verify."""
    refused(forge(good_header(kid="k2"), good_claims(), secret=OLD_SECRET))


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(TOKEN + "=", id="padded-signature"),
        pytest.param(TOKEN + "\n", id="trailing-newline"),
        pytest.param(" " + TOKEN, id="leading-space"),
        pytest.param(TOKEN.encode(), id="bytes"),
        pytest.param(None, id="none"),
        pytest.param(12345, id="int"),
        pytest.param("", id="empty"),
        pytest.param(TOKEN + "." + TOKEN.split(".")[2], id="four-segments"),
        pytest.param(TOKEN.rsplit(".", 1)[0], id="two-segments"),
        pytest.param(TOKEN.rsplit(".", 1)[0] + ".", id="empty-signature"),
    ],
)
def test_state_in_another_spelling_is_refused(token: object) -> None:
    """Only the exact compact form we mint is read: no padding, whitespace or extra parts."""
    refused(token)


def test_overlong_state_is_refused_before_parsing() -> None:
    """A huge state (a parser-exhaustion attempt) is refused on its length alone."""
    claims = good_claims(**{CLAIM_CALLBACK_URL: "https://portal.example.com/" + "a" * 4000})
    error = refused(forge(good_header(), claims))
    assert "too long" in error.detail


def test_minting_a_state_too_long_to_verify_is_an_error() -> None:
    """The broker never hands out a state it would itself refuse."""
    with pytest.raises(ValueError, match="over 4096"):
        mint(callback_url="https://portal.example.com/" + "a" * 3500)
    token, _ = mint(callback_url="https://portal.example.com/" + "a" * 2000)
    assert len(token) <= MAX_STATE_LENGTH


def test_non_canonical_signature_spelling_is_refused() -> None:
    """A second spelling of the same signature (padding bits set) is a different token: refused.

    43 base64url characters carry 258 bits for a 256-bit MAC; the last character's two
    low bits are padding. A lenient decoder maps four last characters to the same bytes,
    so without a canonical-form check those spellings would verify.
    """
    head, signature = TOKEN.rsplit(".", 1)
    index = B64URL_ALPHABET.index(signature[-1])
    siblings = [B64URL_ALPHABET[(index & ~3) | low] for low in range(4)]
    siblings.remove(signature[-1])
    for last in siblings:
        spelling = f"{head}.{signature[:-1]}{last}"
        assert unb64(spelling.rsplit(".", 1)[1]) == unb64(signature)  # the trap is real
        assert type(refused(spelling)) is errors.StateInvalid


def test_error_details_never_echo_the_state() -> None:
    """Error details may be logged or shown; they must not leak the token."""
    head = TOKEN.rsplit(".", 1)[0]
    attempts = [
        f"{head}.{'A' * 43}",
        TOKEN + "x",
        forge(good_header(kid="k0"), good_claims()),
        forge(good_header(), good_claims(iss="https://other.example")),
    ]
    for attempt in attempts:
        error = refused(attempt)
        for part in attempt.split("."):
            assert part not in error.detail
            assert part not in str(error)


# -- browser binding -----------------------------------------------------------


def test_binding_nonce_never_appears_in_the_state() -> None:
    """Someone who reads the state in a URL or log still cannot produce the binding cookie."""
    decoded = "".join(unb64(part).decode("latin-1") for part in TOKEN.split("."))
    for nonce_form in (NONCE, b64(NONCE.encode())):
        assert nonce_form not in TOKEN
        assert nonce_form not in decoded
    assert FLOW.binding_hash == b64(hashlib.sha256(NONCE.encode()).digest())


def test_binding_mismatch_is_detected() -> None:
    """A callback replayed from another browser lacks the nonce cookie the state was minted for."""
    flow = verify(TOKEN)
    assert binding_matches(flow, NONCE)
    assert not binding_matches(flow, "another-browsers-nonce")
    assert not binding_matches(flow, NONCE + "x")
    assert not binding_matches(flow, None)
    assert not binding_matches(flow, "")
    assert not binding_matches(flow, "x" * 10_000)
    assert not binding_matches(flow, FLOW.binding_hash)  # the hash itself is not the nonce


def test_new_binding_nonce_is_128_random_bits() -> None:
    """Binding nonces are unguessable and distinct."""
    source = rng(3)
    first, second = new_binding_nonce(source), new_binding_nonce(source)
    assert len(unb64(first)) == 16
    assert first != second
    assert set(first) <= set(B64URL_ALPHABET)


def test_short_random_source_is_an_error() -> None:
    """A random source that returns too few bytes would silently weaken ids; refuse it."""
    with pytest.raises(ValueError, match="random_bytes"):
        new_binding_nonce(lambda n: b"\x00" * (n - 1))


# -- minting inputs ----------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {"now": NOW.replace(tzinfo=None)},
        {"lifetime_seconds": 0},
        {"lifetime_seconds": 3601},
        {"lifetime_seconds": True},
        {"action_item_id": ""},
        {"callback_url": ""},
        {"binding_nonce": ""},
        {"issuer": ""},
    ],
    ids=str,
)
def test_mint_refuses_bad_inputs(overrides: dict[str, Any]) -> None:
    """Programming mistakes at minting are loud ValueErrors, never a weak state."""
    with pytest.raises(ValueError):
        mint(**overrides)


def test_verify_refuses_a_naive_clock() -> None:
    """A naive ``now`` would compare local time with UTC claims; refuse it."""
    with pytest.raises(ValueError, match="timezone-aware"):
        verify(TOKEN, now=NOW.replace(tzinfo=None))


# -- the keyring -----------------------------------------------------------------


def test_keyring_repr_never_shows_secrets() -> None:
    """Logging the keyring (or settings holding it) never leaks a key."""
    text = repr(KEYRING) + str(KEYRING)
    assert "k1" in text
    assert "k2" in text
    for secret in (OLD_SECRET, ACTIVE_SECRET):
        assert repr(secret) not in text
        assert b64(secret) not in text
        assert secret.hex() not in text


@pytest.mark.parametrize(
    ("keys", "active", "message"),
    [
        ({}, "k1", "at least one key"),
        ({"k1": b"short"}, "k1", "at least 32 bytes"),
        ({"k1": "x" * 40}, "k1", "must be bytes"),
        ({"bad kid": OLD_SECRET}, "bad kid", "key id"),
        ({"k1": OLD_SECRET}, "k9", "not in the keyring"),
    ],
)
def test_keyring_refuses_weak_or_inconsistent_keys(
    keys: dict[str, Any], active: str, message: str
) -> None:
    """A keyring that would sign weakly, or with a key it lacks, cannot be built."""
    with pytest.raises(ValueError, match=message):
        StateKeyring(keys=keys, active_kid=active)


def test_keyring_is_not_changed_by_its_callers_dict() -> None:
    """Mutating the dict the keyring came from cannot swap a key behind its back."""
    keys = {"k1": OLD_SECRET}
    ring = StateKeyring(keys=keys, active_kid="k1")
    keys["k1"] = b"y" * 32
    assert ring.keys["k1"] == OLD_SECRET
    with pytest.raises(TypeError):
        ring.keys["k1"] = b"z" * 32  # type: ignore[index]


def test_keyring_from_setting_makes_the_first_key_active() -> None:
    """Operators rotate by putting the new key first and keeping the old one after it."""
    ring = StateKeyring.from_setting(f" new:{b64(ACTIVE_SECRET)} , old:{b64(OLD_SECRET)}== ")
    assert ring.active_kid == "new"
    assert ring.keys == {"new": ACTIVE_SECRET, "old": OLD_SECRET}
    assert StateKeyring.from_setting(ring.to_setting()) == ring


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("k1", "KID:BASE64URL-SECRET"),
        ("k1:", "KID:BASE64URL-SECRET"),
        (f":{b64(OLD_SECRET)}", "KID:BASE64URL-SECRET"),
        (f"k1:{b64(OLD_SECRET)},", "#2"),
        (f"k 1:{b64(OLD_SECRET)}", "key id"),
        (f"k1:{b64(OLD_SECRET)},k1:{b64(ACTIVE_SECRET)}", "appears twice"),
        ("k1:not*base64!", "not valid base64url"),
        (f"k1:{b64(OLD_SECRET)[:-1]}B", "not valid base64url"),
        (f"k1:{b64(b'only sixteen byte')}", "at least 32 bytes, got 17"),
    ],
)
def test_keyring_setting_problems_are_explained(setting: str, message: str) -> None:
    """A bad setting fails at start-up with a message naming the problem, never the secret."""
    with pytest.raises(ValueError, match=message) as caught:
        StateKeyring.from_setting(setting)
    for secret in (OLD_SECRET, ACTIVE_SECRET):
        assert b64(secret)[:20] not in str(caught.value)


def test_generated_keyring_signs_and_verifies() -> None:
    """A freshly generated keyring holds one 256-bit key and works end to end."""
    ring = StateKeyring.generate(rng(11))
    assert len(ring.keys[ring.active_kid]) == 32
    token, flow = mint(keyring=ring)
    assert verify(token, keyring=ring) == flow
    assert StateKeyring.generate(rng(12)).active_kid != ring.active_kid


# -- properties --------------------------------------------------------------------

# Broad on purpose: the base64url alphabet, JWS separators and padding, and any Unicode.
ANY_CHARACTER = st.one_of(
    st.sampled_from(B64URL_ALPHABET + ".=+/ \n\x00"),
    st.characters(codec="utf-8"),
)


@st.composite
def single_character_changes(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["substitute", "delete", "insert"]))
    if kind == "insert":
        position = draw(st.integers(0, len(TOKEN)))
        return TOKEN[:position] + draw(ANY_CHARACTER) + TOKEN[position:]
    position = draw(st.integers(0, len(TOKEN) - 1))
    if kind == "delete":
        return TOKEN[:position] + TOKEN[position + 1 :]
    replacement = draw(ANY_CHARACTER.filter(lambda char: char != TOKEN[position]))
    return TOKEN[:position] + replacement + TOKEN[position + 1 :]


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(single_character_changes())
@example(TOKEN[:-1] + ("B" if TOKEN[-1] != "B" else "C"))
@example(TOKEN + "=")
@example(TOKEN[:-1])
def test_any_single_character_change_to_a_state_is_refused(changed: str) -> None:
    """However an attacker edits one character of a state, it is refused as invalid."""
    assert changed != TOKEN
    assert type(refused(changed)) is errors.StateInvalid


def test_every_base64url_substitution_is_refused() -> None:
    """Exhaustively: every position, every other base64url character or separator."""
    for position, original in enumerate(TOKEN):
        for char in B64URL_ALPHABET + ".=":
            if char == original:
                continue
            changed = TOKEN[:position] + char + TOKEN[position + 1 :]
            with pytest.raises(errors.StateInvalid) as caught:
                verify(changed)
            assert type(caught.value) is errors.StateInvalid, (position, char)


JWT_ISH = st.builds(
    lambda parts: ".".join(parts),
    st.lists(st.text(alphabet=B64URL_ALPHABET + "=", max_size=60), min_size=1, max_size=4),
)


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(), JWT_ISH, st.binary(), st.none(), st.integers()))
def test_garbage_state_never_raises_anything_but_state_invalid(garbage: object) -> None:
    """Whatever arrives as the state, the broker answers StateInvalid, never a 500."""
    refused(garbage)


@settings(max_examples=300, deadline=None)
@given(
    header=st.dictionaries(
        st.sampled_from(["alg", "typ", "kid", "crit", "b64", "jku", "x"]),
        st.one_of(
            st.sampled_from(["HS256", STATE_TYP, "k1", "k2", "none", "RS256"]),
            st.none(),
            st.booleans(),
            st.integers(),
            st.lists(st.text(max_size=5), max_size=2),
        ),
    ),
    claims=st.one_of(
        st.dictionaries(
            st.sampled_from([*REQUIRED_CLAIMS, "nbf", "sub"]),
            st.one_of(
                st.integers(),
                st.floats(allow_nan=False),
                st.text(max_size=20),
                st.none(),
                st.booleans(),
                st.lists(st.text(max_size=5), max_size=2),
            ),
        ),
        st.text(max_size=30),
    ),
)
def test_signed_nonsense_never_raises_anything_but_state_invalid(
    header: dict[str, Any], claims: dict[str, Any] | str
) -> None:
    """Even a token signed with our own key but holding nonsense ends in StateInvalid."""
    refused(forge(header, claims))
