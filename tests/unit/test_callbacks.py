"""The callback URL policy: every refusal has its own code, nothing unlisted gets through."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker import errors
from broker.callbacks import (
    MAX_URL_LENGTH,
    RESERVED_PARAMETERS,
    check_callback_url,
    normalize_allowed_callback,
    parse_callback_url,
)

ALLOWED = ("https://portal.example.com/teams/callback",)


def refused(url: str, *, development: bool = False) -> str:
    with pytest.raises(errors.CallbackUrlRejected) as caught:
        check_callback_url(url, ALLOWED, development=development)
    return caught.value.code


def test_exact_allowed_url_is_accepted_and_normalised() -> None:
    accepted = check_callback_url(
        "HTTPS://Portal.Example.com:443/teams/callback", ALLOWED, development=False
    )
    assert accepted.url == "https://portal.example.com/teams/callback"


def test_provider_query_is_kept() -> None:
    accepted = check_callback_url(
        "https://portal.example.com/teams/callback?customer=1042&lang=en",
        ALLOWED,
        development=False,
    )
    assert accepted.query == "customer=1042&lang=en"


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("https://evil.example.com/teams/callback", "CALLBACK_URL_NOT_ALLOWED"),
        ("https://portal.example.com.evil.example/teams/callback", "CALLBACK_URL_NOT_ALLOWED"),
        ("https://evilportal.example.com/teams/callback", "CALLBACK_URL_NOT_ALLOWED"),
        ("https://portal.example.com:8443/teams/callback", "CALLBACK_URL_NOT_ALLOWED"),
        ("https://portal.example.com/teams/callback/extra", "CALLBACK_URL_NOT_ALLOWED"),
        ("https://portal.example.com/teams/callbac", "CALLBACK_URL_NOT_ALLOWED"),
        ("https://portal.example.com/Teams/Callback", "CALLBACK_URL_NOT_ALLOWED"),
        ("http://portal.example.com/teams/callback", "CALLBACK_URL_INSECURE_HTTP"),
        ("https://attacker@portal.example.com/teams/callback", "CALLBACK_URL_USERINFO"),
        ("https://portal.example.com@evil.example/teams/callback", "CALLBACK_URL_USERINFO"),
        ("https://a:b@portal.example.com/teams/callback", "CALLBACK_URL_USERINFO"),
        ("https://portal.example.com/teams/callback#frag", "CALLBACK_URL_FRAGMENT"),
        ("https://portal.example.com/teams/callback#", "CALLBACK_URL_FRAGMENT"),
        ("https://portal.example.com\\@evil.example/teams/callback", "CALLBACK_URL_BACKSLASH"),
        ("https:\\\\evil.example/teams/callback", "CALLBACK_URL_BACKSLASH"),
        ("https://portal.example.com/teams/callback ", "CALLBACK_URL_FORBIDDEN_CHARACTERS"),
        (" https://portal.example.com/teams/callback", "CALLBACK_URL_FORBIDDEN_CHARACTERS"),
        ("https://portal.example.com/teams/\tcallback", "CALLBACK_URL_FORBIDDEN_CHARACTERS"),
        ("https://portal.example.com/teams/callback\r\nX: y", "CALLBACK_URL_FORBIDDEN_CHARACTERS"),
        ("https://portal.example.com/teams/callback\x00", "CALLBACK_URL_FORBIDDEN_CHARACTERS"),
        ("https://p\u043ertal.example.com/teams/callback", "CALLBACK_URL_FORBIDDEN_CHARACTERS"),
        ("https://portal.example.com/teams/callb\u0430ck", "CALLBACK_URL_FORBIDDEN_CHARACTERS"),
        ("https://portal%2eexample.com/teams/callback", "CALLBACK_URL_ENCODED_CHARACTERS"),
        ("https://portal.example.com/teams%2fcallback", "CALLBACK_URL_ENCODED_CHARACTERS"),
        ("https://portal.example.com/teams/%2e%2e/admin", "CALLBACK_URL_ENCODED_CHARACTERS"),
        ("https://portal.example.com/teams/callback%00", "CALLBACK_URL_ENCODED_CHARACTERS"),
        ("https://portal.example.com/teams/callback%252f", "CALLBACK_URL_ENCODED_CHARACTERS"),
        (
            "https://portal.example.com/teams/callback?x=%0d%0aSet-Cookie",
            "CALLBACK_URL_ENCODED_CHARACTERS",
        ),
        ("https://portal.example.com/teams/../teams/callback", "CALLBACK_URL_MALFORMED"),
        ("https://portal.example.com//teams/callback", "CALLBACK_URL_MALFORMED"),
        ("javascript:alert(1)", "CALLBACK_URL_SCHEME_NOT_ALLOWED"),
        ("JavaScript://portal.example.com/%0aalert(1)", "CALLBACK_URL_SCHEME_NOT_ALLOWED"),
        ("data:text/html,<script>alert(1)</script>", "CALLBACK_URL_SCHEME_NOT_ALLOWED"),
        ("ftp://portal.example.com/teams/callback", "CALLBACK_URL_SCHEME_NOT_ALLOWED"),
        ("//portal.example.com/teams/callback", "CALLBACK_URL_MALFORMED"),
        ("/teams/callback", "CALLBACK_URL_MALFORMED"),
        ("https:portal.example.com/teams/callback", "CALLBACK_URL_MALFORMED"),
        ("https:///teams/callback", "CALLBACK_URL_MALFORMED"),
        ("https://portal.example.com:99999/teams/callback", "CALLBACK_URL_MALFORMED"),
        ("https://portal.example.com:0/teams/callback", "CALLBACK_URL_MALFORMED"),
        ("https://portal.example.com./teams/callback", "CALLBACK_URL_MALFORMED"),
        ("https://0x7f.1/teams/callback", "CALLBACK_URL_MALFORMED"),
        ("https://2130706433/teams/callback", "CALLBACK_URL_MALFORMED"),
        ("https://[::ffff:127.0.0.1]/teams/callback", "CALLBACK_URL_MALFORMED"),
        ("https://portal.example.com/teams/callback?state=x", "CALLBACK_URL_RESERVED_PARAMETER"),
        (
            "https://portal.example.com/teams/callback?resultCode=1",
            "CALLBACK_URL_RESERVED_PARAMETER",
        ),
        ("https://portal.example.com/" + "a" * MAX_URL_LENGTH, "CALLBACK_URL_TOO_LONG"),
        ("", "CALLBACK_URL_MALFORMED"),
    ],
)
def test_hostile_callback_is_refused_with_its_code(url: str, code: str) -> None:
    assert refused(url) == code


@pytest.mark.parametrize(
    "query",
    ["State=x&Status=completed", "STATE=x", "resultcode=ctt_rc_x", "ErrorCode=NONE", "sTaTuS=ok"],
)
def test_reserved_parameter_in_another_case_is_refused(query: str) -> None:
    """A provider URL with ``?State=x``: a case-folding framework reads our ``state`` as theirs."""
    assert refused(f"{ALLOWED[0]}?{query}") == "CALLBACK_URL_RESERVED_PARAMETER"


@pytest.mark.parametrize("query", ["x=1;state=evil", "a=b;Status=completed&c=d", "x;resultCode"])
def test_reserved_parameter_smuggled_after_a_semicolon_is_refused(query: str) -> None:
    """``?x=1;state=evil``: a server that splits on ``;`` would read the attacker's state."""
    assert refused(f"{ALLOWED[0]}?{query}") == "CALLBACK_URL_RESERVED_PARAMETER"


def test_reserved_parameter_name_percent_encoded_is_refused() -> None:
    """``?%73tate=x`` decodes to ``state`` on the provider's side: refused like the plain name."""
    assert refused(f"{ALLOWED[0]}?%73tate=x") == "CALLBACK_URL_RESERVED_PARAMETER"


@settings(max_examples=200, deadline=None)
@given(
    name=st.sampled_from(sorted(RESERVED_PARAMETERS)).flatmap(
        lambda n: st.tuples(*(st.sampled_from([c.lower(), c.upper()]) for c in n)).map("".join)
    ),
    before=st.sampled_from(["", "a=1&", "a=1;", "a;"]),
    after=st.sampled_from(["", "&b=2", ";b=2"]),
)
def test_no_spelling_or_separator_lets_a_reserved_name_through(
    name: str, before: str, after: str
) -> None:
    """Every case mix of every reserved name, after either separator, is refused."""
    assert refused(f"{ALLOWED[0]}?{before}{name}=v{after}") == "CALLBACK_URL_RESERVED_PARAMETER"


def test_plain_http_on_loopback_is_only_for_development_providers() -> None:
    allowed = ("http://127.0.0.1:9000/cb",)
    url = "http://127.0.0.1:9000/cb"
    assert check_callback_url(url, allowed, development=True).port == 9000
    with pytest.raises(errors.CallbackUrlInsecureHttp):
        check_callback_url(url, allowed, development=False)
    with pytest.raises(errors.CallbackUrlInsecureHttp):
        check_callback_url("http://portal.example.com/cb", allowed, development=True)


def test_allow_list_entries_carry_no_query_and_no_loopback_for_production() -> None:
    with pytest.raises(errors.CallbackUrlMalformed):
        normalize_allowed_callback("https://portal.example.com/cb?x=1", development=False)
    with pytest.raises(errors.CallbackUrlNotAllowed):
        normalize_allowed_callback("https://localhost/cb", development=False)
    assert normalize_allowed_callback("https://localhost/cb", development=True).is_loopback


def test_default_port_and_explicit_port_are_the_same_callback() -> None:
    assert (
        parse_callback_url("https://portal.example.com:443/x", development=False).url
        == parse_callback_url("https://portal.example.com/x", development=False).url
    )


# -- properties ---------------------------------------------------------------

url_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=120)
url_like = st.builds(
    lambda scheme, sep, host, port, path, tail: f"{scheme}{sep}{host}{port}{path}{tail}",
    st.sampled_from(["https", "http", "HTTPS", "javascript", "data", "", "https:"]),
    st.sampled_from(["://", ":", ":/", ":///", "://@", ":\\\\", "//"]),
    st.sampled_from(
        [
            "portal.example.com",
            "portal.example.com.",
            "PORTAL.example.com",
            "portal.example.com@evil.example",
            "evil.example",
            "127.0.0.1",
            "[::1]",
            "xn--portal-5ya.example.com",
            "portal.example.com%2e",
        ]
    ),
    st.sampled_from(["", ":443", ":8443", ":0", ":65536", ":-1"]),
    st.sampled_from(
        ["/teams/callback", "/teams/callback/", "/teams//callback", "", "/teams/./callback"]
    ),
    url_text,
)


def _is_the_allowed_one(url: str) -> bool:
    parsed = parse_callback_url(url, development=False)
    return (parsed.scheme, parsed.host, parsed.port, parsed.path) == (
        "https",
        "portal.example.com",
        443,
        "/teams/callback",
    )


@settings(max_examples=400, deadline=None)
@given(st.one_of(url_text, url_like))
def test_no_generated_url_outside_the_allow_list_is_accepted(url: str) -> None:
    """Whatever the input, acceptance means scheme, host, port and path equal the allowed URL."""
    try:
        accepted = check_callback_url(url, ALLOWED, development=False)
    except errors.CallbackUrlRejected:
        return
    assert _is_the_allowed_one(accepted.url)
    assert "#" not in url and "@" not in url.split("?", 1)[0] and "\\" not in url
    assert all(0x20 < ord(ch) < 0x7F for ch in url)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@%", max_size=60))
def test_any_query_on_the_allowed_url_keeps_the_same_destination(query: str) -> None:
    """A provider query can never change where the admin lands."""
    url = f"{ALLOWED[0]}?{query}"
    try:
        accepted = check_callback_url(url, ALLOWED, development=False)
    except errors.CallbackUrlRejected:
        return
    assert accepted.url.startswith(ALLOWED[0])
    assert _is_the_allowed_one(accepted.url)


@settings(max_examples=200, deadline=None)
@given(url_text)
def test_checking_never_raises_anything_but_a_callback_refusal(url: str) -> None:
    with contextlib.suppress(errors.CallbackUrlRejected):
        parse_callback_url(url, development=True)
