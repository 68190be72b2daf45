"""Test helpers for the alerts service: transitions, a policy, outbox and history reads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from pydantic import SecretStr

from alerts.repository import Policy
from ganzhi.contracts import AlertTransition, Severity, TransitionKind
from ganzhi.settings import Settings

SECRET = "test-webhook-secret-0123456789abcdef"
SECRET_2 = "second-receiver-secret-0123456789abcdef"
T0 = datetime(2025, 1, 1, 8, 0, tzinfo=UTC)
BASE = "http://ganzhi.test"
FIRING, RESOLVED = TransitionKind.FIRING, TransitionKind.RESOLVED


def settings(url: str | None = "http://127.0.0.1:9/clues", *, receivers: list[dict[str, Any]]
             | None = None, **alerts: Any) -> Settings:
    return Settings(
        webhook={"url": url, "secret": SecretStr(SECRET), "public_base_url": BASE,
                 "timeout_s": 2.0, "backoff_base_s": 0.01, "backoff_max_s": 0.05,
                 "poll_interval_s": 0.02},
        alerts={"receivers": receivers or [], **alerts},
    )


def policy(url: str | None = "http://127.0.0.1:9/clues", **kw: Any) -> Policy:
    return Policy.from_settings(settings(url, **kw))


def tr(kind: TransitionKind, rule_id: str, *, start: datetime = T0,
       at: datetime | None = None, device: str = "dev-1", site: str = "site-1",
       severity: Severity = Severity.MAJOR, values: dict[str, Any] | None = None,
       summary: str | None = None) -> AlertTransition:
    """A transition of ``rule_id`` on one device; the fingerprint is rule + site + device."""
    at = at or (start if kind is FIRING else start + timedelta(minutes=10))
    fp = f"{rule_id}|{site}|{device}"
    return AlertTransition(
        transition_id=f"{fp}|{kind.value}|{start.isoformat()}|{at.isoformat()}",
        kind=kind, fingerprint=fp, rule_id=rule_id, severity=severity, site_id=site,
        device_id=device, started_at=start, at=at, summary=summary or rule_id,
        values=values or {},
    )


def outbox_rows(dsn: str) -> list[tuple[Any, ...]]:
    """(receiver, event, seq, status, idempotency_key) in id order."""
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT receiver, event, seq, status, idempotency_key FROM clue_outbox ORDER BY id"
        ).fetchall()


def incidents(dsn: str) -> list[tuple[Any, ...]]:
    """(id, family, status, notify_state, held_reason, severity, alerts) in id order."""
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT i.id, i.family, i.status, i.notify_state, i.held_reason, i.severity,"
            " (SELECT count(*) FROM alerts a WHERE a.incident_id = i.id)"
            " FROM incidents i ORDER BY i.id").fetchall()


def history_actions(dsn: str, incident_id: int) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [r[0] for r in conn.execute(
            "SELECT action FROM incident_history WHERE incident_id = %s ORDER BY id",
            (incident_id,)).fetchall()]
