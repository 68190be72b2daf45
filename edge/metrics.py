"""Prometheus metrics of the edge agent."""

from prometheus_client import Counter, Gauge, Histogram

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
PUBLISH_UNROUTED = Counter(
    "ganzhi_edge_publish_unrouted_total",
    "Publishes the broker answered 'no matching subscribers' (the platform was not"
    " subscribed, e.g. just after a broker restart); kept and sent again",
    ["device"],
)
PUBLISH_REFUSED = Counter(
    "ganzhi_edge_publish_refused_total",
    "Publishes the broker answered with a failing PUBACK (e.g. not authorised); they stay "
    "in the spool",
    ["device"],
)
CAMERA_FRAMES = Counter("ganzhi_edge_camera_frames_total", "Frames inspected", ["camera"])
CAMERA_INFERENCES = Counter(
    "ganzhi_edge_camera_inferences_total", "Frames the detector ran on", ["camera"])
CAMERA_MOTION_SKIPPED = Counter(
    "ganzhi_edge_camera_motion_skipped_total", "Frames skipped: nothing moved", ["camera"])
CAMERA_CHANGES = Counter(
    "ganzhi_edge_camera_findings_total", "Violations raised / cleared",
    ["camera", "violation", "state"])
REVIEW_KEPT = Counter(
    "ganzhi_edge_review_kept_total", "Frames kept in the review queue for labelling",
    ["camera", "reason"])
REVIEW_FAILED = Counter(
    "ganzhi_edge_review_failed_total", "Frames the review queue could not keep (disk)",
    ["camera"])
CAMERA_RECONNECTS = Counter(
    "ganzhi_edge_camera_reconnects_total", "Stream (re)open attempts after a failure",
    ["camera"])
CAMERA_INFER_SECONDS = Histogram(
    "ganzhi_edge_camera_inference_seconds", "Detector time per frame", ["camera"],
    buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0))
