"""Passwords, access tokens and the scope of accounts and keys (pure)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from argon2 import PasswordHasher
from pydantic import SecretStr

from ganzhi import accounts
from ganzhi.access import EVERYTHING, Permission, Role, Scope
from ganzhi.apikeys import SCOPES, ApiKey
from ganzhi.settings import AuthSettings

SECRET = "unit-test-signing-key-0123456789abcdef"
S = AuthSettings(jwt_secret=SecretStr(SECRET))
NOW = datetime(2025, 1, 1, tzinfo=UTC)


def user(path: str = "/city/district-a/", role: Role = Role.STAFF) -> accounts.User:
    return accounts.User(7, "li", "Li", role, path.strip("/").split("/")[-1], path, NOW, None)


def test_passwords_hash_verify_and_rehash() -> None:
    h = accounts.hash_password("a long enough password")
    assert h.startswith("$argon2id$") and "a long enough" not in h
    assert accounts.verify_password(h, "a long enough password") == (True, False)
    assert accounts.verify_password(h, "another password") == (False, False)
    assert accounts.verify_password(None, "anything at all") == (False, False)
    assert accounts.verify_password("not a hash", "anything at all") == (False, False)
    weak = PasswordHasher(time_cost=1, memory_cost=8192).hash("a long enough password")
    assert accounts.verify_password(weak, "a long enough password") == (True, True)
    for bad in ("short", "x" * 257):
        with pytest.raises(ValueError):
            accounts.hash_password(bad)


def test_usernames() -> None:
    assert accounts.check_username(" Li.Ming ") == "li.ming"
    for bad in ("a", "-x", "with space", "x" * 65, "中文"):
        with pytest.raises(ValueError):
            accounts.check_username(bad)


def test_access_tokens_round_trip_and_refusals() -> None:
    now = datetime.now(UTC)
    token = accounts.issue_access(user(), SECRET, S, now)
    assert accounts.decode_access(token, SECRET, S) == accounts.Access(7, None)
    session = uuid.uuid4()
    named = accounts.issue_access(user(), SECRET, S, now, session=session)
    assert accounts.decode_access(named, SECRET, S) == accounts.Access(7, session)
    bad_sid = jwt.encode({"sub": "7", "iss": "ganzhi", "iat": now, "jti": "j", "sid": "x",
                          "exp": now + timedelta(minutes=5)}, SECRET)
    assert accounts.looks_like_jwt(token) and not accounts.looks_like_jwt("gzk_a_b")
    late = accounts.issue_access(user(), SECRET, S, now - timedelta(minutes=16))
    other_issuer = jwt.encode({"sub": "7", "iss": "x", "iat": now, "jti": "j",
                               "exp": now + timedelta(minutes=5)}, SECRET)
    no_jti = jwt.encode({"sub": "7", "iss": "ganzhi", "iat": now,
                         "exp": now + timedelta(minutes=5)}, SECRET)
    for bad in (late, token + "x", other_issuer, no_jti, bad_sid, "a.b.c",
                accounts.issue_access(user(), "another-key-" * 4, S, now)):
        with pytest.raises(accounts.InvalidToken):
            accounts.decode_access(bad, SECRET, S)


def test_scope_of_accounts_and_keys() -> None:
    assert user("/city/").scope == EVERYTHING
    assert user("/city/district-a/").scope == Scope(path="/city/district-a/")
    key = ApiKey("id", "k", frozenset({"export", "feedback"}), frozenset({"s1"}), NOW, None,
                 None, "district-a", "/city/district-a/")
    assert key.scope == Scope(path="/city/district-a/", site_ids=frozenset({"s1"}))
    assert key.permissions == {Permission.READ, Permission.FEEDBACK}
    root_key = ApiKey("id", "k", frozenset({"staff"}), None, NOW, None, None, "city",
                      "/city/")
    assert root_key.scope.everything and key.actor == "key:k"
    assert {"export", "provisioning", "feedback", "staff", "silences", "operator"} == SCOPES
    refresh = accounts.new_refresh_token()
    assert refresh.startswith("gzr_") and accounts.token_hash(refresh) != refresh


def test_the_api_offers_every_key_scope() -> None:
    from typing import get_args

    from api.schemas import KeyScope
    from ganzhi.access import KEY_SCOPES

    assert set(get_args(KeyScope)) == set(KEY_SCOPES)
