"""Webhook signatures (HMAC-SHA256), shared by our dispatcher and the task system's receiver.

Every clue delivery carries these headers::

    X-Ganzhi-Timestamp: <unix seconds>
    X-Ganzhi-Signature: v1=<hex hmac_sha256(secret, f"{timestamp}.{raw_body}")>
    Idempotency-Key:    <clue_id>              (clue.created)
                        <clue_id>:resolved     (clue.resolved)
    X-Ganzhi-Event:     clue.created | clue.resolved

A clue has two events, in this order: ``clue.created`` when its alert opens and
``clue.resolved`` (same ``clue_id`` in the body) when the alert clears. The created key
is the bare clue id, as before the resolved event existed, so receivers written for one
event keep working; the resolved key is distinct so that a receiver deduplicating by key
does not take the resolution for a retry of the clue.

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
from collections.abc import Mapping

TIMESTAMP_HEADER = "X-Ganzhi-Timestamp"
SIGNATURE_HEADER = "X-Ganzhi-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
EVENT_HEADER = "X-Ganzhi-Event"
CLUE_CREATED = "clue.created"
CLUE_RESOLVED = "clue.resolved"
# Clue event (the body's ``event`` and the outbox row's) -> X-Ganzhi-Event value.
EVENT_NAMES = {"created": CLUE_CREATED, "resolved": CLUE_RESOLVED}
SCHEME = "v1"
DEFAULT_TOLERANCE_S = 300


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The signature header value, ``v1=<hex>``, for ``body`` sent at ``timestamp``."""
    if not secret:
        raise ValueError("refusing to sign with an empty secret")
    message = str(int(timestamp)).encode() + b"." + body
    return f"{SCHEME}=" + hmac.new(secret, message, hashlib.sha256).hexdigest()


def idempotency_key(clue_id: str, event: str = "created") -> str:
    """``<clue_id>`` for a clue's ``created`` event, ``<clue_id>:resolved`` for the other."""
    if event not in EVENT_NAMES:
        raise ValueError(f"unknown clue event {event!r}")
    return clue_id if event == "created" else f"{clue_id}:{event}"


def signature_headers(secret: bytes, timestamp: int, body: bytes, clue_id: str,
                      event: str = "created") -> dict[str, str]:
    """All headers of one delivery of ``event`` (``created`` or ``resolved``) of a clue."""
    return {
        TIMESTAMP_HEADER: str(int(timestamp)),
        SIGNATURE_HEADER: sign(secret, timestamp, body),
        IDEMPOTENCY_HEADER: idempotency_key(clue_id, event),
        EVENT_HEADER: EVENT_NAMES[event],
        "Content-Type": "application/json",
    }


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
