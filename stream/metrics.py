"""Prometheus metrics of the stream processor."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

READINGS_WRITTEN = Counter(
    "ganzhi_stream_readings_written_total", "Readings inserted into PostgreSQL")
READINGS_DUPLICATE = Counter(
    "ganzhi_stream_readings_duplicate_total", "Readings already stored (replays, retries)")
BATCHES = Counter("ganzhi_stream_batches_total", "Batches of Kafka messages processed")
BATCH_SECONDS = Histogram(
    "ganzhi_stream_batch_seconds", "Time to process one batch (DB write, rules, sends)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
BATCH_MESSAGES = Histogram(
    "ganzhi_stream_batch_messages", "Kafka messages per batch",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000),
)
TRANSITIONS = Counter(
    "ganzhi_stream_transitions_total", "Alert transitions emitted", ["rule_id", "kind"])
LATE_DROPPED = Counter(
    "ganzhi_stream_late_snapshots_total",
    "Snapshots older than the allowed lateness, ignored by the rules (readings still stored)",
    ["rules"])
DEAD_LETTERED = Counter(
    "ganzhi_stream_dead_lettered_total",
    "Records refused for good and sent to the dead-letter topic", ["reason"])
RULE_ERRORS = Counter(
    "ganzhi_stream_rule_errors_total",
    "Rule evaluations that raised (the message is dead-lettered, the timer goes on)")
DB_ERRORS = Counter("ganzhi_stream_db_errors_total",
                    "Failed readings writes, transient (retried)")
SEND_ERRORS = Counter("ganzhi_stream_send_errors_total",
                      "Failed sends to Kafka, transient (retried)", ["what"])
REORDERED = Counter(
    "ganzhi_stream_reordered_snapshots_total",
    "Snapshots that arrived out of order within the allowed lateness and were placed",
    ["rules"])
TICKS = Counter("ganzhi_stream_health_ticks_total", "Device-offline timer runs")
OFFSET_GAPS = Counter(
    "ganzhi_stream_offset_gaps_total",
    "Jumps in the offsets the consumer delivered (records skipped): never acknowledged, "
    "read again (stream/offset_gaps.py)")
REWINDS = Counter(
    "ganzhi_stream_offset_rewinds_total",
    "Partitions sought back to the first record not processed after a gap")
EVENTS = Counter(
    "ganzhi_stream_events_total",
    "Device events read (ganzhi.event.v1), by event name (the names a rule reads; any "
    "other is 'other') and outcome (fired, extended, resolved, stale, unknown)",
    ["event", "outcome"])
DEVICES_INCOMPLETE = Gauge(
    "ganzhi_stream_devices_incomplete",
    "Devices heard whose class needs parameters nobody set (device.incomplete_config "
    "open), of the partitions this worker owns; set by the offline timer",
    ["device_class"])
DEVICES = Gauge(
    "ganzhi_stream_devices",
    "Devices heard (or expected) on the telemetry partitions this worker owns, by "
    "liveness (online, offline: device.offline open); set by the offline timer. Summed "
    "over the workers: the platform's share of devices offline",
    ["state"])
LAG = Gauge(
    "ganzhi_stream_lag_records",
    "Telemetry records on a partition this worker owns not yet processed (the consumer's "
    "highwater from its last fetch minus the next offset to process); set by the offline "
    "timer",
    ["partition"])
CHECKPOINT_SECONDS = Histogram(
    "ganzhi_stream_checkpoint_seconds",
    "Time to write one rule-state checkpoint to PostgreSQL (stream/checkpoints.py)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
CHECKPOINT_STATES = Counter(
    "ganzhi_stream_checkpoint_states_total", "Rule states written by checkpoints")
CHECKPOINT_FAILURES = Counter(
    "ganzhi_stream_checkpoint_failures_total",
    "Failed checkpoint writes and partition claims (transient: retried)")
CHECKPOINT_FENCED = Counter(
    "ganzhi_stream_checkpoint_fenced_total",
    "Partitions found claimed by another worker at a checkpoint (their state is dropped)")
ROLLUP_COMPACTION_SECONDS = Histogram(
    "ganzhi_stream_rollup_compaction_seconds",
    "Time of one compaction of the rollup deltas into rollups_1m/1h (stream/sinks/readings.py)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
ROLLUP_DELTAS_COMPACTED = Counter(
    "ganzhi_stream_rollup_deltas_compacted_total",
    "Rollup deltas moved into rollups_1m/1h by this worker's compactions")
ROLLUP_COMPACTION_FAILURES = Counter(
    "ganzhi_stream_rollup_compaction_failures_total",
    "Failed compactions of the rollup deltas (retried at the next interval; readers still "
    "see the pending deltas through the live views, at a growing cost)")
STATE_LOADED = Counter(
    "ganzhi_stream_state_loaded_total",
    "Rule states loaded from checkpoints when partitions were taken")
