"""Webhook signatures (HMAC-SHA256), shared by our dispatcher and the task system's receiver.

Every clue delivery carries these headers::

    X-Ganzhi-Timestamp: <unix seconds>
    X-Ganzhi-Signature: v1=<hex hmac_sha256(secret, f"{timestamp}.{raw_body}")>
                        (during a key rotation: v1=<new key>,v1=<old key>)
    X-Ganzhi-Key-Id:    <id of the key of the first signature>
    Idempotency-Key:    <clue_id>                    (clue.created, seq 0)
                        <clue_id>:<event>:<seq>      (every later event)
    X-Ganzhi-Event:     clue.created | clue.updated | clue.escalated | clue.reopened
                        | clue.resolved

A clue (one incident) has ``clue.created`` first, then later events in ``seq`` order,
each under its own key, so a receiver deduplicating by key never takes a later event for
a retry of an earlier one. (Clues made before incidents existed have the key
``<clue_id>:resolved`` for their resolution.)

A receiver checks them with :func:`verify_headers` (or :func:`verify`) over the *raw*
request body, before parsing it::

    ok = verify_headers(secret, request.headers, raw_body)   # False -> answer 401

and uses ``Idempotency-Key`` to accept each event once: retries repeat the same key.
Pure: no I/O, no clock unless ``now`` is left out.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

TIMESTAMP_HEADER = "X-Ganzhi-Timestamp"
SIGNATURE_HEADER = "X-Ganzhi-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
EVENT_HEADER = "X-Ganzhi-Event"
KEY_ID_HEADER = "X-Ganzhi-Key-Id"
CLUE_CREATED = "clue.created"
CLUE_RESOLVED = "clue.resolved"
# Clue event (the body's ``event`` and the outbox row's) -> X-Ganzhi-Event value.
EVENT_NAMES = {e: f"clue.{e}" for e in ("created", "updated", "escalated", "reopened",
                                         "resolved")}


@dataclass(frozen=True)
class SigningKey:
    key_id: str
    secret: bytes = field(repr=False)
SCHEME = "v1"
DEFAULT_TOLERANCE_S = 300


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The signature header value, ``v1=<hex>``, for ``body`` sent at ``timestamp``."""
    if not secret:
        raise ValueError("refusing to sign with an empty secret")
    message = str(int(timestamp)).encode() + b"." + body
    return f"{SCHEME}=" + hmac.new(secret, message, hashlib.sha256).hexdigest()


def idempotency_key(clue_id: str, event: str = "created", seq: int = 0) -> str:
    """``<clue_id>`` for a clue's ``created`` event, ``<clue_id>:<event>:<seq>`` after."""
    if event not in EVENT_NAMES:
        raise ValueError(f"unknown clue event {event!r}")
    if event == "created" and seq == 0:
        return clue_id
    return f"{clue_id}:{event}:{seq}"


def signature_headers(keys: bytes | Sequence[SigningKey], timestamp: int, body: bytes,
                      key: str, event: str = "created") -> dict[str, str]:
    """All headers of one delivery of ``event`` under Idempotency-Key ``key``. ``keys``:
    the current signing key first, then any being retired (each adds a signature); a bare
    secret signs alone, without a key id."""
    if isinstance(keys, bytes):
        keys = [SigningKey("", keys)]
    if not keys:
        raise ValueError("refusing to send unsigned")
    headers = {
        TIMESTAMP_HEADER: str(int(timestamp)),
        SIGNATURE_HEADER: ",".join(sign(k.secret, timestamp, body) for k in keys),
        IDEMPOTENCY_HEADER: key,
        EVENT_HEADER: EVENT_NAMES[event],
        "Content-Type": "application/json",
    }
    if keys[0].key_id:
        headers[KEY_ID_HEADER] = keys[0].key_id
    return headers


def verify(
    secret: bytes,
    timestamp: str | int,
    signature: str,
    body: bytes,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> bool:
    """True when ``signature`` is ours for ``body`` and ``timestamp`` is fresh.

    ``signature`` may list several comma-separated ``v1=`` values (secret rotation); one
    match is enough. Comparison is constant-time. A timestamp further than ``tolerance_s``
    from ``now`` (either way) is refused, so a captured request cannot be replayed later.
    """
    try:
        ts = int(str(timestamp).strip())
    except ValueError:
        return False
    current = time.time() if now is None else now
    if abs(current - ts) > tolerance_s:
        return False
    expected = sign(secret, ts, body)
    matched = False
    for candidate in signature.split(","):
        # Compare every candidate (no early exit) to keep timing independent of position.
        matched |= hmac.compare_digest(candidate.strip().encode(), expected.encode())
    return matched


def verify_headers(
    secret: bytes,
    headers: Mapping[str, str],
    body: bytes,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> bool:
    """:func:`verify` reading the timestamp and signature from request headers."""
    lowered = {k.lower(): v for k, v in headers.items()}
    timestamp = lowered.get(TIMESTAMP_HEADER.lower())
    signature = lowered.get(SIGNATURE_HEADER.lower())
    if timestamp is None or signature is None:
        return False
    return verify(secret, timestamp, signature, body, tolerance_s=tolerance_s, now=now)
