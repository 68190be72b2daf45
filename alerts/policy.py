"""Incident policy: correlation, primary alert, inhibition, silences, escalation. Pure.

The repository reads an incident and what surrounds it (open alerts of its devices,
active silences), asks these functions what it means, and writes the answer. Nothing
here does I/O or reads a clock: ``now`` is always passed in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from fnmatch import fnmatchcase
from typing import Literal

from ganzhi.contracts import Severity
from ganzhi.settings import (
    AlertsSettings,
    EscalationStep,
    FamilySettings,
    InhibitionSettings,
)

SEVERITY_RANK = {Severity.INFO: 0, Severity.MINOR: 1, Severity.MAJOR: 2, Severity.CRITICAL: 3}


def rank(severity: Severity | str) -> int:
    return SEVERITY_RANK[Severity(severity)]


def matches_any(value: str, patterns: Iterable[str]) -> bool:
    return any(fnmatchcase(value, p) for p in patterns)


@dataclass(frozen=True)
class Member:
    """An alert as the policy sees it."""

    alert_id: int
    rule_id: str
    severity: Severity
    site_id: str
    device_id: str
    started_at: datetime
    status: Literal["open", "resolved"] = "open"


@dataclass(frozen=True)
class Placement:
    """Where an alert's incident is: its family, correlation key, and whether it joins any
    open incident of its device first (``joins_open``)."""

    family: str
    group_key: str
    joins_open: bool


def family_of(rule_id: str, families: Sequence[FamilySettings]) -> FamilySettings | None:
    return next((f for f in families if matches_any(rule_id, f.rules)), None)


def placement(rule_id: str, site_id: str, device_id: str,
              families: Sequence[FamilySettings]) -> Placement:
    """The correlation key of an alert: ``<family>:<site>/<device>`` (or ``<family>:<site>``
    for a site-scoped family); a rule in no family is its own family on its device."""
    family = family_of(rule_id, families)
    if family is None:
        return Placement(rule_id, f"{rule_id}:{site_id}/{device_id}", False)
    where = site_id if family.scope == "site" else f"{site_id}/{device_id}"
    return Placement(family.name, f"{family.name}:{where}", family.joins_open)


@dataclass(frozen=True)
class Candidate:
    """An incident an opening alert could go to."""

    incident_id: int
    status: Literal["open", "resolved"]
    resolved_at: datetime | None = None


def choose_incident(started_at: datetime, *, joins_open: bool,
                    device_open: Candidate | None, group_open: Candidate | None,
                    group_last: Candidate | None, reopen_window_s: float
                    ) -> tuple[Literal["join", "reopen", "new"], int | None]:
    """Where an alert that opens at ``started_at`` goes: the open incident of its group;
    for a ``joins_open`` family first the device's open incident (``device_open``); the
    group's last incident if it resolved less than ``reopen_window_s`` before; else new."""
    if joins_open and device_open is not None:
        return "join", device_open.incident_id
    if group_open is not None:
        return "join", group_open.incident_id
    if (group_last is not None and group_last.status == "resolved"
            and group_last.resolved_at is not None
            and (started_at - group_last.resolved_at).total_seconds() <= reopen_window_s):
        return "reopen", group_last.incident_id
    return "new", None


def primary(members: Sequence[Member]) -> Member:
    """The incident's primary alert: open before resolved, then the most severe, then the
    earliest (then the lowest id, for a stable answer)."""
    if not members:
        raise ValueError("an incident has at least one alert")
    return min(members, key=lambda m: (m.status != "open", -rank(m.severity), m.started_at,
                                       m.alert_id))


def severity_of(members: Sequence[Member], raised: Severity | None = None) -> Severity:
    """The most severe member's severity, or ``raised`` (by escalation) when higher."""
    best = max((m.severity for m in members), key=rank, default=Severity.INFO)
    if raised is not None and rank(raised) > rank(best):
        return raised
    return best


@dataclass(frozen=True)
class Silence:
    id: int
    matchers: Mapping[str, str]  # site_id, device_id, rule_id, severity -> glob
    starts_at: datetime
    ends_at: datetime
    kind: str = "silence"

    def active(self, now: datetime) -> bool:
        return self.starts_at <= now < self.ends_at

    def matches(self, m: Member) -> bool:
        fields = {"site_id": m.site_id, "device_id": m.device_id, "rule_id": m.rule_id,
                  "severity": m.severity.value}
        return all(fnmatchcase(fields[k], v) for k, v in self.matchers.items())


MATCHER_KEYS = frozenset({"site_id", "device_id", "rule_id", "severity"})


def inhibitor(member: Member, open_rules: Iterable[str],
              inhibitions: Sequence[InhibitionSettings]) -> str | None:
    """The open rule of the member's device that inhibits it, if any. A source never
    inhibits itself (nor an alert of another source rule of the same inhibition)."""
    open_set = set(open_rules)
    for inh in inhibitions:
        if matches_any(member.rule_id, inh.source):
            continue
        if not matches_any(member.rule_id, inh.targets):
            continue
        for rule in sorted(open_set):
            if matches_any(rule, inh.source):
                return rule
    return None


@dataclass(frozen=True)
class Hold:
    """No clue (yet); ``reason``: ``info``, ``inhibited:<rule>``, ``silenced:<ids>``,
    ``resolved``."""

    reason: str


@dataclass(frozen=True)
class Notify:
    pass


def why_not(member: Member, open_rules: Iterable[str], silences: Sequence[Silence],
            inhibitions: Sequence[InhibitionSettings], now: datetime) -> str | None:
    """Why this one alert raises no clue now, or None when it does."""
    if member.severity is Severity.INFO:
        return "info"
    source = inhibitor(member, open_rules, inhibitions)
    if source is not None:
        return f"inhibited:{source}"
    hits = [s.id for s in silences if s.active(now) and s.matches(member)]
    if hits:
        return "silenced:" + ",".join(str(i) for i in sorted(hits))
    return None


def notify_decision(members: Sequence[Member], open_rules_by_device: Mapping[str, Iterable[str]],
                    silences: Sequence[Silence], inhibitions: Sequence[InhibitionSettings],
                    now: datetime) -> Notify | Hold:
    """Whether a held incident's clue goes out now: when at least one of its open alerts
    is above info, not inhibited and not silenced. Otherwise the reason of the alert
    closest to going out (the most severe)."""
    live = [m for m in members if m.status == "open"]
    if not live:
        return Hold("resolved")
    reasons = []
    for m in sorted(live, key=lambda m: (-rank(m.severity), m.started_at, m.alert_id)):
        reason = why_not(m, open_rules_by_device.get(m.device_id, ()), silences, inhibitions,
                         now)
        if reason is None:
            return Notify()
        reasons.append(reason)
    return Hold(reasons[0])


@dataclass(frozen=True)
class EscalationClock:
    severity: Severity
    notified_at: datetime | None
    escalated_at: datetime | None
    escalated_from: Sequence[str]
    acknowledged: bool
    open: bool


def escalation_due(clock: EscalationClock, policy: Mapping[str, EscalationStep],
                   now: datetime) -> EscalationStep | None:
    """The step to take now, or None: an open, notified, unacknowledged incident whose
    severity has a step it has not taken, once ``after_s`` passed since its clue (or its
    previous escalation). Acknowledging stops it; a raised severity may escalate again
    under its own step."""
    if not clock.open or clock.acknowledged or clock.notified_at is None:
        return None
    step = policy.get(clock.severity.value)
    if step is None or clock.severity.value in clock.escalated_from:
        return None
    since = clock.escalated_at or clock.notified_at
    if (now - since).total_seconds() < step.after_s:
        return None
    return step


def settings_check(s: AlertsSettings, receiver_names: Iterable[str]) -> list[str]:
    """Problems with the alerts policy settings (unknown receivers, severities)."""
    names = set(receiver_names)
    problems = []
    for severity, step in s.escalation.items():
        if severity not in {v.value for v in Severity}:
            problems.append(f"escalation: unknown severity {severity!r}")
        for r in step.receivers:
            if r not in names:
                problems.append(f"escalation.{severity}: unknown receiver {r!r}")
    return problems
