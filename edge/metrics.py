"""Prometheus metrics of the edge agent."""

from prometheus_client import Counter, Gauge

SAMPLED = Counter("ganzhi_edge_readings_sampled_total", "Readings read from devices", ["device"])
SPOOLED = Counter("ganzhi_edge_messages_spooled_total", "Messages written to the spool", ["device"])
SPOOL_DEPTH = Gauge("ganzhi_edge_spool_depth", "Messages in the spool not yet acknowledged")
SPOOL_DROPPED = Counter(
    "ganzhi_edge_spool_dropped_total", "Messages lost to the spool's size cap", ["policy"]
)
SENT = Counter("ganzhi_edge_messages_sent_total", "Publishes sent to the broker", ["device"])
ACKED = Counter(
    "ganzhi_edge_messages_acked_total", "Publishes acknowledged by the broker", ["device"]
)
CONNECTED = Gauge("ganzhi_edge_broker_connected", "1 while the device is connected", ["device"])
RECONNECTS = Counter("ganzhi_edge_reconnects_total", "Connection attempts after a loss", ["device"])
SOURCE_ERRORS = Counter(
    "ganzhi_edge_source_errors_total", "Failed device reads", ["device", "reason"]
)
PUBLISH_REFUSED = Counter(
    "ganzhi_edge_publish_refused_total",
    "Publishes the broker answered with a failing PUBACK (e.g. not authorised); they stay "
    "in the spool",
    ["device"],
)
