"""Alert identity: fingerprints and transition ids, the one place they are made (pure).

* ``fingerprint = sha256("rule_id|site_id|device_id[|extra...]")[:32]`` (hex): the same
  condition on the same device is one alert. The alerts service keys alerts by it, so
  the formula must never change for an existing rule (pinned by
  ``tests/unit/test_rules_identity.py``).
* ``transition_id = sha256("fingerprint|kind|started_at[|g<generation>]")[:32]``: one
  FIRING and one RESOLVED per episode (fingerprint and event-time start), so a replay of
  the same input repeats the same ids and the alerts service (idempotent by transition
  id) applies each once. ``started_at`` is written in ISO 8601 in UTC.

``generation`` tells apart the *re-fires* of one episode: when a speculative FIRING was
retracted (:func:`stream.rules.ordering.retraction`, late data undid it) and later data
makes the same episode (same start) fire again, that second FIRING, and the RESOLVED that
ends it, get generation 1 (then 2, ...), so they are not taken for repeats of the
retracted one. Generation 0 is the plain formula without a suffix: every id made before
generations existed stays the same.

Parts are joined with ``|``; site and device ids cannot contain it (``ID_PATTERN``), nor
can rule ids, so distinct parts give distinct strings.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from ganzhi.contracts import TransitionKind

ID_HEX_CHARS = 32


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:ID_HEX_CHARS]


def fingerprint(rule_id: str, site_id: str, device_id: str, *extra: str) -> str:
    """The alert's identity: one rule on one device (``extra`` splits it further)."""
    return _digest("|".join((rule_id, site_id, device_id, *extra)))


def transition_id(fingerprint: str, kind: TransitionKind, started_at: datetime,
                  generation: int = 0) -> str:
    """The id of one transition of the episode of ``fingerprint`` that began at
    ``started_at`` (an aware datetime); ``generation`` > 0 for a re-fire after a
    retraction (see the module docstring)."""
    if started_at.tzinfo is None:
        raise ValueError("started_at must be timezone-aware")
    if generation < 0:
        raise ValueError("generation must be >= 0")
    text = f"{fingerprint}|{kind.value}|{started_at.astimezone(UTC).isoformat()}"
    return _digest(text if generation == 0 else f"{text}|g{generation}")
