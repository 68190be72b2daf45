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
    "Clue delivery attempts, by outcome (delivered, retry, dead).",
    ["outcome"],
)
OUTBOX_PENDING = Gauge(
    "ganzhi_alerts_outbox_pending",
    "Clue events (created, resolved) waiting in the outbox, held ones included.",
)
OUTBOX_HELD = Gauge(
    "ganzhi_alerts_outbox_held",
    "Resolved clue events held because their clue's created event is dead.",
)
DELIVERY_SECONDS = Histogram(
    "ganzhi_alerts_clue_delivery_seconds",
    "Duration of one webhook POST.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
DELIVERY_DELAY_SECONDS = Histogram(
    "ganzhi_alerts_clue_delivery_delay_seconds",
    "From a clue entering the outbox to its accepted delivery.",
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400),
)
