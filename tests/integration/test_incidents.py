"""Incidents on real PostgreSQL: correlation, noise control, reopen, escalation by time.

Each test applies alert transitions as the stream sends them and reads what the task
system would get: the rows of the clue outbox.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from alerts.repository import Policy, apply_transition, resolve_by_hand, tick
from ganzhi.contracts import Severity

from alerting import (
    FIRING,
    RESOLVED,
    T0,
    history_actions,
    incidents,
    outbox_rows,
    policy,
    tr,
)

pytestmark = pytest.mark.integration
MIN = timedelta(minutes=1)


@pytest.fixture
async def conn(pg_dsn: str) -> AsyncIterator[AsyncConnection[Any]]:
    c = await AsyncConnection.connect(pg_dsn, autocommit=True)
    yield c
    await c.close()


async def apply_all(conn: AsyncConnection[Any], p: Policy, *ts: Any) -> list[str]:
    return [(await apply_transition(conn, t, p, now=t.at)).outcome for t in ts]


def events(dsn: str) -> list[tuple[str, int]]:
    return [(r[1], r[2]) for r in outbox_rows(dsn)]


async def test_excursion_with_its_rate_of_rise_is_one_clue(
        pg_dsn: str, conn: AsyncConnection[Any]) -> None:
    p = policy()
    high = tr(FIRING, "cold_chain.temperature_high", start=T0, at=T0 + 10 * MIN)
    rise = tr(FIRING, "cold_chain.rate_of_rise", start=T0 + 2 * MIN, at=T0 + 5 * MIN,
              severity=Severity.CRITICAL)
    assert await apply_all(conn, p, rise, high) == ["opened", "opened"]
    [(iid, family, status, state, _, severity, n)] = incidents(pg_dsn)
    assert (family, status, state, severity, n) == ("cold_chain", "open", "notified",
                                                    "critical", 2)
    # the first alert opened the clue, the second is an update of it, not a new clue
    assert events(pg_dsn) == [("created", 0), ("updated", 1)]
    await apply_all(conn, p, tr(RESOLVED, "cold_chain.rate_of_rise", start=T0 + 2 * MIN,
                                at=T0 + 20 * MIN, severity=Severity.CRITICAL))
    assert incidents(pg_dsn)[0][2] == "open"  # the excursion still holds
    await apply_all(conn, p, tr(RESOLVED, "cold_chain.temperature_high", start=T0,
                                at=T0 + 30 * MIN))
    assert incidents(pg_dsn)[0][2] == "resolved"
    assert events(pg_dsn) == [("created", 0), ("updated", 1), ("resolved", 2)]
    keys = [r[4] for r in outbox_rows(pg_dsn)]
    assert keys[1:] == [f"{keys[0]}:updated:1", f"{keys[0]}:resolved:2"]
    assert history_actions(pg_dsn, iid) == [
        "opened", "notified", "joined", "clue_updated", "alert_resolved", "alert_resolved",
        "resolved"]


async def test_trapped_passenger_and_alarm_button_are_one_clue(
        pg_dsn: str, conn: AsyncConnection[Any]) -> None:
    p = policy()
    await apply_all(
        conn, p,
        tr(FIRING, "elevator.alarm_button", start=T0, device="lift-1"),
        tr(FIRING, "elevator.trapped_not_at_level", start=T0 + MIN, device="lift-1",
           severity=Severity.CRITICAL),
        tr(FIRING, "elevator.emergency_call", start=T0 + 2 * MIN, device="lift-1",
           severity=Severity.CRITICAL))
    [(_, family, _, state, _, severity, n)] = incidents(pg_dsn)
    assert (family, state, severity, n) == ("elevator_entrapment", "notified", "critical", 3)
    assert [e for e, _ in events(pg_dsn)] == ["created", "updated", "updated"]
    # the clue's primary is the most severe alert, then the earliest
    with psycopg.connect(pg_dsn) as c:
        row = c.execute("SELECT payload FROM clue_outbox ORDER BY id DESC LIMIT 1").fetchone()
    assert row is not None
    body = row[0]
    assert body["rule_id"] == "elevator.trapped_not_at_level"
    assert [m["rule_id"] for m in body["members"]] == [
        "elevator.alarm_button", "elevator.trapped_not_at_level", "elevator.emergency_call"]


async def test_maintenance_mode_gives_no_clue_and_holds_the_elevators_faults(
        pg_dsn: str, conn: AsyncConnection[Any]) -> None:
    p = policy()
    await apply_all(
        conn, p,
        tr(FIRING, "elevator.maintenance_mode", start=T0, device="lift-1",
           severity=Severity.INFO),
        tr(FIRING, "elevator.door_open_fault", start=T0 + MIN, device="lift-1"))
    assert outbox_rows(pg_dsn) == []
    rows = incidents(pg_dsn)
    assert [(r[3], r[4]) for r in rows] == [
        ("held", "info"), ("held", "inhibited:elevator.maintenance_mode")]
    # maintenance ends with the fault cleared: nothing was ever sent
    await apply_all(
        conn, p,
        tr(RESOLVED, "elevator.door_open_fault", start=T0 + MIN, at=T0 + 5 * MIN,
           device="lift-1"),
        tr(RESOLVED, "elevator.maintenance_mode", start=T0, at=T0 + 6 * MIN,
           device="lift-1", severity=Severity.INFO))
    await tick(conn, p, T0 + 7 * MIN)
    assert outbox_rows(pg_dsn) == []
    assert all(r[2] == "resolved" for r in incidents(pg_dsn))


async def test_fault_still_there_when_maintenance_ends_is_sent(
        pg_dsn: str, conn: AsyncConnection[Any]) -> None:
    p = policy()
    await apply_all(
        conn, p,
        tr(FIRING, "elevator.inspection_mode", start=T0, device="lift-1",
           severity=Severity.INFO),
        tr(FIRING, "elevator.safety_circuit_open", start=T0 + MIN, device="lift-1"),
        tr(RESOLVED, "elevator.inspection_mode", start=T0, at=T0 + 6 * MIN,
           device="lift-1", severity=Severity.INFO))
    assert outbox_rows(pg_dsn) == []
    await tick(conn, p, T0 + 7 * MIN)
    assert events(pg_dsn) == [("created", 0)]


async def test_info_alerts_are_never_clues_until_a_real_one_joins(
        pg_dsn: str, conn: AsyncConnection[Any]) -> None:
    p = policy()
    await apply_all(conn, p, tr(FIRING, "cold_chain.door_open", start=T0,
                                severity=Severity.INFO))
    assert outbox_rows(pg_dsn) == []
    await apply_all(conn, p, tr(FIRING, "cold_chain.temperature_high", start=T0 + MIN))
    assert events(pg_dsn) == [("created", 0)]
    assert len(incidents(pg_dsn)) == 1


async def add_silence(dsn: str, matchers: dict[str, str], minutes: int) -> int:
    with psycopg.connect(dsn, autocommit=True) as c:
        row = c.execute(
            "INSERT INTO silences (matchers, starts_at, ends_at, created_by, reason)"
            " VALUES (%s, %s, %s, 'tester', 'planned defrost') RETURNING id",
            (Jsonb(matchers), T0 - MIN, T0 + minutes * MIN)).fetchone()
    assert row is not None
    return int(row[0])


async def test_silence_holds_the_clue_and_releases_it_after_if_the_condition_holds(
        pg_dsn: str, conn: AsyncConnection[Any]) -> None:
    p = policy()
    sid = await add_silence(pg_dsn, {"site_id": "site-1", "rule_id": "cold_chain.*"}, 30)
    await apply_all(conn, p,
                    tr(FIRING, "cold_chain.temperature_high", start=T0, device="room-1"),
                    tr(FIRING, "cold_chain.temperature_high", start=T0, device="room-2"),
                    tr(RESOLVED, "cold_chain.temperature_high", start=T0, device="room-2",
                       at=T0 + 10 * MIN))
    [one, two] = incidents(pg_dsn)
    assert (one[3], one[4]) == ("held", f"silenced:{sid}")
    assert two[2] == "resolved"
    await tick(conn, p, T0 + 29 * MIN)
    assert outbox_rows(pg_dsn) == []  # still silenced
    await tick(conn, p, T0 + 31 * MIN)
    # room-1 still too warm when the silence ended: its clue goes out; room-2 never
    assert events(pg_dsn) == [("created", 0)]
    assert incidents(pg_dsn)[0][3] == "notified"
    assert "held" in history_actions(pg_dsn, one[0])


async def test_device_offline_joins_what_it_was_raising_and_inhibits_new_alerts(
        pg_dsn: str, conn: AsyncConnection[Any]) -> None:
    p = policy()
    await apply_all(conn, p,
                    tr(FIRING, "cold_chain.temperature_high", start=T0),
                    tr(FIRING, "device.offline", start=T0 + 5 * MIN))
    assert len(incidents(pg_dsn)) == 1
    assert events(pg_dsn) == [("created", 0), ("updated", 1)]
    # another device goes offline first, then raises something: held while offline
    await apply_all(conn, p,
                    tr(FIRING, "device.offline", start=T0, device="lift-9"),
                    tr(FIRING, "elevator.overspeed", start=T0 + MIN, device="lift-9"))
    rows = incidents(pg_dsn)
    assert rows[2][3:5] == ("held", "inhibited:device.offline")
    await apply_all(conn, p, tr(RESOLVED, "device.offline", start=T0, device="lift-9",
                                at=T0 + 3 * MIN))
    await tick(conn, p, T0 + 4 * MIN)
    assert incidents(pg_dsn)[2][3] == "notified"


async def test_condition_that_recurs_within_the_window_reopens_the_incident(
        pg_dsn: str, conn: AsyncConnection[Any]) -> None:
    p = policy(reopen_window_s=600)
    rule = "vision.no_mask"
    await apply_all(conn, p,
                    tr(FIRING, rule, start=T0, severity=Severity.MINOR),
                    tr(RESOLVED, rule, start=T0, at=T0 + 2 * MIN, severity=Severity.MINOR),
                    tr(FIRING, rule, start=T0 + 5 * MIN, severity=Severity.MINOR))
    [(iid, *_rest)] = incidents(pg_dsn)
    assert events(pg_dsn) == [("created", 0), ("resolved", 1), ("reopened", 2)]
    assert "reopened" in history_actions(pg_dsn, iid)
    # after the window it is a new incident and a new clue
    await apply_all(conn, p,
                    tr(RESOLVED, rule, start=T0 + 5 * MIN, at=T0 + 6 * MIN,
                       severity=Severity.MINOR),
                    tr(FIRING, rule, start=T0 + 30 * MIN, severity=Severity.MINOR))
    assert len(incidents(pg_dsn)) == 2
    assert events(pg_dsn)[-1] == ("created", 0)


async def test_escalation_by_time_alone_until_acknowledged(
        pg_dsn: str, conn: AsyncConnection[Any]) -> None:
    p = policy(receivers=[{"name": "duty-office", "url": "http://127.0.0.1:9/duty",
                           "secret": "d" * 40, "escalation_only": True}],
               escalation={"major": {"after_s": 600, "raise_to": "critical"},
                           "critical": {"after_s": 300, "receivers": ["duty-office"]}})
    await apply_all(conn, p, tr(FIRING, "elevator.overspeed", start=T0))
    assert [r[0] for r in outbox_rows(pg_dsn)] == ["task-system"]
    assert await tick(conn, p, T0 + 9 * MIN) == (0, 0)
    assert await tick(conn, p, T0 + 11 * MIN) == (0, 1)  # major -> critical
    assert await tick(conn, p, T0 + 12 * MIN) == (0, 0)
    assert await tick(conn, p, T0 + 17 * MIN) == (0, 1)  # critical -> the duty office
    assert await tick(conn, p, T0 + 60 * MIN) == (0, 0)  # each step once
    rows = outbox_rows(pg_dsn)
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("task-system", "created", 0), ("task-system", "escalated", 1),
        ("duty-office", "escalated", 2), ("task-system", "escalated", 2)]
    assert incidents(pg_dsn)[0][5] == "critical"
    # later events of the clue reach the duty office too
    await apply_all(conn, p, tr(RESOLVED, "elevator.overspeed", start=T0, at=T0 + 70 * MIN))
    assert {r[0] for r in outbox_rows(pg_dsn) if r[1] == "resolved"} == {
        "task-system", "duty-office"}


async def test_acknowledged_incident_does_not_escalate(
        pg_dsn: str, conn: AsyncConnection[Any]) -> None:
    p = policy(escalation={"critical": {"after_s": 60}})
    await apply_all(conn, p, tr(FIRING, "elevator.overspeed", start=T0,
                                severity=Severity.CRITICAL))
    await conn.execute("UPDATE incidents SET acknowledged_at = %s, acknowledged_by = 'x'",
                       (T0 + MIN / 2,))
    assert await tick(conn, p, T0 + 10 * MIN) == (0, 0)


async def test_resolved_by_hand_with_a_reason(pg_dsn: str, conn: AsyncConnection[Any]) -> None:
    p = policy()
    await apply_all(conn, p, tr(FIRING, "cold_chain.temperature_high", start=T0))
    [(iid, *_rest)] = incidents(pg_dsn)
    await resolve_by_hand(conn, iid, "staff:li", "goods moved to another room", p,
                          now=T0 + 5 * MIN)
    assert events(pg_dsn) == [("created", 0), ("resolved", 1)]
    with psycopg.connect(pg_dsn) as c:
        row = c.execute("SELECT payload FROM clue_outbox WHERE event = 'resolved'").fetchone()
        alert = c.execute("SELECT status, resolved_by FROM alerts").fetchone()
    assert row is not None and row[0]["resolution"] == {
        "by": "staff:li", "reason": "goods moved to another room", "manual": True}
    assert alert == ("resolved", "staff:li")
    # the stream's own clearing later changes nothing
    assert await apply_all(conn, p, tr(RESOLVED, "cold_chain.temperature_high", start=T0,
                                       at=T0 + 9 * MIN)) == ["ignored"]


async def test_routing_by_site_rule_and_severity(pg_dsn: str, conn: AsyncConnection[Any]
                                                 ) -> None:
    p = policy(receivers=[
        {"name": "district-a", "url": "http://127.0.0.1:9/a", "secret": "a" * 40,
         "sites": ["a-*"]},
        {"name": "lifts-critical", "url": "http://127.0.0.1:9/l", "secret": "l" * 40,
         "rules": ["elevator.*"], "min_severity": "critical"}])
    await apply_all(conn, p,
                    tr(FIRING, "cold_chain.temperature_high", start=T0, site="a-1"),
                    tr(FIRING, "elevator.overspeed", start=T0, site="b-1",
                       severity=Severity.CRITICAL),
                    tr(FIRING, "elevator.door_open_fault", start=T0, site="b-1",
                       device="lift-2"))
    got = sorted((r[0], r[4]) for r in outbox_rows(pg_dsn))
    receivers = sorted(r for r, _ in got)
    assert receivers == ["district-a", "lifts-critical", "task-system", "task-system",
                         "task-system"]


async def test_replayed_transitions_change_nothing(pg_dsn: str, conn: AsyncConnection[Any]
                                                   ) -> None:
    p = policy()
    ts = [tr(FIRING, "cold_chain.temperature_high", start=T0),
          tr(FIRING, "cold_chain.rate_of_rise", start=T0 + MIN),
          tr(RESOLVED, "cold_chain.rate_of_rise", start=T0 + MIN, at=T0 + 3 * MIN)]
    await apply_all(conn, p, *ts)
    before = (outbox_rows(pg_dsn), incidents(pg_dsn))
    assert await apply_all(conn, p, *ts) == ["duplicate"] * 3
    assert (outbox_rows(pg_dsn), incidents(pg_dsn)) == before


async def test_a_receiver_may_not_want_resolutions(pg_dsn: str, conn: AsyncConnection[Any]
                                                   ) -> None:
    p = policy(receivers=[{"name": "ops-board", "url": "http://127.0.0.1:9/o",
                           "secret": "o" * 40, "send_resolved": False}])
    await apply_all(conn, p, tr(FIRING, "elevator.overspeed", start=T0),
                    tr(RESOLVED, "elevator.overspeed", start=T0, at=T0 + MIN))
    assert sorted((r[0], r[1]) for r in outbox_rows(pg_dsn)) == [
        ("ops-board", "created"), ("task-system", "created"), ("task-system", "resolved")]


async def test_fire_retract_fire_of_one_episode_reopens_it(
        pg_dsn: str, conn: AsyncConnection[Any]) -> None:
    """The stream fires speculatively, retracts (RESOLVED) when late data disproves it,
    then fires the same episode again under a new generation of its transition id."""
    p = policy()
    rule = "cold_chain.door_open"
    first = tr(FIRING, rule, start=T0, at=T0 + MIN)
    retract = tr(RESOLVED, rule, start=T0, at=T0 + 2 * MIN)
    again = first.model_copy(update={"transition_id": first.transition_id + "|g1",
                                     "at": T0 + 3 * MIN, "values": {"generation": 1}})
    assert await apply_all(conn, p, first, retract, again) == ["opened", "resolved", "refired"]
    with psycopg.connect(pg_dsn) as c:
        assert c.execute("SELECT count(*), min(status) FROM alerts").fetchone() == (1, "open")
    [(iid, _, status, state, *_rest)] = incidents(pg_dsn)
    assert (status, state) == ("open", "notified")
    assert events(pg_dsn) == [("created", 0), ("resolved", 1), ("reopened", 2)]
    assert history_actions(pg_dsn, iid)[-2:] == ["reopened", "clue_reopened"]
    assert await apply_all(conn, p, again) == ["duplicate"]
