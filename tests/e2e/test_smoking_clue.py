"""The ``smoking`` violation end to end, with the shipped prototype model
(``models/smoking``): a video made from the smoking dataset's validation images (a
person smoking, then the empty scene) through the real camera agent, its finding through
the stream's vision rule and the alerts service's repository into an incident whose clue
is queued for the task system, with the snapshot the camera sent. The MQTT → ingest →
Kafka leg is the same for every violation and is covered by test_camera_evidence.py."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import cv2
import numpy as np
import psycopg
import pytest

from alerts.repository import apply_transition
from edge.camera.capture import VideoSource
from edge.camera.worker import CameraWorker, load_detector
from edge.config import CameraConfig, ConfirmConfig, DetectConfig, MotionConfig
from edge.spool import Spool
from ganzhi.contracts import Detection
from stream.rules import vision

from alerting import incidents, policy

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "smoking"
VAL = ROOT.parent / "shared" / "datasets" / "smoking-cigarette" / "images" / "val"
SMOKER = VAL / "7d30fba57f38d483.jpg"  # chosen where the shipped model sees the cigarette clearly

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not SMOKER.is_file() or not (MODEL / "card.yaml").is_file(),
                                 reason="needs ../shared/datasets and models/smoking")]


def make_video(path: Path, fps: int = 5) -> None:
    smoker = cv2.resize(cv2.imread(str(SMOKER)), (416, 416))
    empty = np.full_like(smoker, 128)
    empty[300:] = (80, 90, 90)  # a counter, nobody there
    out = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (416, 416))
    rng = np.random.default_rng(0)
    for img in (smoker, empty):
        for _ in range(fps * 6):
            out.write(np.clip(img + rng.normal(0, 2, img.shape), 0, 255).astype(np.uint8))
    out.release()


def test_a_smoker_on_camera_becomes_a_smoking_clue(tmp_path: Path, pg_dsn: str) -> None:
    clip = tmp_path / "kitchen.avi"
    make_video(clip)
    cfg = CameraConfig(
        device_id="cam-1", source=str(clip), fps=5, realtime=False, model_dir=MODEL,
        confirm=ConfirmConfig(window_s=2, raise_ratio=0.6, confirm_s=1, clear_ratio=0.1,
                              clear_s=1, cooldown_s=60),
        detect=DetectConfig(idle_fps=5, pending_fps=5, crops=False),
        motion=MotionConfig(max_interval_s=0.2))
    det, violations = load_detector(cfg)
    assert violations == {"cigarette": "smoking"}
    spool = Spool(tmp_path / "spool.db")
    CameraWorker("site-k", cfg, spool, det, violations,
                 VideoSource(cfg.device_id, str(clip), 5)).run(threading.Event())
    found = [Detection.model_validate_json(m.payload) for m in
             spool.pending("cam-1", limit=1000) if b'"kind":"detection"' in m.payload]
    assert [(d.violation, d.state) for d in found] == [("smoking", "raised"),
                                                        ("smoking", "cleared")]
    assert found[0].model == f"smoking@{det.card.version}"  # type: ignore[attr-defined]
    asyncio.run(_alert(pg_dsn, found))
    ((_, family, status, _notify, _held, _sev, n_alerts),) = incidents(pg_dsn)
    assert (family, status, n_alerts) == ("vision.smoking", "resolved", 1)
    with psycopg.connect(pg_dsn) as conn:
        payloads = [r[0] for r in conn.execute(
            "SELECT payload FROM clue_outbox ORDER BY id").fetchall()]
    assert payloads, "no clue queued for the task system"
    text = json.dumps(payloads)
    assert "vision.smoking" in text and found[0].snapshot_sha256 in text


async def _alert(dsn: str, found: list[Detection]) -> None:
    state = vision.VisionState()
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        for d in found:
            state, transitions = vision.step(state, d.site_id, d.device_id, vision.Finding(
                d.violation, d.state, d.ts, d.score, d.boxes, d.snapshot_sha256, d.model))
            for t in transitions:
                await apply_transition(conn, t, policy())
