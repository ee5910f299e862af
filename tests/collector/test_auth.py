"""collector.auth: the one set of token rules every HTTP surface uses."""

from __future__ import annotations

import base64

import pytest

from collector.auth import TokenError, check_request, check_token, credential, is_loopback, token_matches

TOKEN = "0123456789abcdef-token"


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.9.8.7", True), ("::1", True), ("[::1]", True),
    ("::ffff:127.0.0.1", True), ("localhost", True), ("fe80::1%lo", False),
    ("10.0.0.1", False), ("1270.0.0.1", False), ("127.evil.example", False),
    ("localhost.evil.example", False), ("", False), (None, False), ("::ffff:10.0.0.1", False),
])
def test_loopback_is_decided_by_ipaddress_not_by_text(host: str | None, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_tokens_shorter_than_16_characters_or_with_spaces_are_refused() -> None:
    assert check_token(None) is None and check_token("") is None
    assert check_token("x" * 16) == "x" * 16
    with pytest.raises(TokenError, match="at least 16 characters, this one has 5"):
        check_token("short")
    with pytest.raises(TokenError, match="whitespace"):
        check_token("0123456789 abcdef")


def test_the_scheme_is_case_insensitive_and_a_raw_token_never_passes() -> None:
    for scheme in ("Bearer", "bearer", "BEARER", "bEaReR"):
        assert token_matches(f"{scheme} {TOKEN}", TOKEN)
    assert not token_matches(TOKEN, TOKEN)  # no scheme
    assert not token_matches(f"Token {TOKEN}", TOKEN)
    assert not token_matches(f"Bearer {TOKEN}x", TOKEN)
    assert not token_matches("Bearer ", TOKEN) and not token_matches(None, TOKEN)
    assert not token_matches(f"Bearer {TOKEN}", None)
    basic = "Basic " + base64.b64encode(f"ops:{TOKEN}".encode()).decode()
    assert not token_matches(basic, TOKEN)  # basic auth only where a browser needs it
    assert token_matches(basic, TOKEN, allow_basic=True)
    assert credential("Basic !!notbase64", allow_basic=True) is None


def test_a_request_is_judged_the_same_way_everywhere() -> None:
    assert check_request("127.0.0.1", None, None) is None  # loopback, nothing configured
    assert check_request("127.0.0.1", None, TOKEN) is None
    denied = check_request("127.0.0.1", None, TOKEN, loopback_free=False)
    assert denied is not None and denied.status == 401
    denied = check_request("127.0.0.1", "Bearer wrong-wrong-wrong", TOKEN)
    assert denied is not None and denied.status == 401  # a wrong token is wrong from anywhere
    denied = check_request("10.0.0.2", None, None)
    assert denied is not None and denied.status == 403
    assert check_request("10.0.0.2", f"bearer {TOKEN}", TOKEN) is None
    denied = check_request("10.0.0.2", TOKEN, TOKEN)
    assert denied is not None and denied.status == 401 and TOKEN not in denied.message
