"""Prometheus metrics of the ingest bridge."""

from prometheus_client import Counter, Gauge, Histogram

RECEIVED = Counter("ganzhi_ingest_received_total", "MQTT messages received")
ACCEPTED = Counter(
    "ganzhi_ingest_accepted_total", "Valid messages produced to Kafka", ["channel"]
)
DEAD_LETTERED = Counter(
    "ganzhi_ingest_dead_lettered_total", "Messages sent to the dead-letter topic", ["reason"]
)
FORWARDED = Counter("ganzhi_ingest_acked_total", "Messages acknowledged to the MQTT broker")
KAFKA_ERRORS = Counter("ganzhi_ingest_kafka_errors_total", "Failed Kafka produce attempts")
MQTT_CONNECTED = Gauge("ganzhi_ingest_mqtt_connected", "1 while connected to the MQTT broker")
BATCH_SECONDS = Histogram(
    "ganzhi_ingest_batch_seconds", "Receive-to-acknowledge time of one batch",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
EVIDENCE_STORED = Counter(
    "ganzhi_ingest_evidence_stored_total", "Evidence snapshots stored (or already there)")
EVIDENCE_BYTES = Counter("ganzhi_ingest_evidence_bytes_total", "Bytes of evidence stored")
EVIDENCE_ERRORS = Counter(
    "ganzhi_ingest_evidence_store_errors_total", "Failed evidence writes (retried)")
