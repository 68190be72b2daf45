"""Prometheus metrics of the alerts service (default registry, served by OpsServer)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

TRANSITIONS = Counter(
    "ganzhi_alerts_transitions_total",
    "Alert transitions consumed, by outcome (opened, attached, resolved, duplicate, ignored).",
    ["outcome"],
)
DEAD_LETTERED = Counter(
    "ganzhi_alerts_dead_lettered_total",
    "Transition records refused for good (unparseable, refused by the database) and sent"
    " to the dead-letter topic, by reason.",
    ["reason"],
)
ALERTS_OPENED = Counter("ganzhi_alerts_opened_total", "Alerts opened.")
ALERTS_RESOLVED = Counter("ganzhi_alerts_resolved_total", "Alerts resolved.")
APPLY_ERRORS = Counter(
    "ganzhi_alerts_apply_errors_total",
    "Transient database errors while applying a transition (retried)."
)
DELIVERIES = Counter(
    "ganzhi_alerts_clue_deliveries_total",
    "Clue delivery attempts, by receiver and outcome (delivered, retry, dead).",
    ["receiver", "outcome"],
)
LAG = Gauge(
    "ganzhi_alerts_lag_records",
    "Alert transitions on a partition this service consumes not yet applied (the "
    "consumer's highwater from its last fetch minus its position)",
    ["partition"])
OUTBOX_PENDING = Gauge(
    "ganzhi_alerts_outbox_pending",
    "Clue events waiting in a receiver's outbox, held ones included.",
    ["receiver"],
)
OUTBOX_HELD = Gauge(
    "ganzhi_alerts_outbox_held",
    "Clue events held behind a dead earlier event of their clue, by receiver.",
    ["receiver"],
)
OUTBOX_DEAD = Gauge(
    "ganzhi_alerts_outbox_dead",
    "Clue events a receiver refused (4xx), kept for an operator to re-queue or drop.",
    ["receiver"],
)
OUTBOX_OLDEST = Gauge(
    "ganzhi_alerts_outbox_oldest_pending_seconds",
    "Age of the oldest clue event still pending for a receiver (0: none).",
    ["receiver"],
)
DELIVERY_SECONDS = Histogram(
    "ganzhi_alerts_clue_delivery_seconds",
    "Duration of one webhook POST, by receiver.",
    ["receiver"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
DELIVERY_DELAY_SECONDS = Histogram(
    "ganzhi_alerts_clue_delivery_delay_seconds",
    "From a clue event entering the outbox to its accepted delivery, by receiver.",
    ["receiver"],
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400),
)
INCIDENTS = Counter(
    "ganzhi_alerts_incidents_total",
    "Incidents opened, reopened and resolved.",
    ["change"],
)
CLUE_EVENTS = Counter(
    "ganzhi_alerts_clue_events_total",
    "Clue events queued (created, updated, escalated, reopened, resolved).",
    ["event"],
)
HELD = Counter(
    "ganzhi_alerts_clues_held_total",
    "Incidents whose clue was held, by reason (info, inhibited, silenced, reopened).",
    ["reason"],
)
ESCALATIONS = Counter(
    "ganzhi_alerts_escalations_total",
    "Incidents escalated for want of acknowledgement, by the severity they had.",
    ["severity"],
)
TICK_ERRORS = Counter(
    "ganzhi_alerts_tick_errors_total",
    "Ticks (release held clues, escalate) that failed, e.g. the database was down.",
)
