"""A video file through the camera agent, the broker, ingest and the API.

The video is made in the test from validation images of the mask dataset: five seconds
of faces without masks, then five of masked faces. The shipped mask model runs on it in
the real agent (spool, per-device MQTT connection), ingest verifies and stores each
snapshot and puts a reference on Kafka, and the API serves the file: one ``no_mask``
raised and then cleared, each with evidence whose SHA-256 matches what is served to a
caller who may see the alert that names it (the stream and alerts services, not run
here, would make that alert: the test applies the stream rule's transitions itself).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer
from psycopg import AsyncConnection
from pydantic import SecretStr

from alerts.repository import apply_transition
from edge.agent import run_agent
from edge.config import AgentConfig
from ganzhi import apikeys
from ganzhi.contracts import (
    Channel,
    Detection,
    Evidence,
    EvidenceRef,
    KafkaTopic,
    mqtt_topic,
    new_id,
    utcnow,
)
from ganzhi.kafka import ensure_topics
from ganzhi.settings import (
    AuthSettings,
    DatabaseSettings,
    EvidenceSettings,
    IngestSettings,
    KafkaSettings,
    MqttSettings,
    Settings,
)
from ganzhi.stack.infra import Managed
from ingest.bridge import Bridge
from stream.rules import vision

from access_fixtures import JWT_SECRET, api_client
from alerting import policy
from mqtt_device import MqttDevice, service_mqtt

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
MASK_VAL = ROOT.parent / "shared" / "datasets" / "face-mask" / "images" / "val"


def make_video(path: Path, fps: int = 10) -> None:
    bare = cv2.imread(str(MASK_VAL / "maksssksksss0.jpg"))  # two faces without masks
    masked = cv2.imread(str(MASK_VAL / "maksssksksss138.jpg"))  # every face masked
    h, w = 360, 480
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    rng = np.random.default_rng(0)
    for img in (bare, masked):
        base = cv2.resize(img, (w, h))
        for _ in range(5 * fps):  # sensor noise: a live picture is never identical
            noise = rng.integers(-3, 4, base.shape, dtype=np.int16)
            out.write(np.clip(base.astype(np.int16) + noise, 0, 255).astype(np.uint8))
    out.release()


async def consume(bootstrap: str, topic: str, want: int, wait_s: float) -> list[bytes]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap,
                                auto_offset_reset="earliest", group_id=uuid.uuid4().hex[:8])
    await consumer.start()
    got: list[bytes] = []
    try:
        async with asyncio.timeout(wait_s):
            while len(got) < want:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    got.extend(r.value for r in records)
        for records in (await consumer.getmany(timeout_ms=1500)).values():
            got.extend(r.value for r in records)
    finally:
        await consumer.stop()
    return got


@pytest.fixture
async def ingest(mqtt_broker: Managed, kafka_bootstrap: str, tmp_path: Path
                 ) -> AsyncIterator[Settings]:
    settings = Settings(
        mqtt=service_mqtt(mqtt_broker.host, mqtt_broker.port),
        kafka=KafkaSettings(bootstrap=kafka_bootstrap, partitions=2),
        ingest=IngestSettings(worker_id=f"ingest-{uuid.uuid4().hex[:6]}"),
        evidence=EvidenceSettings(dir=tmp_path / "evidence"),
    )
    await ensure_topics(KafkaSettings(bootstrap=kafka_bootstrap, partitions=2))
    bridge = Bridge(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(bridge.run(stop))
    await asyncio.wait_for(bridge.wait_subscribed(), 10)
    yield settings
    stop.set()
    await asyncio.wait_for(task, 10)


async def test_video_to_one_violation_with_evidence_served_by_the_api(
        ingest: Settings, mqtt_broker: Managed, kafka_bootstrap: str, pg_dsn: str,
        tmp_path: Path) -> None:
    video = tmp_path / "kitchen.avi"
    make_video(video)
    cfg = AgentConfig.model_validate({
        "site_id": "site-k", "metrics_port": None,
        "broker": {"host": mqtt_broker.host, "port": mqtt_broker.port},
        "spool": {"path": str(tmp_path / "spool.db")},
        "cameras": [{
            "device_id": "cam-1", "source": str(video), "fps": 5, "realtime": False,
            "model_dir": str(ROOT / "models" / "mask"),
            "violations": {"no_mask": "no_mask"},
            "confirm": {"window_s": 2, "raise_ratio": 0.6, "confirm_s": 1,
                        "clear_ratio": 0.1, "clear_s": 1, "cooldown_s": 60},
            "motion": {"max_interval_s": 0.5},
        }],
    })
    stop = asyncio.Event()
    agent = asyncio.create_task(run_agent(cfg, stop))
    try:
        found = [Detection.model_validate_json(v) for v in
                 await consume(kafka_bootstrap, KafkaTopic.DETECTION, 2, 60)]
        refs = [EvidenceRef.model_validate_json(v) for v in
                await consume(kafka_bootstrap, KafkaTopic.EVIDENCE, 2, 30)]
    finally:
        stop.set()
        await asyncio.wait_for(agent, 30)

    assert [(d.violation, d.state) for d in found] == [("no_mask", "raised"),
                                                        ("no_mask", "cleared")]
    raised, cleared = found
    assert raised.boxes and all(b.label == "no_mask" for b in raised.boxes)
    assert raised.ts < cleared.ts and raised.snapshot_sha256 != cleared.snapshot_sha256
    assert {r.sha256 for r in refs} == {raised.snapshot_sha256, cleared.snapshot_sha256}

    reader, other_site = await alert_of(pg_dsn, found)
    app_settings = ingest.model_copy(update={
        "db": DatabaseSettings(dsn=SecretStr(pg_dsn), pool_min=0),
        "auth": AuthSettings(jwt_secret=SecretStr(JWT_SECRET))})
    async with api_client(app_settings, reader) as client:
        for d in found:
            r = await client.get(f"/api/v1/evidence/{d.snapshot_sha256}")
            assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
            assert r.headers["x-content-type-options"] == "nosniff"
            assert r.headers["cache-control"].startswith("private")
            assert hashlib.sha256(r.content).hexdigest() == d.snapshot_sha256
            image = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR)
            assert image.shape == (360, 480, 3)
            # A key for another site: the hash alone is no permission.
            denied = await client.get(f"/api/v1/evidence/{d.snapshot_sha256}",
                                      headers={"Authorization": f"Bearer {other_site}"})
            assert denied.status_code == 404
        missing = await client.get("/api/v1/evidence/" + "0" * 64)
        assert missing.status_code == 404 and "no evidence" in missing.json()["detail"]
        assert (await client.get("/api/v1/evidence/not-a-hash")).status_code == 422


async def alert_of(dsn: str, found: list[Detection]) -> tuple[str, str]:
    """The alert the stream and alerts services would make of the findings (raised, then
    cleared); returns an export key's token for every site and one for another site."""
    state = vision.VisionState()
    async with await AsyncConnection.connect(dsn, autocommit=True) as conn:
        for d in found:
            state, transitions = vision.step(state, d.site_id, d.device_id, vision.Finding(
                d.violation, d.state, d.ts, d.score, d.boxes, d.snapshot_sha256, d.model))
            for t in transitions:
                await apply_transition(conn, t, policy())
        _, reader = await apikeys.create(conn, "reader", ["export"])
        _, other = await apikeys.create(conn, "other-site", ["export"], ["site-elsewhere"])
    return reader, other


async def test_evidence_with_a_wrong_hash_is_dead_lettered_not_stored(
        ingest: Settings, mqtt_broker: Managed, kafka_bootstrap: str) -> None:
    jpeg = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    pub = MqttDevice(MqttSettings(host=mqtt_broker.host, port=mqtt_broker.port),
                     "site-k", "cam-2")
    assert pub.wait_connected()
    wrong = Evidence(msg_id=new_id(), site_id="site-k", device_id="cam-2", ts=utcnow(),
                     sha256="f" * 64, data_b64=base64.b64encode(jpeg).decode())
    assert await asyncio.to_thread(pub.publish, Channel.EVIDENCE, wrong)
    pub.close()
    dead = [json.loads(v) for v in await consume(kafka_bootstrap, KafkaTopic.DEAD_LETTER, 1, 30)]
    assert [d["reason"] for d in dead] == ["evidence_hash_mismatch"]
    assert dead[0]["source_topic"] == mqtt_topic("site-k", "cam-2", Channel.EVIDENCE)
    assert not list((ingest.evidence.dir).rglob("*.jpg"))
