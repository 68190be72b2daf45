"""The Faust application and its topics, built from settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faust

from ganzhi.contracts import KafkaTopic
from ganzhi.kafka import faust_credentials
from ganzhi.settings import Settings

FAUST_ENV_PREFIX = "GANZHI_FAUST_"


@dataclass(frozen=True)
class StreamApp:
    app: Any  # faust.App (untyped library)
    telemetry: Any  # faust topic
    status: Any  # faust topic (device births and last wills)
    detections: Any  # faust topic (camera findings)
    transitions: Any  # faust topic
    dead_letters: Any  # faust topic (records refused for good)
    events: Any  # faust topic (device events: alarm button, power, source errors)


def broker_urls(bootstrap: str) -> list[str]:
    return [f"kafka://{host.strip()}" for host in bootstrap.split(",") if host.strip()]


def build_app(settings: Settings) -> StreamApp:
    s, k = settings.stream, settings.kafka
    app = faust.App(
        s.app_id,
        # Any Faust setting can be tuned without code: GANZHI_FAUST_<SETTING>, e.g.
        # GANZHI_FAUST_BROKER_SESSION_TIMEOUT=10 (environment wins over these arguments).
        env_prefix=FAUST_ENV_PREFIX,
        broker=broker_urls(k.bootstrap),
        store="memory://",  # no Faust tables: rule state is checkpointed to PostgreSQL
        # Tansu cannot run idempotent/transactional producers: at-least-once plus
        # idempotent sinks and deterministic transition ids.
        processing_guarantee="at_least_once",
        producer_max_batch_size=k.producer_max_batch_size,
        producer_linger=k.linger_ms / 1000,
        topic_partitions=k.partitions,
        topic_replication_factor=k.replication_factor,
        broker_credentials=faust_credentials(k),
        datadir=str(s.data_dir),
        web_port=s.web_port,
        web_bind="127.0.0.1",
        web_host="127.0.0.1",
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=k.group_session_timeout_s,
        broker_heartbeat_interval=k.group_heartbeat_s,
        broker_rebalance_timeout=k.group_rebalance_timeout_s,
        autodiscover=False,
        table_standby_replicas=0,
    )
    raw: dict[str, Any] = {"key_type": bytes, "value_type": bytes,
                           "key_serializer": "raw", "value_serializer": "raw"}
    telemetry = app.topic(KafkaTopic.TELEMETRY.value, partitions=k.partitions, **raw)
    status = app.topic(KafkaTopic.STATUS.value, partitions=k.partitions, **raw)
    detections = app.topic(KafkaTopic.DETECTION.value, partitions=k.partitions, **raw)
    events = app.topic(KafkaTopic.EVENT.value, partitions=k.partitions, **raw)
    transitions = app.topic(KafkaTopic.ALERT_TRANSITIONS.value, partitions=k.partitions, **raw)
    dead_letters = app.topic(KafkaTopic.DEAD_LETTER.value, partitions=k.partitions, **raw)
    return StreamApp(app, telemetry, status, detections, transitions, dead_letters, events)
