"""PostgreSQL adapter of alerts and incidents (psycopg 3, async).

:func:`apply_transition` applies one alert transition in ONE transaction: the
``alert_events`` row keyed by ``transition_id`` (a replay finds it and changes nothing),
the alert insert or update, the alert's place in an incident, and the clue events that
follow in ``clue_outbox`` (transactional outbox, one row per receiver and event).

Every change to the alerts and incidents of a site - a transition, a person's action,
the ticker releasing a held clue or escalating - runs under a transaction-scoped
advisory lock on the site, so correlation never races. The unique indexes stay the last
word: one open alert per fingerprint, ``UNIQUE (fingerprint, started_at)``, one open
incident per correlation key, one outbox row per receiver and idempotency key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from alerts import metrics
from alerts.lifecycle import (
    Action,
    AlertRef,
    AlertRow,
    IncidentView,
    build_clue,
    clue_id_for,
    decide,
)
from alerts.policy import (
    Candidate,
    EscalationClock,
    Notify,
    Silence,
    choose_incident,
    escalation_due,
    notify_decision,
    placement,
    primary,
    rank,
    severity_of,
    why_not,
)
from alerts.routing import Receiver, receivers_from, routes
from alerts.signing import idempotency_key
from ganzhi.contracts import AlertTransition, Severity, utcnow
from ganzhi.contracts.payloads import ClueEvent
from ganzhi.settings import AlertsSettings, Settings

AnyConn = AsyncConnection[Any]
SYSTEM = "system"


@dataclass(frozen=True)
class Policy:
    """What applying transitions and ticking need besides a connection."""

    alerts: AlertsSettings
    receivers: tuple[Receiver, ...]
    public_base_url: str

    @classmethod
    def from_settings(cls, s: Settings) -> Policy:
        return cls(s.alerts, tuple(receivers_from(s)), s.webhook.public_base_url)

    def receiver(self, name: str) -> Receiver | None:
        return next((r for r in self.receivers if r.name == name), None)


@dataclass(frozen=True)
class ApplyResult:
    """``outcome``: opened, attached, resolved, duplicate (transition seen before) or
    ignored (nothing to change, ``reason`` says why)."""

    outcome: str
    alert_id: int | None
    reason: str
    incident_id: int | None = None


class _Conflict(Exception):
    """Raised inside the transaction to roll it back when a unique key says 'already done'."""


class NotFound(LookupError):
    pass


async def lock_site(conn: AnyConn, site_id: str) -> None:
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 7))", (site_id,))


async def history(conn: AnyConn, incident_id: int, actor: str, action: str,
                  detail: dict[str, Any] | None = None, alert_id: int | None = None) -> None:
    await conn.execute(
        "INSERT INTO incident_history (incident_id, alert_id, actor, action, detail)"
        " VALUES (%s, %s, %s, %s, %s)",
        (incident_id, alert_id, actor, action, Jsonb(detail or {})))


async def _alert_ref(conn: AnyConn, query: str, params: tuple[Any, ...]) -> AlertRef | None:
    cur = await conn.execute(query, params)
    row = await cur.fetchone()
    return AlertRef(id=row[0], started_at=row[1], open=row[2] == "open") if row else None


async def _insert_event(conn: AnyConn, t: AlertTransition, alert_id: int) -> bool:
    cur = await conn.execute(
        "INSERT INTO alert_events (transition_id, alert_id, kind, at, payload)"
        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (transition_id) DO NOTHING"
        " RETURNING transition_id",
        (t.transition_id, alert_id, t.kind.value, t.at, Jsonb(t.model_dump(mode="json"))),
    )
    return await cur.fetchone() is not None


async def apply_transition(conn: AnyConn, t: AlertTransition, policy: Policy,
                           now: datetime | None = None) -> ApplyResult:
    """Apply ``t`` in one transaction on ``conn`` (an autocommit connection)."""
    now = now or utcnow()
    try:
        async with conn.transaction():
            await lock_site(conn, t.site_id)
            cur = await conn.execute(
                "SELECT 1 FROM alert_events WHERE transition_id = %s", (t.transition_id,))
            if await cur.fetchone() is not None:
                return ApplyResult("duplicate", None, "transition_seen")
            same_start = await _alert_ref(
                conn, "SELECT id, started_at, status FROM alerts"
                " WHERE fingerprint = %s AND started_at = %s", (t.fingerprint, t.started_at))
            open_alert = await _alert_ref(
                conn, "SELECT id, started_at, status FROM alerts"
                " WHERE fingerprint = %s AND status = 'open'", (t.fingerprint,))
            decision = decide(t, same_start, open_alert)
            if decision.action is Action.OPEN:
                return await _open(conn, t, policy, now)
            if decision.alert_id is None:
                return ApplyResult("ignored", None, decision.reason)
            if not await _insert_event(conn, t, decision.alert_id):
                raise _Conflict
            if decision.action is Action.RESOLVE:
                incident_id = await _resolve_alert(conn, t, decision.alert_id, policy, now)
                return ApplyResult("resolved", decision.alert_id, decision.reason, incident_id)
            if decision.action is Action.REFIRE:
                incident_id = await _refire(conn, t, decision.alert_id, policy, now)
                return ApplyResult("refired", decision.alert_id, decision.reason, incident_id)
            if decision.action is Action.ATTACH:
                await conn.execute(
                    "UPDATE alerts SET updated_at = now() WHERE id = %s", (decision.alert_id,))
                return ApplyResult("attached", decision.alert_id, decision.reason)
            return ApplyResult("ignored", decision.alert_id, decision.reason)
    except _Conflict:
        return ApplyResult("duplicate", None, "unique_conflict")


async def _open(conn: AnyConn, t: AlertTransition, policy: Policy, now: datetime
                ) -> ApplyResult:
    cur = await conn.execute(
        "INSERT INTO alerts (fingerprint, rule_id, severity, site_id, device_id, status,"
        ' started_at, summary, "values")'
        " VALUES (%s, %s, %s, %s, %s, 'open', %s, %s, %s)"
        " ON CONFLICT DO NOTHING RETURNING id",
        (t.fingerprint, t.rule_id, t.severity.value, t.site_id, t.device_id, t.started_at,
         t.summary, Jsonb(t.values)),
    )
    row = await cur.fetchone()
    if row is None:
        raise _Conflict
    alert_id = int(row[0])
    if not await _insert_event(conn, t, alert_id):
        raise _Conflict
    incident_id, how = await _place(conn, t, alert_id, policy)
    await reconcile(conn, incident_id, policy, now, joined=alert_id,
                    reopened=how == "reopen")
    return ApplyResult("opened", alert_id, how, incident_id)


async def _candidate(conn: AnyConn, query: str, params: tuple[Any, ...]) -> Candidate | None:
    cur = await conn.execute(query, params)
    row = await cur.fetchone()
    return Candidate(row[0], row[1], row[2]) if row else None


async def _place(conn: AnyConn, t: AlertTransition, alert_id: int, policy: Policy
                 ) -> tuple[int, Literal["join", "reopen", "new"]]:
    """Put the new alert in its incident: join, reopen or new (see policy.choose_incident)."""
    pl = placement(t.rule_id, t.site_id, t.device_id, policy.alerts.families)
    device_open = None
    if pl.joins_open:
        device_open = await _candidate(
            conn, "SELECT i.id, i.status, i.resolved_at FROM alerts a"
            " JOIN incidents i ON i.id = a.incident_id"
            " WHERE a.site_id = %s AND a.device_id = %s AND a.status = 'open'"
            " AND i.status = 'open' AND a.id <> %s ORDER BY i.id DESC LIMIT 1",
            (t.site_id, t.device_id, alert_id))
    group_open = await _candidate(
        conn, "SELECT id, status, resolved_at FROM incidents"
        " WHERE group_key = %s AND status = 'open'", (pl.group_key,))
    group_last = await _candidate(
        conn, "SELECT id, status, resolved_at FROM incidents WHERE group_key = %s"
        " ORDER BY id DESC LIMIT 1", (pl.group_key,))
    how, incident_id = choose_incident(
        t.started_at, joins_open=pl.joins_open, device_open=device_open,
        group_open=group_open, group_last=group_last,
        reopen_window_s=policy.alerts.reopen_window_s)
    detail = {"rule_id": t.rule_id, "severity": t.severity.value, "device_id": t.device_id,
              "summary": t.summary}
    if incident_id is None:
        family = next((f for f in policy.alerts.families if f.name == pl.family), None)
        device = None if family is not None and family.scope == "site" else t.device_id
        cur = await conn.execute(
            "INSERT INTO incidents (group_key, family, site_id, device_id, status, severity,"
            " primary_alert_id, clue_id, opened_at)"
            " VALUES (%s, %s, %s, %s, 'open', %s, %s, %s, %s)"
            " ON CONFLICT DO NOTHING RETURNING id",
            (pl.group_key, pl.family, t.site_id, device, t.severity.value, alert_id,
             clue_id_for(t.fingerprint, t.started_at), t.started_at))
        row = await cur.fetchone()
        if row is None:
            raise _Conflict
        incident_id = int(row[0])
        await history(conn, incident_id, SYSTEM, "opened", detail, alert_id)
    elif how == "reopen":
        await conn.execute(
            "UPDATE incidents SET status = 'open', resolved_at = NULL, resolved_by = NULL,"
            " resolve_reason = NULL, acknowledged_at = NULL, acknowledged_by = NULL,"
            " escalated_from = '{}', escalated_at = NULL, reopen_count = reopen_count + 1,"
            " notify_state = 'held', held_reason = 'reopened', updated_at = now()"
            " WHERE id = %s", (incident_id,))
        await history(conn, incident_id, SYSTEM, "reopened", detail, alert_id)
        metrics.INCIDENTS.labels("reopened").inc()
    else:
        await history(conn, incident_id, SYSTEM, "joined", detail, alert_id)
    if how == "new":
        metrics.INCIDENTS.labels("opened").inc()
    await conn.execute("UPDATE alerts SET incident_id = %s WHERE id = %s",
                       (incident_id, alert_id))
    return incident_id, how


async def _resolve_alert(conn: AnyConn, t: AlertTransition, alert_id: int, policy: Policy,
                         now: datetime) -> int | None:
    cur = await conn.execute(
        "UPDATE alerts SET status = 'resolved', ended_at = %s, updated_at = now()"
        " WHERE id = %s AND status = 'open' RETURNING incident_id", (t.at, alert_id))
    row = await cur.fetchone()
    incident_id = row[0] if row else None
    if incident_id is None:
        return None
    await history(conn, incident_id, SYSTEM, "alert_resolved",
                  {"rule_id": t.rule_id, "summary": t.summary}, alert_id)
    resolution = {"summary": t.summary, "values": t.values, "transition_id": t.transition_id,
                  "by": SYSTEM}
    await reconcile(conn, incident_id, policy, now, resolution=resolution)
    return int(incident_id)


async def _refire(conn: AnyConn, t: AlertTransition, alert_id: int, policy: Policy,
                 now: datetime) -> int | None:
    """The alert opens again; its incident too if it had resolved (``reopened`` to the
    receivers that heard it resolved)."""
    cur = await conn.execute(
        "UPDATE alerts SET status = 'open', ended_at = NULL, resolved_by = NULL,"
        " resolve_reason = NULL, updated_at = now() WHERE id = %s AND status = 'resolved'"
        " RETURNING incident_id", (alert_id,))
    row = await cur.fetchone()
    incident_id = row[0] if row else None
    if incident_id is None:
        return None
    cur = await conn.execute(
        "UPDATE incidents SET status = 'open', resolved_at = NULL, resolved_by = NULL,"
        " resolve_reason = NULL, reopen_count = reopen_count + 1, notify_state = 'held',"
        " held_reason = 'reopened', updated_at = now() WHERE id = %s AND status = 'resolved'"
        " RETURNING id", (incident_id,))
    reopened = await cur.fetchone() is not None
    await history(conn, incident_id, SYSTEM, "reopened" if reopened else "alert_refired",
                  {"rule_id": t.rule_id, "summary": t.summary, "refired": True}, alert_id)
    await reconcile(conn, incident_id, policy, now)
    return int(incident_id)


# --- the incident as a whole -----------------------------------------------------------


@dataclass(frozen=True)
class IncidentRow:
    id: int
    site_id: str
    status: Literal["open", "resolved"]
    severity: Severity
    clue_id: str
    notify_state: Literal["held", "notified"]
    held_reason: str | None
    event_seq: int
    escalation_level: int
    escalated_from: tuple[str, ...]
    notified_at: datetime | None
    escalated_at: datetime | None
    acknowledged: bool


_INCIDENT_COLUMNS = (
    "id, site_id, status, severity, clue_id::text, notify_state, held_reason, event_seq,"
    " escalation_level, escalated_from, notified_at, escalated_at,"
    " acknowledged_at IS NOT NULL")


async def load_incident(conn: AnyConn, incident_id: int) -> IncidentRow:
    cur = await conn.execute(
        f"SELECT {_INCIDENT_COLUMNS} FROM incidents WHERE id = %s FOR UPDATE", (incident_id,))
    r = await cur.fetchone()
    if r is None:
        raise NotFound(f"incident {incident_id} not found")
    return IncidentRow(r[0], r[1], r[2], Severity(r[3]), r[4], r[5], r[6], r[7], r[8],
                       tuple(r[9]), r[10], r[11], r[12])


async def load_alerts(conn: AnyConn, incident_id: int) -> tuple[AlertRow, ...]:
    cur = await conn.execute(
        "SELECT id, fingerprint, rule_id, severity, site_id, device_id, status, started_at,"
        ' ended_at, summary, "values" FROM alerts WHERE incident_id = %s ORDER BY id',
        (incident_id,))
    return tuple(AlertRow(r[0], r[1], r[2], Severity(r[3]), r[4], r[5], r[6], r[7], r[8],
                          r[9], r[10]) for r in await cur.fetchall())


async def _open_rules(conn: AnyConn, site_id: str, devices: list[str]) -> dict[str, set[str]]:
    cur = await conn.execute(
        "SELECT device_id, rule_id FROM alerts WHERE site_id = %s AND device_id = ANY(%s)"
        " AND status = 'open'", (site_id, devices))
    out: dict[str, set[str]] = {}
    for device, rule in await cur.fetchall():
        out.setdefault(device, set()).add(rule)
    return out


async def active_silences(conn: AnyConn, now: datetime) -> list[Silence]:
    cur = await conn.execute(
        "SELECT id, matchers, starts_at, ends_at, kind FROM silences"
        " WHERE ended_at IS NULL AND starts_at <= %s AND ends_at > %s", (now, now))
    return [Silence(r[0], r[1], r[2], r[3], r[4]) for r in await cur.fetchall()]


async def clue_receivers(conn: AnyConn, clue_id: str) -> list[str]:
    cur = await conn.execute(
        "SELECT DISTINCT receiver FROM clue_outbox WHERE clue_id = %s ORDER BY receiver",
        (clue_id,))
    return [r[0] for r in await cur.fetchall()]


async def emit(conn: AnyConn, inc: IncidentRow, view: IncidentView, event: ClueEvent,
               receivers: list[str], policy: Policy, now: datetime,
               resolution: dict[str, Any] | None = None) -> int:
    """Queue the next clue event of ``inc`` for ``receivers``; returns its seq."""
    seq = inc.event_seq + 1
    clue = build_clue(view, event, seq, policy.public_base_url, now, resolution)
    key = idempotency_key(inc.clue_id, event, seq)
    payload = Jsonb(clue.model_dump(mode="json"))
    for name in receivers:
        await conn.execute(
            "INSERT INTO clue_outbox (clue_id, alert_id, incident_id, receiver, event, seq,"
            " idempotency_key, payload) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT DO NOTHING",
            (inc.clue_id, clue.alert_id, inc.id, name, event, seq, key, payload))
    await conn.execute("UPDATE incidents SET event_seq = %s WHERE id = %s", (seq, inc.id))
    metrics.CLUE_EVENTS.labels(event).inc()
    return seq


async def reconcile(conn: AnyConn, incident_id: int, policy: Policy, now: datetime, *,
                    joined: int | None = None, reopened: bool = False,
                    resolution: dict[str, Any] | None = None) -> None:
    """Bring an incident in line with its alerts (caller holds the site lock): primary and
    severity; resolved when every alert is; a held clue released when nothing holds it
    any more; an ``updated`` event when an alert joins a notified incident."""
    inc = await load_incident(conn, incident_id)
    alerts = await load_alerts(conn, incident_id)
    members = [a.member() for a in alerts]
    raised = inc.severity if inc.escalated_from else None
    severity = severity_of(members, raised)
    p = primary(members)
    await conn.execute(
        "UPDATE incidents SET primary_alert_id = %s, severity = %s, updated_at = now()"
        " WHERE id = %s", (p.alert_id, severity.value, incident_id))
    view = IncidentView(inc.id, inc.clue_id, severity, inc.escalation_level, alerts)
    if inc.status == "open" and all(m.status == "resolved" for m in members):
        await _close(conn, inc, view, policy, now, by=SYSTEM, reason="condition cleared",
                     resolution=resolution, at=max(a.ended_at or now for a in alerts))
        return
    if inc.status != "open":
        return
    devices = sorted({m.device_id for m in members})
    open_rules = await _open_rules(conn, inc.site_id, devices)
    silences = await active_silences(conn, now)
    inhibitions = policy.alerts.inhibitions
    if inc.notify_state == "held":
        decision = notify_decision(members, open_rules, silences, inhibitions, now)
        if isinstance(decision, Notify):
            await _notify(conn, inc, view, policy, now)
        elif decision.reason != inc.held_reason:
            await conn.execute("UPDATE incidents SET held_reason = %s WHERE id = %s",
                               (decision.reason, incident_id))
            await history(conn, incident_id, SYSTEM, "held", {"reason": decision.reason})
            metrics.HELD.labels(decision.reason.split(":")[0]).inc()
        return
    if joined is not None and not reopened:
        member = next(m for m in members if m.alert_id == joined)
        reason = why_not(member, open_rules.get(member.device_id, ()), silences, inhibitions,
                         now)
        if reason is not None:
            await history(conn, incident_id, SYSTEM, "update_held", {"reason": reason}, joined)
            return
        names = await clue_receivers(conn, inc.clue_id)
        seq = await emit(conn, inc, view, "updated", names, policy, now)
        await history(conn, incident_id, SYSTEM, "clue_updated",
                      {"seq": seq, "receivers": names}, joined)


async def _notify(conn: AnyConn, inc: IncidentRow, view: IncidentView, policy: Policy,
                  now: datetime) -> None:
    """Release the clue: ``created`` to the receivers that take it, or, for an incident
    whose clue went out before it was resolved and reopened, ``reopened`` to the same
    receivers as before."""
    if inc.event_seq < 0:
        p = view.primary()
        names = routes(policy.receivers, p.site_id, p.rule_id, view.severity)
        event: ClueEvent = "created"
    else:
        names = await clue_receivers(conn, inc.clue_id)
        event = "reopened"
    seq = await emit(conn, inc, view, event, names, policy, now)
    await conn.execute(
        "UPDATE incidents SET notify_state = 'notified', held_reason = NULL,"
        " notified_at = %s WHERE id = %s", (now, inc.id))
    await history(conn, inc.id, SYSTEM, "notified" if event == "created" else "clue_reopened",
                  {"seq": seq, "receivers": names, "held_reason": inc.held_reason})


async def _close(conn: AnyConn, inc: IncidentRow, view: IncidentView, policy: Policy,
                 now: datetime, *, by: str, reason: str, at: datetime,
                 resolution: dict[str, Any] | None) -> None:
    await conn.execute(
        "UPDATE incidents SET status = 'resolved', resolved_at = %s, resolved_by = %s,"
        " resolve_reason = %s, updated_at = now() WHERE id = %s",
        (at, by, reason, inc.id))
    detail: dict[str, Any] = {"reason": reason}
    if inc.notify_state == "notified":
        names = [n for n in await clue_receivers(conn, inc.clue_id)
                 if (r := policy.receiver(n)) is None or r.send_resolved]
        detail["seq"] = await emit(conn, inc, view, "resolved", names, policy, now,
                                   resolution or {"by": by, "reason": reason})
        detail["receivers"] = names
    else:
        detail["clue"] = f"none sent ({inc.held_reason})"
    await history(conn, inc.id, by, "resolved", detail)
    metrics.INCIDENTS.labels("resolved").inc()


async def resolve_by_hand(conn: AnyConn, incident_id: int, actor: str, reason: str,
                          policy: Policy, now: datetime | None = None) -> None:
    """A person resolves an open incident: its open alerts end now, the clue's receivers
    get ``resolved`` with who and why. A condition that fires again reopens it."""
    now = now or utcnow()
    async with conn.transaction():
        site = await _site_of(conn, incident_id)
        await lock_site(conn, site)
        inc = await load_incident(conn, incident_id)
        if inc.status != "open":
            raise Conflict(f"incident {incident_id} is already resolved")
        await conn.execute(
            "UPDATE alerts SET status = 'resolved', ended_at = %s, resolved_by = %s,"
            " resolve_reason = %s, updated_at = now() WHERE incident_id = %s"
            " AND status = 'open'", (now, actor, reason, incident_id))
        alerts = await load_alerts(conn, incident_id)
        view = IncidentView(inc.id, inc.clue_id, inc.severity, inc.escalation_level, alerts)
        await _close(conn, inc, view, policy, now, by=actor, reason=reason, at=now,
                     resolution={"by": actor, "reason": reason, "manual": True})


class Conflict(ValueError):
    """The action does not fit the incident's state (HTTP 409)."""


async def _site_of(conn: AnyConn, incident_id: int) -> str:
    cur = await conn.execute("SELECT site_id FROM incidents WHERE id = %s", (incident_id,))
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"incident {incident_id} not found")
    return str(row[0])


# --- by time alone ----------------------------------------------------------------------


async def release_held(conn: AnyConn, policy: Policy, now: datetime | None = None,
                       limit: int = 500) -> int:
    """Look again at open incidents held by a silence or an inhibition (the silence may
    have ended, the device come back); returns how many clues went out."""
    now = now or utcnow()
    cur = await conn.execute(
        "SELECT id, site_id FROM incidents WHERE status = 'open' AND notify_state = 'held'"
        " AND held_reason IS DISTINCT FROM 'info' ORDER BY id LIMIT %s", (limit,))
    released = 0
    for incident_id, site_id in await cur.fetchall():
        async with conn.transaction():
            await lock_site(conn, site_id)
            await reconcile(conn, incident_id, policy, now)
            after = await load_incident(conn, incident_id)
            released += after.notify_state == "notified"
    return released


async def escalate_due(conn: AnyConn, policy: Policy, now: datetime | None = None,
                       limit: int = 500) -> int:
    """Escalate every notified, unacknowledged incident whose time is up; returns how many."""
    now = now or utcnow()
    cur = await conn.execute(
        "SELECT id, site_id FROM incidents WHERE status = 'open' AND notify_state = 'notified'"
        " AND acknowledged_at IS NULL ORDER BY notified_at LIMIT %s", (limit,))
    escalated = 0
    for incident_id, site_id in await cur.fetchall():
        async with conn.transaction():
            await lock_site(conn, site_id)
            inc = await load_incident(conn, incident_id)
            clock = EscalationClock(inc.severity, inc.notified_at, inc.escalated_at,
                                    inc.escalated_from, inc.acknowledged, inc.status == "open")
            step = escalation_due(clock, policy.alerts.escalation, now)
            if step is None or inc.notify_state != "notified":
                continue
            raised = inc.severity
            if step.raise_to is not None and rank(step.raise_to) > rank(inc.severity):
                raised = Severity(step.raise_to)
            await conn.execute(
                "UPDATE incidents SET severity = %s, escalation_level = escalation_level + 1,"
                " escalated_at = %s, escalated_from = array_append(escalated_from, %s),"
                " updated_at = now() WHERE id = %s",
                (raised.value, now, inc.severity.value, incident_id))
            alerts = await load_alerts(conn, incident_id)
            view = IncidentView(inc.id, inc.clue_id, raised, inc.escalation_level + 1, alerts)
            names = sorted(set(await clue_receivers(conn, inc.clue_id)) | set(step.receivers))
            seq = await emit(conn, inc, view, "escalated", names, policy, now)
            await history(conn, incident_id, SYSTEM, "escalated", {
                "from": inc.severity.value, "to": raised.value, "seq": seq,
                "receivers": names, "after_s": step.after_s})
            metrics.ESCALATIONS.labels(inc.severity.value).inc()
            escalated += 1
    return escalated


async def tick(conn: AnyConn, policy: Policy, now: datetime | None = None) -> tuple[int, int]:
    """What the service does every ``tick_s``, messages or not: release held clues, then
    escalate; returns (released, escalated)."""
    now = now or utcnow()
    return await release_held(conn, policy, now), await escalate_due(conn, policy, now)


async def false_positive_snapshots(conn: AnyConn, *, site_id: str | None = None,
                                   device_id: str | None = None, days: int = 90
                                   ) -> list[str]:
    """Evidence SHA-256s of camera findings in incidents the task system (or staff)
    marked false positive in the last ``days``: the frames the labelling export picks
    from a box's review queue (``python -m vision.labelling export --false-positives``)."""
    cur = await conn.execute(
        "SELECT DISTINCT e.payload->'values'->>'snapshot_sha256'"
        " FROM incidents i JOIN alerts a ON a.incident_id = i.id"
        " JOIN alert_events e ON e.alert_id = a.id"
        " WHERE i.false_positive AND a.rule_id LIKE 'vision.%%'"
        " AND e.payload->'values' ? 'snapshot_sha256'"
        " AND i.opened_at >= now() - make_interval(days => %s)"
        " AND (%s::text IS NULL OR i.site_id = %s) AND (%s::text IS NULL OR a.device_id = %s)"
        " ORDER BY 1", (days, site_id, site_id, device_id, device_id))
    return [str(r[0]) for r in await cur.fetchall()]
