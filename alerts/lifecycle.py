"""Alert lifecycle decisions, clue building and retry policy: pure functions, no I/O.

The repository reads the current state of one fingerprint (under a lock), asks
:func:`decide` what a transition means, and writes the result in one transaction.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any
from urllib.parse import urlencode

from ganzhi.contracts import AlertTransition, Clue, ClueLinks, TransitionKind

# Namespace of clue ids: uuid5(namespace, fingerprint|started_at) is stable across replays.
CLUE_NAMESPACE = uuid.UUID("5b0e3f9c-6a4e-5d1b-9c2f-67616e7a6869")
# Sensor curve linked from a clue: this long before the start and after the transition.
READINGS_LEAD = timedelta(hours=1)
READINGS_TAIL = timedelta(hours=1)


class Action(StrEnum):
    OPEN = "open"  # a new alert (and a clue for the task system)
    ATTACH = "attach"  # record the transition on the alert already open; nothing new
    RESOLVE = "resolve"  # close the open alert
    NOOP = "noop"  # nothing to change (replay, stale or unmatched transition)


@dataclass(frozen=True)
class AlertRef:
    """What the decision needs to know about an existing alert."""

    id: int
    started_at: datetime
    open: bool


@dataclass(frozen=True)
class Decision:
    action: Action
    alert_id: int | None
    reason: str


def decide(
    transition: AlertTransition, same_start: AlertRef | None, open_alert: AlertRef | None
) -> Decision:
    """What ``transition`` does, given the alert with the same fingerprint and started_at
    (``same_start``) and the fingerprint's open alert (``open_alert``), either may be None."""
    if transition.kind is TransitionKind.FIRING:
        if same_start is not None:
            return Decision(Action.NOOP, same_start.id, "alert_exists")
        if open_alert is not None:
            return Decision(Action.ATTACH, open_alert.id, "already_open")
        return Decision(Action.OPEN, None, "new")
    # RESOLVED
    if open_alert is None:
        ref = same_start
        return Decision(Action.NOOP, ref.id if ref else None, "no_open_alert")
    if transition.at < open_alert.started_at:
        return Decision(Action.NOOP, open_alert.id, "older_than_open_alert")
    return Decision(Action.RESOLVE, open_alert.id, "resolved")


def _utc(ts: datetime) -> datetime:
    return ts.astimezone(UTC)


def _iso(ts: datetime) -> str:
    return _utc(ts).isoformat().replace("+00:00", "Z")


def clue_id_for(fingerprint: str, started_at: datetime) -> str:
    """Deterministic clue id: the task system's idempotency key, equal on every replay."""
    return str(uuid.uuid5(CLUE_NAMESPACE, f"{fingerprint}|{_iso(started_at)}"))


def alert_url(public_base_url: str, alert_id: int) -> str:
    return f"{public_base_url.rstrip('/')}/api/v1/alerts/{alert_id}"


def readings_url(
    public_base_url: str, site_id: str, device_id: str, start: datetime, end: datetime
) -> str:
    query = urlencode({"from": _iso(start), "to": _iso(end)})
    return f"{public_base_url.rstrip('/')}/api/v1/devices/{site_id}/{device_id}/readings?{query}"


def evidence_url(public_base_url: str, values: dict[str, Any]) -> str | None:
    sha = values.get("snapshot_sha256")
    if not isinstance(sha, str):
        return None
    return f"{public_base_url.rstrip('/')}/api/v1/evidence/{sha}"


def _links(t: AlertTransition, alert_id: int, public_base_url: str, start: datetime,
           end: datetime) -> ClueLinks:
    return ClueLinks(
        alert=alert_url(public_base_url, alert_id),
        readings=readings_url(public_base_url, t.site_id, t.device_id,
                              start - READINGS_LEAD, end + READINGS_TAIL),
        evidence=evidence_url(public_base_url, t.values),
    )


def build_clue(
    transition: AlertTransition, alert_id: int, public_base_url: str, now: datetime
) -> Clue:
    """The clue for an alert opened by ``transition`` (a FIRING one)."""
    links = _links(transition, alert_id, public_base_url, transition.started_at,
                   max(transition.at, transition.started_at))
    return Clue(
        clue_id=clue_id_for(transition.fingerprint, transition.started_at),
        alert_id=alert_id,
        fingerprint=transition.fingerprint,
        rule_id=transition.rule_id,
        severity=transition.severity,
        site_id=transition.site_id,
        device_id=transition.device_id,
        started_at=transition.started_at,
        summary=transition.summary,
        values=transition.values,
        links=links,
        created_at=_utc(now),
    )


def build_resolution(opening: Clue, transition: AlertTransition, public_base_url: str,
                     now: datetime) -> Clue:
    """The ``resolved`` event of the clue ``opening`` (its stored ``created`` event), from
    the RESOLVED ``transition`` of the same alert. Pure.

    The opening clue is repeated as it was sent (same ``clue_id`` =
    ``clue_id_for(fingerprint, started_at)``, summary and values), with ``ended_at``,
    ``resolution`` (the clearing transition's summary, values and id), readings over the
    whole alert (lead before the start to tail after the end), and ``links.evidence`` for
    the *clearing* snapshot when its values carry a ``snapshot_sha256`` (the rectification
    of a kitchen camera alert), else None."""
    return opening.model_copy(update={
        "event": "resolved",
        "ended_at": _utc(transition.at),
        "resolution": {"summary": transition.summary, "values": transition.values,
                       "transition_id": transition.transition_id},
        "links": _links(transition, opening.alert_id, public_base_url, opening.started_at,
                        transition.at),
        "created_at": _utc(now),
    })


class DeliveryOutcome(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"
    DEAD = "dead"


def classify_delivery(status_code: int | None, attempts: int, max_attempts: int) -> DeliveryOutcome:
    """What one delivery attempt means. ``status_code`` None = timeout or connection error.

    2xx: delivered. 4xx other than 408/429: the receiver refuses the clue, retrying cannot
    help: dead. Anything else retries, until ``attempts`` reaches ``max_attempts``.
    """
    if status_code is not None and 200 <= status_code < 300:
        return DeliveryOutcome.DELIVERED
    if status_code is not None and 400 <= status_code < 500 and status_code not in (408, 429):
        return DeliveryOutcome.DEAD
    if attempts >= max_attempts:
        return DeliveryOutcome.DEAD
    return DeliveryOutcome.RETRY
