"""Webhook signatures: what a task system relies on to trust a clue."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from alerts.signing import (
    CLUE_CREATED,
    CLUE_RESOLVED,
    EVENT_HEADER,
    IDEMPOTENCY_HEADER,
    KEY_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SigningKey,
    idempotency_key,
    sign,
    signature_headers,
    verify,
    verify_headers,
)

SECRET = b"s3cret"
BODY = b'{"clue_id":"c-1","summary":"too warm"}'
TS = 1_700_000_000


def test_sign_is_hmac_sha256_over_timestamp_dot_body() -> None:
    expected = hmac.new(SECRET, f"{TS}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert sign(SECRET, TS, BODY) == f"v1={expected}"


def test_verify_accepts_a_fresh_genuine_signature() -> None:
    assert verify(SECRET, TS, sign(SECRET, TS, BODY), BODY, now=TS + 10)
    assert verify(SECRET, str(TS), sign(SECRET, TS, BODY), BODY, now=TS - 10)


def test_tampered_body_is_refused() -> None:
    signature = sign(SECRET, TS, BODY)
    assert not verify(SECRET, TS, signature, BODY.replace(b"warm", b"cold"), now=TS)


def test_wrong_secret_is_refused() -> None:
    assert not verify(b"other", TS, sign(SECRET, TS, BODY), BODY, now=TS)


def test_stale_or_future_timestamp_is_refused() -> None:
    signature = sign(SECRET, TS, BODY)
    assert not verify(SECRET, TS, signature, BODY, now=TS + 301)
    assert not verify(SECRET, TS, signature, BODY, now=TS - 301)
    assert verify(SECRET, TS, signature, BODY, tolerance_s=600, now=TS + 301)


def test_changed_timestamp_is_refused() -> None:
    assert not verify(SECRET, TS + 1, sign(SECRET, TS, BODY), BODY, now=TS)


def test_garbage_is_refused_not_raised() -> None:
    assert not verify(SECRET, "yesterday", sign(SECRET, TS, BODY), BODY, now=TS)
    assert not verify(SECRET, TS, "v1=zz", BODY, now=TS)
    assert not verify(SECRET, TS, "", BODY, now=TS)


def test_one_of_several_signatures_matching_is_enough() -> None:
    both = f"{sign(b'old', TS, BODY)}, {sign(SECRET, TS, BODY)}"
    assert verify(SECRET, TS, both, BODY, now=TS)


def test_headers_round_trip_case_insensitively() -> None:
    headers = signature_headers(SECRET, TS, BODY, "c-1")
    assert headers[IDEMPOTENCY_HEADER] == "c-1"
    assert headers[EVENT_HEADER] == CLUE_CREATED
    assert headers[TIMESTAMP_HEADER] == str(TS)
    lowered = {k.lower(): v for k, v in headers.items()}
    assert verify_headers(SECRET, lowered, BODY, now=TS)
    assert not verify_headers(b"other", headers, BODY, now=TS)
    del lowered[SIGNATURE_HEADER.lower()]
    assert not verify_headers(SECRET, lowered, BODY, now=TS)


def test_each_clue_event_has_its_own_key_and_event_header() -> None:
    created = signature_headers(SECRET, TS, BODY, idempotency_key("c-1"), "created")
    key = idempotency_key("c-1", "resolved", 3)
    resolved = signature_headers(SECRET, TS, BODY, key, "resolved")
    # created keeps the bare clue id (receivers written before later events).
    assert (created[IDEMPOTENCY_HEADER], created[EVENT_HEADER]) == ("c-1", CLUE_CREATED)
    assert (resolved[IDEMPOTENCY_HEADER], resolved[EVENT_HEADER]) == ("c-1:resolved:3",
                                                                      CLUE_RESOLVED)
    assert idempotency_key("c-1", "updated", 1) == "c-1:updated:1"
    assert verify_headers(SECRET, resolved, BODY, now=TS)
    assert KEY_ID_HEADER not in created  # a bare secret has no key id
    with pytest.raises(ValueError):
        idempotency_key("c-1", "closed")
    with pytest.raises(KeyError):
        signature_headers(SECRET, TS, BODY, "c-1", "closed")


def test_rotation_signs_with_the_new_and_the_old_key() -> None:
    keys = [SigningKey("k2", b"new-secret"), SigningKey("k1", SECRET)]
    headers = signature_headers(keys, TS, BODY, "c-1")
    assert headers[KEY_ID_HEADER] == "k2"
    assert headers[SIGNATURE_HEADER].count("v1=") == 2
    # a receiver that knows either key accepts it; one that knows neither does not
    assert verify_headers(SECRET, headers, BODY, now=TS)
    assert verify_headers(b"new-secret", headers, BODY, now=TS)
    assert not verify_headers(b"other", headers, BODY, now=TS)
    assert "new-secret" not in repr(keys[0])
    with pytest.raises(ValueError):
        signature_headers([], TS, BODY, "c-1")
