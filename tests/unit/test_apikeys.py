"""API key tokens: format, parsing and hashing (pure)."""

from __future__ import annotations

import hashlib

import pytest

from ganzhi.apikeys import (
    SCOPES,
    check_key,
    hash_secret,
    new_token,
    parse_token,
    secret_matches,
)


def test_new_token_has_the_documented_shape_and_parses_back() -> None:
    for _ in range(200):  # ids and secrets may contain '_' and '-': the split still holds
        key_id, secret, token = new_token()
        assert len(key_id) == 12 and len(secret) == 43
        assert token == f"gzk_{key_id}_{secret}"
        assert parse_token(token) == (key_id, secret)


def test_tokens_are_unique() -> None:
    assert len({new_token()[2] for _ in range(1000)}) == 1000


@pytest.mark.parametrize("token", [
    "", "gzk_", "Bearer gzk_abcdefghijkl_" + "s" * 43, "gzx_abcdefghijkl_" + "s" * 43,
    "gzk_short_" + "s" * 43, "gzk_abcdefghijkl_" + "s" * 5, "gzk_abcdefghijkl_" + "s" * 43 + "!",
    "gzk_abcdefghijkl" + "s" * 44,
])
def test_malformed_tokens_do_not_parse(token: str) -> None:
    assert parse_token(token) is None


def test_only_the_sha256_of_the_secret_is_compared() -> None:
    _, secret, _ = new_token()
    stored = hash_secret(secret)
    assert stored == hashlib.sha256(secret.encode()).hexdigest() and secret not in stored
    assert secret_matches(secret, stored)
    assert not secret_matches(secret + "x", stored)
    assert not secret_matches(secret, hash_secret("other"))


def test_check_key_normalises_and_refuses() -> None:
    assert check_key(" tasks ", ["feedback", "feedback"], None) == ("tasks", ["feedback"], None)
    assert check_key("s", ["staff", "silences"], ["s2", "s1", " "]) == (
        "s", ["silences", "staff"], ["s1", "s2"])
    assert {"feedback", "staff", "silences", "operator", "export", "provisioning"} == SCOPES
    for name, scopes, sites, why in (
        ("", ["staff"], None, "name"),
        ("x" * 101, ["staff"], None, "name"),
        ("k", [], None, "at least one scope"),
        ("k", ["admin"], None, "unknown scopes"),
        ("k", ["staff"], [], "at least one site"),
    ):
        with pytest.raises(ValueError, match=why):
            check_key(name, scopes, sites)
