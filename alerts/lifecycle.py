"""Alert lifecycle decisions, clue bodies and delivery outcomes: pure functions, no I/O.

The repository reads the current state of one fingerprint (under a lock), asks
:func:`decide` what a transition means for the alert, places the alert in an incident
(:mod:`alerts.policy`) and writes the result in one transaction; :func:`build_clue`
makes the body of each clue event of an incident.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Literal
from urllib.parse import urlencode

from alerts.policy import Member, primary
from ganzhi.contracts import (
    AlertTransition,
    Clue,
    ClueLinks,
    ClueMember,
    Severity,
    TransitionKind,
)
from ganzhi.contracts.payloads import ClueEvent

# Namespace of clue ids: uuid5(namespace, fingerprint|started_at) is stable across replays.
CLUE_NAMESPACE = uuid.UUID("5b0e3f9c-6a4e-5d1b-9c2f-67616e7a6869")
# Sensor curve linked from a clue: this long before the start and after the transition.
READINGS_LEAD = timedelta(hours=1)
READINGS_TAIL = timedelta(hours=1)


class Action(StrEnum):
    OPEN = "open"  # a new alert (and a clue for the task system)
    ATTACH = "attach"  # record the transition on the alert already open; nothing new
    RESOLVE = "resolve"  # close the open alert
    REFIRE = "refire"  # a resolved alert fires again from the same start (after a retraction)
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
        if same_start is not None and not same_start.open and open_alert is None:
            # The stream retracted a speculative FIRING (RESOLVED) and fires the same
            # episode again: a new transition id (its generation) for the same start.
            return Decision(Action.REFIRE, same_start.id, "refired")
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


def incident_url(public_base_url: str, incident_id: int) -> str:
    return f"{public_base_url.rstrip('/')}/api/v1/incidents/{incident_id}"


@dataclass(frozen=True)
class AlertRow:
    """One alert of an incident, as stored."""

    id: int
    fingerprint: str
    rule_id: str
    severity: Severity
    site_id: str
    device_id: str
    status: Literal["open", "resolved"]
    started_at: datetime
    ended_at: datetime | None
    summary: str
    values: dict[str, Any]

    def member(self) -> Member:
        return Member(self.id, self.rule_id, self.severity, self.site_id, self.device_id,
                      self.started_at, self.status)


@dataclass(frozen=True)
class IncidentView:
    id: int
    clue_id: str
    severity: Severity
    escalation_level: int
    alerts: tuple[AlertRow, ...]

    def primary(self) -> AlertRow:
        p = primary([a.member() for a in self.alerts])
        return next(a for a in self.alerts if a.id == p.alert_id)


def build_clue(incident: IncidentView, event: ClueEvent, seq: int, public_base_url: str,
               now: datetime, resolution: dict[str, Any] | None = None) -> Clue:
    """The body of one clue event of ``incident``. Pure.

    The top-level fields are the primary alert's (the incident's severity, which an
    escalation may have raised); ``members`` lists every alert. Links: the primary alert,
    its device's readings from an hour before the incident to an hour after its end (or
    ``now``), the incident, and the snapshot behind it: for ``resolved`` the clearing
    snapshot when ``resolution['values']`` has one (a kitchen camera's rectification)."""
    p = incident.primary()
    start = min(a.started_at for a in incident.alerts)
    ends = [a.ended_at for a in incident.alerts]
    end = max(e for e in ends if e is not None) if all(ends) else max(now, start)
    values = (resolution or {}).get("values") if event == "resolved" else p.values
    links = ClueLinks(
        alert=alert_url(public_base_url, p.id),
        readings=readings_url(public_base_url, p.site_id, p.device_id,
                              start - READINGS_LEAD, end + READINGS_TAIL),
        evidence=evidence_url(public_base_url, values if isinstance(values, dict) else {}),
        incident=incident_url(public_base_url, incident.id),
    )
    members = [
        ClueMember(alert_id=a.id, rule_id=a.rule_id, severity=a.severity, device_id=a.device_id,
                   status=a.status, started_at=_utc(a.started_at),
                   ended_at=_utc(a.ended_at) if a.ended_at else None, summary=a.summary)
        for a in sorted(incident.alerts, key=lambda a: (a.started_at, a.id))
    ]
    return Clue(
        clue_id=incident.clue_id, event=event, seq=seq, incident_id=incident.id,
        alert_id=p.id, fingerprint=p.fingerprint, rule_id=p.rule_id,
        severity=incident.severity, site_id=p.site_id, device_id=p.device_id,
        started_at=_utc(start), summary=p.summary, values=p.values, links=links,
        created_at=_utc(now),
        ended_at=_utc(end) if event == "resolved" else None,
        members=members, escalation_level=incident.escalation_level, resolution=resolution,
    )


class DeliveryOutcome(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"
    DEAD = "dead"


# The receiver as a whole is not taking clues (down, misconfigured, refusing our key,
# wrong path, overloaded): keep the clue and try again later, however long it takes.
RECEIVER_PROBLEMS = frozenset({401, 403, 404, 408, 425, 429})


def classify_delivery(status_code: int | None) -> DeliveryOutcome:
    """What one delivery attempt means. ``status_code`` None = timeout or connection error.

    2xx: delivered. Any other 4xx but :data:`RECEIVER_PROBLEMS`: the receiver refuses
    this clue's body, retrying cannot help: dead (an operator can re-queue it). Anything
    else is a problem of the receiver, not of the clue: retry, with no attempt limit;
    an operator who gives a receiver up drops its clues (``ganzhi clues drop``).
    """
    if status_code is not None and 200 <= status_code < 300:
        return DeliveryOutcome.DELIVERED
    if (status_code is not None and 400 <= status_code < 500
            and status_code not in RECEIVER_PROBLEMS):
        return DeliveryOutcome.DEAD
    return DeliveryOutcome.RETRY
