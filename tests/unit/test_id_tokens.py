"""ID token checks against the in-process Entra emulator: genuine, tampered and forged tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt
import msal
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker import errors
from broker.id_tokens import (
    MAX_ID_TOKEN_LENGTH,
    IdTokenClaims,
    JwksCache,
    validate_id_token,
)
from emulator import (
    CONSUMERS_TENANT_ID,
    GLOBAL_ADMIN_ROLE_ID,
    Emulator,
    complete_browser_flow,
    create_emulator_app,
    default_config,
)
from emulator.seed import (
    CONTOSO_ADMIN,
    CONTOSO_TENANT_ID,
    CONTOSO_USER,
    FABRIKAM_ADMIN,
    FABRIKAM_TENANT_ID,
    SIGNIN_APP_ID,
    SIGNIN_APP_SECRET,
)

with warnings.catch_warnings():
    # Starlette 1.x warns that its TestClient still runs on httpx; harmless here.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient

ISSUER = "https://login.emulator.test"
REDIRECT_URI = "http://localhost:8000/callback"
JWKS_URI = f"{ISSUER}/organizations/discovery/v2.0/keys"
START = datetime(2026, 11, 27, 9, 0, 0, tzinfo=UTC)
NONCE = "n-0123456789abcdef"


# --------------------------------------------------------------------------- helpers


class FakeClock:
    """One settable 'now' shared by the emulator (Unix seconds) and the broker (datetime)."""

    def __init__(self, start: datetime = START) -> None:
        self.current = start

    def __call__(self) -> datetime:
        return self.current

    def unix(self) -> float:
        return self.current.timestamp()

    def advance(self, **delta: float) -> None:
        self.current += timedelta(**delta)


@dataclass
class CountingClient:
    """The broker's HTTP client for JWKS fetches: the emulator, with every GET counted."""

    inner: httpx.Client
    gets: Counter[str] = field(default_factory=Counter)
    timeouts: list[float] = field(default_factory=list)

    def get(self, url: str, *, timeout: float) -> httpx.Response:
        self.gets[url] += 1
        # Recorded, not forwarded: Starlette's TestClient warns about per-request timeouts.
        self.timeouts.append(timeout)
        return self.inner.get(url)


@dataclass
class World:
    clock: FakeClock
    emulator: Emulator
    client: TestClient
    http: CountingClient
    jwks: JwksCache

    def sign_in(self, username: str, nonce: str = NONCE) -> str:
        """A genuine ID token: authorize, click through the pages, redeem the code."""
        query = urlencode(
            {
                "client_id": SIGNIN_APP_ID,
                "response_type": "code",
                "redirect_uri": REDIRECT_URI,
                "scope": "openid profile User.Read",
                "state": "s-1",
                "nonce": nonce,
            }
        )
        url = f"{ISSUER}/organizations/oauth2/v2.0/authorize?{query}"
        result = complete_browser_flow(self.client, url, username=username)
        answer = self.client.post(
            f"{ISSUER}/organizations/oauth2/v2.0/token",
            data={
                "grant_type": "authorization_code",
                "code": result.params["code"],
                "redirect_uri": REDIRECT_URI,
                "client_id": SIGNIN_APP_ID,
                "client_secret": SIGNIN_APP_SECRET,
                "scope": "openid profile User.Read",
            },
        )
        assert answer.status_code == 200, answer.text
        token: str = answer.json()["id_token"]
        return token

    def tampered(self, claims: Mapping[str, object | None]) -> str:
        """A token Microsoft really signed, whose claims were chosen by the test."""
        self.emulator.override_next_id_token_claims(claims)
        return self.sign_in(CONTOSO_ADMIN.preferred_username)

    def validate(self, token: str, **overrides: Any) -> IdTokenClaims:
        arguments: dict[str, Any] = {
            "jwks": self.jwks,
            "jwks_uri": JWKS_URI,
            "client_id": SIGNIN_APP_ID,
            "authority_host": ISSUER,
            "expected_nonce": NONCE,
            "now": self.clock(),
        }
        arguments.update(overrides)
        return validate_id_token(token, **arguments)

    def refused(self, token: str, **overrides: Any) -> str:
        """The name of the check that refused ``token``."""
        with pytest.raises(errors.IdTokenInvalid) as caught:
            self.validate(token, **overrides)
        check: str = caught.value.extra["check"]
        return check

    def unavailable(self, token: str, **overrides: Any) -> str:
        """The check of a refusal because Microsoft's keys could not be fetched."""
        with pytest.raises(errors.MicrosoftUnavailable) as caught:
            self.validate(token, **overrides)
        assert caught.value.code == "MICROSOFT_UNAVAILABLE"
        check: str = caught.value.extra["check"]
        return check

    def warm(self) -> None:
        """Cache the JWKS with one genuine sign-in, then let five minutes pass."""
        self.validate(self.sign_in(CONTOSO_USER.preferred_username))
        assert self.http.gets[JWKS_URI] == 1
        # Past the refetch interval, so an unknown kid may trigger a refetch.
        self.clock.advance(minutes=5)


@pytest.fixture
def world() -> Iterator[World]:
    clock = FakeClock()
    emulator = Emulator(default_config(ISSUER), clock=clock.unix)
    with TestClient(create_emulator_app(emulator), base_url=ISSUER) as client:
        http = CountingClient(client)
        yield World(clock, emulator, client, http, JwksCache(http, clock=clock))


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _segments(header: Mapping[str, object], claims: Mapping[str, object]) -> str:
    return _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())


def good_claims(clock: FakeClock, **changes: object) -> dict[str, object]:
    """Claims that would pass every check, for tokens the attacker signs."""
    now = int(clock.unix())
    claims: dict[str, object] = {
        "aud": SIGNIN_APP_ID,
        "iss": f"{ISSUER}/{CONTOSO_TENANT_ID}/v2.0",
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
        "oid": CONTOSO_ADMIN.oid,
        "sub": "attacker-chosen-subject",
        "tid": CONTOSO_TENANT_ID,
        "nonce": NONCE,
        "wids": [GLOBAL_ADMIN_ROLE_ID],
        "ver": "2.0",
    }
    claims.update(changes)
    return claims


ATTACKER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def forge(
    claims: Mapping[str, object], kid: str, key: Any = ATTACKER_KEY, alg: str = "RS256"
) -> str:
    """Sign any JSON claims (PyJWT's JWT layer would refuse some, e.g. a non-string iss)."""
    payload = json.dumps(dict(claims)).encode()
    return jwt.api_jws.encode(payload, key, algorithm=alg, headers={"kid": kid, "typ": "JWT"})


# --------------------------------------------------------------------------- accepted tokens


def test_contoso_admin_id_token_is_accepted_with_its_claims(world: World) -> None:
    claims = world.validate(world.sign_in(CONTOSO_ADMIN.preferred_username))

    assert claims.tenant_id == CONTOSO_TENANT_ID
    assert claims.object_id == CONTOSO_ADMIN.oid
    assert claims.username == CONTOSO_ADMIN.preferred_username
    assert claims.name == CONTOSO_ADMIN.name
    assert claims.roles_wids == (GLOBAL_ADMIN_ROLE_ID,)
    assert claims.is_global_admin
    assert claims.subject
    assert claims.issued_at == START
    assert claims.expires_at == START + timedelta(hours=1)
    assert claims.raw["aud"] == SIGNIN_APP_ID
    assert "raw" not in repr(claims)


def test_other_work_tenant_validates_and_the_caller_judges_the_tenant(world: World) -> None:
    """Tenant matching is the caller's: a Fabrikam admin's token is valid and says Fabrikam."""
    claims = world.validate(world.sign_in(FABRIKAM_ADMIN.preferred_username))
    assert claims.tenant_id == FABRIKAM_TENANT_ID
    assert claims.is_global_admin
    assert world.http.timeouts == [5.0]


def test_contoso_user_is_not_a_global_admin(world: World) -> None:
    claims = world.validate(world.sign_in(CONTOSO_USER.preferred_username))
    assert claims.object_id == CONTOSO_USER.oid
    assert claims.roles_wids == ()
    assert not claims.is_global_admin


@pytest.mark.filterwarnings("ignore:response_mode=:UserWarning")
def test_token_redeemed_by_msal_validates_with_msals_hashed_nonce(world: World) -> None:
    """The nonce Microsoft echoes is the SHA-256 hex MSAL sent, not flow["nonce"] itself."""
    app = msal.ConfidentialClientApplication(
        SIGNIN_APP_ID,
        client_credential=SIGNIN_APP_SECRET,
        authority=f"{ISSUER}/organizations",
        http_client=world.client,
        instance_discovery=False,
        validate_authority=False,
    )
    flow = app.initiate_auth_code_flow(["User.Read"], redirect_uri=REDIRECT_URI)
    result = complete_browser_flow(
        world.client, flow["auth_uri"], username=CONTOSO_ADMIN.preferred_username
    )
    tokens = app.acquire_token_by_auth_code_flow(flow, result.params)

    claims = world.validate(
        tokens["id_token"], expected_nonce=hashlib.sha256(flow["nonce"].encode()).hexdigest()
    )

    assert claims.is_global_admin
    assert world.refused(tokens["id_token"], expected_nonce=flow["nonce"]) == "nonce"


def test_token_just_inside_the_skew_after_exp_is_accepted(world: World) -> None:
    token = world.sign_in(CONTOSO_USER.preferred_username)
    world.validate(token, now=START + timedelta(hours=1, seconds=119))


# --------------------------------------------------------------------------- signature and alg


def test_id_token_with_bad_signature_is_refused(world: World) -> None:
    """An attacker signs admin claims with their own key under Microsoft's kid."""
    token = forge(good_claims(world.clock), kid=world.emulator.active_kid)
    with pytest.raises(errors.IdTokenInvalid) as caught:
        world.validate(token)
    assert caught.value.extra["check"] == "signature"
    assert token.split(".")[1] not in str(caught.value)


def test_id_token_with_a_flipped_signature_byte_is_refused(world: World) -> None:
    """A genuine token whose signature was altered in transit is not trusted."""
    header, payload, signature = world.sign_in(CONTOSO_ADMIN.preferred_username).split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=="))
    raw[10] ^= 0x01
    assert world.refused(f"{header}.{payload}.{_b64(bytes(raw))}") == "signature"


def test_genuine_signature_over_edited_claims_is_refused(world: World) -> None:
    """An attacker swaps the payload of a user's token for admin claims, keeping the signature."""
    header, _, signature = world.sign_in(CONTOSO_USER.preferred_username).split(".")
    payload = _b64(json.dumps(good_claims(world.clock)).encode())
    assert world.refused(f"{header}.{payload}.{signature}") == "signature"


def test_alg_none_id_token_is_refused(world: World) -> None:
    """An attacker sends an unsigned token claiming alg none."""
    token = _segments({"alg": "none", "kid": world.emulator.active_kid}, good_claims(world.clock))
    assert world.refused(token + ".") == "alg"
    assert world.http.gets[JWKS_URI] == 0


def test_hs256_id_token_signed_with_the_public_key_is_refused(world: World) -> None:
    """An attacker HMACs a token with Microsoft's published RSA key as the secret."""
    world.warm()
    jwk = world.client.get(JWKS_URI).json()["keys"][0]
    public_key = jwt.PyJWK(jwk).key
    for secret in (
        public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        json.dumps(jwk).encode(),
    ):
        signing_input = _segments(
            {"alg": "HS256", "typ": "JWT", "kid": jwk["kid"]}, good_claims(world.clock)
        )
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        assert world.refused(f"{signing_input}.{_b64(mac)}") == "alg"


@pytest.mark.parametrize("alg", ["ES256", "RS512", "PS256", "RS256 ", "rs256"])
def test_id_token_with_another_algorithm_is_refused(world: World, alg: str) -> None:
    """Only RS256 is Entra's: an attacker picking a different algorithm gets nowhere."""
    if alg == "ES256":
        key: Any = ec.generate_private_key(ec.SECP256R1())
        token = forge(good_claims(world.clock), world.emulator.active_kid, key, alg)
    elif alg in ("RS512", "PS256"):
        token = forge(good_claims(world.clock), world.emulator.active_kid, alg=alg)
    else:
        token = _segments({"alg": alg, "kid": world.emulator.active_kid}, good_claims(world.clock))
        token += "." + _b64(b"x" * 256)
    assert world.refused(token) == "alg"


def test_id_token_without_kid_is_refused(world: World) -> None:
    """Without a kid there is no published key to check against."""
    token = jwt.encode(good_claims(world.clock), ATTACKER_KEY, algorithm="RS256")
    assert world.refused(token) == "kid"


# --------------------------------------------------------------------------- keys and the JWKS


def test_unknown_kid_id_token_is_refetched_once_then_refused(world: World) -> None:
    """Microsoft signs with a key it never published: one refetch, then refusal."""
    world.warm()
    world.emulator.use_unpublished_signing_key()
    token = world.sign_in(CONTOSO_ADMIN.preferred_username)

    assert world.refused(token) == "unknown_kid"
    assert world.http.gets[JWKS_URI] == 2
    assert world.refused(token) == "unknown_kid"
    assert world.http.gets[JWKS_URI] == 2


def test_unknown_kid_id_token_of_a_rotated_published_key_is_accepted_after_one_refetch(
    world: World,
) -> None:
    """Microsoft rolls its key: the new kid is not cached yet, one refetch finds it."""
    world.warm()
    new_kid = world.emulator.rotate_signing_key()
    token = world.sign_in(CONTOSO_ADMIN.preferred_username)
    assert jwt.get_unverified_header(token)["kid"] == new_kid

    assert world.validate(token).is_global_admin
    assert world.http.gets[JWKS_URI] == 2
    world.validate(world.sign_in(CONTOSO_USER.preferred_username))
    assert world.http.gets[JWKS_URI] == 2


def test_forged_kid_flood_fetches_jwks_at_most_once_per_interval(world: World) -> None:
    """An attacker sends many tokens with made-up kids to make us hammer Microsoft."""
    world.warm()
    for _ in range(50):
        token = forge(good_claims(world.clock), kid=secrets.token_urlsafe(20))
        assert world.refused(token) == "unknown_kid"
    assert world.http.gets[JWKS_URI] == 2

    world.clock.advance(seconds=59)
    assert world.refused(forge(good_claims(world.clock), kid="another")) == "unknown_kid"
    assert world.http.gets[JWKS_URI] == 2

    world.clock.advance(seconds=1)
    assert world.refused(forge(good_claims(world.clock), kid="and-another")) == "unknown_kid"
    assert world.http.gets[JWKS_URI] == 3


def test_cached_keys_are_refetched_after_a_day(world: World) -> None:
    """Keys Microsoft withdrew stop being trusted once the cache is a day old."""
    world.warm()
    world.clock.advance(hours=24)
    world.validate(world.sign_in(CONTOSO_USER.preferred_username))
    assert world.http.gets[JWKS_URI] == 2


class _Transport:
    """An httpx transport standing in for a misbehaving Microsoft JWKS endpoint."""

    def __init__(self, respond: Any) -> None:
        self.respond = respond
        self.calls = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        result: httpx.Response = self.respond(request)
        return result


def _timeout(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectTimeout("timed out", request=request)


@pytest.mark.parametrize(
    "respond",
    [
        _timeout,
        lambda request: httpx.Response(503, text="Service Unavailable"),
        lambda request: httpx.Response(200, text="<html>maintenance</html>"),
        lambda request: httpx.Response(200, json={"keys": "nope"}),
        lambda request: httpx.Response(200, json=[1, 2, 3]),
    ],
    ids=["timeout", "http-503", "not-json", "keys-not-a-list", "not-an-object"],
)
def test_jwks_endpoint_down_is_reported_not_crashed(world: World, respond: Any) -> None:
    """Microsoft's key endpoint fails: a distinct refusal, no crash, and no retry storm."""
    transport = _Transport(respond)
    down = JwksCache(httpx.Client(transport=httpx.MockTransport(transport)), clock=world.clock)
    token = world.sign_in(CONTOSO_ADMIN.preferred_username)

    assert world.unavailable(token, jwks=down) == "jwks_unavailable"
    assert world.unavailable(token, jwks=down) == "jwks_unavailable"
    assert transport.calls == 1


def test_jwks_of_an_unknown_tenant_is_reported_not_crashed(world: World) -> None:
    """A misconfigured JWKS URI (Entra answers 400 AADSTS90002) is an outage, not a crash."""
    token = world.sign_in(CONTOSO_ADMIN.preferred_username)
    bad_uri = f"{ISSUER}/nosuch.example/discovery/v2.0/keys"
    assert world.unavailable(token, jwks_uri=bad_uri) == "jwks_unavailable"


def test_odd_jwks_entries_are_skipped_not_fatal(world: World) -> None:
    """An EC key, an encryption key or junk next to the signing key must not disable it."""
    genuine = world.client.get(JWKS_URI).json()["keys"][0]
    ec_jwk = json.loads(
        jwt.algorithms.ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()).public_key())
    )
    document = {
        "keys": [
            "junk",
            {"kid": "no-kty"},
            {**ec_jwk, "kid": "ec"},
            {**genuine, "kid": "enc", "use": "enc"},
            {**genuine, "kid": "rs512", "alg": "RS512"},
            {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
            genuine,
        ]
    }
    client = httpx.Client(
        transport=httpx.MockTransport(lambda r: httpx.Response(200, json=document))
    )
    cache = JwksCache(client, clock=world.clock)
    assert world.validate(world.sign_in(CONTOSO_ADMIN.preferred_username), jwks=cache)
    token = forge(good_claims(world.clock), kid="enc")
    assert world.refused(token, jwks=cache) == "unknown_kid"


# --------------------------------------------------------------------------- claims


def test_id_token_with_wrong_audience_is_refused(world: World) -> None:
    """A token Microsoft issued to another app is replayed at our callback."""
    assert world.refused(world.tampered({"aud": "some-other-app"})) == "aud"
    assert world.refused(world.tampered({"aud": [SIGNIN_APP_ID]})) == "aud"
    assert world.refused(world.tampered({"aud": None})) == "aud"


def test_id_token_with_wrong_issuer_is_refused(world: World) -> None:
    """A token claiming another issuer host than our authority is not Microsoft's."""
    assert world.refused(world.tampered({"iss": "https://evil.example/x/v2.0"})) == "iss"
    assert world.refused(world.tampered({"iss": f"{ISSUER}/{CONTOSO_TENANT_ID}/v2.0/"})) == "iss"
    assert world.refused(world.tampered({"iss": None})) == "iss"
    genuine = world.sign_in(CONTOSO_ADMIN.preferred_username)
    assert world.refused(genuine, authority_host="https://login.microsoftonline.com") == "iss"


def test_id_token_with_wrong_issuer_of_another_tenant_is_refused(world: World) -> None:
    """The issuer names Fabrikam while tid says Contoso: the two must agree."""
    token = world.tampered({"iss": f"{ISSUER}/{FABRIKAM_TENANT_ID}/v2.0"})
    assert world.refused(token) == "iss"


def test_id_token_expired_is_refused(world: World) -> None:
    """A token captured an hour ago is presented again after it lapsed."""
    token = world.sign_in(CONTOSO_ADMIN.preferred_username)
    assert world.refused(token, now=START + timedelta(hours=1, seconds=120)) == "exp"
    assert world.refused(world.tampered({"exp": None})) == "exp"
    assert world.refused(world.tampered({"exp": True})) == "exp"
    assert world.refused(world.tampered({"exp": "4102444800"})) == "exp"


def test_id_token_not_yet_valid_is_refused(world: World) -> None:
    """A token whose nbf lies beyond the allowed skew is not usable yet."""
    token = world.tampered({"nbf": int(world.clock.unix()) + 121})
    assert world.refused(token) == "nbf"
    assert world.validate(world.tampered({"nbf": int(world.clock.unix()) + 119}))


def test_id_token_issued_in_the_future_is_refused(world: World) -> None:
    """A token whose iat is ten minutes ahead of our clock did not come from this sign-in."""
    token = world.sign_in(CONTOSO_ADMIN.preferred_username)
    assert world.refused(token, now=START - timedelta(minutes=10)) == "iat"
    assert world.refused(world.tampered({"iat": None})) == "iat"


def test_id_token_with_wrong_nonce_is_refused(world: World) -> None:
    """An attacker injects a token from their own sign-in into the victim's callback."""
    assert world.refused(world.sign_in(CONTOSO_ADMIN.preferred_username, nonce="other")) == "nonce"
    assert world.refused(world.tampered({"nonce": None})) == "nonce"
    assert world.refused(world.tampered({"nonce": 12345})) == "nonce"


def test_id_token_with_missing_tid_is_refused(world: World) -> None:
    """Without a tenant id we cannot tell whose directory vouched for the user."""
    assert world.refused(world.tampered({"tid": None})) == "tid"
    assert world.refused(world.tampered({"tid": "contoso.onmicrosoft.com"})) == "tid"


def test_id_token_of_personal_account_tenant_is_refused(world: World) -> None:
    """A personal Microsoft account (outlook.com) is never an enterprise's administrator."""
    token = world.tampered(
        {"tid": CONSUMERS_TENANT_ID, "iss": f"{ISSUER}/{CONSUMERS_TENANT_ID}/v2.0"}
    )
    assert world.refused(token) == "personal_account"


@pytest.mark.parametrize("claim", ["oid", "sub"])
def test_id_token_without_user_identifiers_is_refused(world: World, claim: str) -> None:
    """A token that does not say who signed in cannot identify an administrator."""
    assert world.refused(world.tampered({claim: None})) == claim


def test_id_token_with_malformed_wids_is_refused(world: World) -> None:
    """A wids claim that is not a list of role ids is not silently read as 'no roles'."""
    assert world.refused(world.tampered({"wids": GLOBAL_ADMIN_ROLE_ID})) == "wids"


def test_oversized_id_token_is_refused_before_any_parsing(world: World) -> None:
    """A megabyte of junk in the token field costs no decoding and no JWKS fetch."""
    header = _b64(json.dumps({"alg": "RS256", "kid": "k"}).encode())
    token = f"{header}.{'A' * MAX_ID_TOKEN_LENGTH}.sig"
    assert world.refused(token) == "format"
    assert world.http.gets[JWKS_URI] == 0


# --------------------------------------------------------------------------- properties


_JSON_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.text(max_size=20),
    st.lists(st.text(max_size=5), max_size=3),
)
_HEADERS = st.dictionaries(st.sampled_from(["alg", "kid", "crit", "b64", "typ"]), _JSON_VALUES)
_ALMOST_TOKENS = st.tuples(
    _HEADERS.map(lambda header: {"alg": "RS256", **header}), st.text(max_size=40)
).map(lambda pair: f"{_b64(json.dumps(pair[0]).encode())}.{_b64(pair[1].encode())}.abc")


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    text=st.one_of(
        st.text(max_size=300),
        st.lists(st.text(alphabet="ABCxyz019-_=.+/", max_size=60), max_size=4).map(".".join),
        _ALMOST_TOKENS,
    )
)
def test_arbitrary_text_only_ever_raises_id_token_invalid(world: World, text: str) -> None:
    """Whatever lands in the token field, the caller sees IdTokenInvalid and nothing else."""
    with pytest.raises(errors.IdTokenInvalid):
        world.validate(text)


@pytest.fixture
def trusted_jwks(world: World) -> JwksCache:
    """A JWKS that publishes ATTACKER_KEY as "trusted", so tests can sign any claims."""
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(ATTACKER_KEY.public_key()))
    document = {"keys": [{**jwk, "kid": "trusted", "use": "sig", "alg": "RS256"}]}
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=document))
    return JwksCache(httpx.Client(transport=transport), clock=world.clock)


CHECKED_CLAIMS = (
    "aud",
    "iss",
    "iat",
    "nbf",
    "exp",
    "oid",
    "sub",
    "tid",
    "nonce",
    "wids",
    "name",
    "preferred_username",
)
_CLAIM_VALUES = st.one_of(
    _JSON_VALUES,
    st.floats(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.text(alphabet=st.characters(codec=None), max_size=10),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    changes=st.dictionaries(
        st.sampled_from(CHECKED_CLAIMS),
        _CLAIM_VALUES,
        max_size=4,
    )
)
def test_any_claim_values_under_a_trusted_signature_are_refused_or_accepted_never_crash(
    world: World, trusted_jwks: JwksCache, changes: dict[str, object]
) -> None:
    """Even a correctly signed token with absurd claims (NaN, 10**30, lists) is judged calmly."""
    token = forge(good_claims(world.clock, **changes), kid="trusted")
    try:
        claims = world.validate(token, jwks=trusted_jwks)
    except errors.IdTokenInvalid:
        return
    assert claims.tenant_id == CONTOSO_TENANT_ID
    assert claims.raw["aud"] == SIGNIN_APP_ID


def test_claims_signed_by_a_trusted_key_pass_the_same_checks(
    world: World, trusted_jwks: JwksCache
) -> None:
    """The forging fixture itself is sound: good claims pass, so refusals above mean something."""
    token = forge(good_claims(world.clock), kid="trusted")
    assert world.validate(token, jwks=trusted_jwks).is_global_admin
    lone_surrogate = forge(good_claims(world.clock, nonce="\ud800"), kid="trusted")
    assert world.refused(lone_surrogate, jwks=trusted_jwks) == "nonce"


@pytest.fixture
def genuine_token(world: World) -> str:
    return world.sign_in(CONTOSO_ADMIN.preferred_username)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_single_character_change_to_a_genuine_token_is_refused(
    world: World, genuine_token: str, data: st.DataObject
) -> None:
    """Changing one character anywhere in a genuine token never yields an accepted token."""
    index = data.draw(st.integers(min_value=0, max_value=len(genuine_token) - 1))
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.="
    replacement = data.draw(st.sampled_from(alphabet).filter(lambda c: c != genuine_token[index]))
    mutated = genuine_token[:index] + replacement + genuine_token[index + 1 :]
    with pytest.raises(errors.IdTokenInvalid):
        world.validate(mutated)
