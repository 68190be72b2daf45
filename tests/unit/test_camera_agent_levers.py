"""The camera agent with its cheap settings (1 detection/s while idle, full rate while a
violation is pending, motion crops, rectangular input, the INT8 model) still raises the
violation on a short generated clip: a kitchen with a bare-headed worker in a T-shirt (a
PPE validation image) walking in and standing at the counter; and it runs the detector
on far fewer frames than the motion gate of before."""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.camera.capture import VideoSource
from edge.camera.worker import CameraWorker, load_detector
from edge.config import CameraConfig, ConfirmConfig, DetectConfig
from edge.spool import Spool

ROOT = Path(__file__).resolve().parents[2]
VAL = ROOT.parent / "shared" / "datasets" / "ppe-helmet-uniform" / "images" / "val"
PERSON = VAL / "000368.jpg"  # no_helmet and no_wear boxes
W, H, FPS = 640, 360, 5

pytestmark = pytest.mark.skipif(not PERSON.is_file(), reason="needs ../shared/datasets")


def make_clip(path: Path, seconds: float = 24) -> None:
    person = cv2.imread(str(PERSON))
    ph = 240
    person = cv2.resize(person, (round(person.shape[1] * ph / person.shape[0]), ph))
    pw = person.shape[1]
    ramp = np.tile(np.linspace(80, 200, W, dtype=np.uint8), (H, 1))
    base = np.asarray(cv2.merge([ramp, ramp, ramp]), np.uint8)
    cv2.rectangle(base, (0, 250), (W, 300), (70, 70, 75), -1)
    out = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), FPS, (W, H))
    rng = np.random.default_rng(0)
    for i in range(int(seconds * FPS)):
        t, frame = i / FPS, base.copy()
        if t >= 3:  # walks in over 4 s, then stands at the counter
            x = int(-pw + min(1.0, (t - 3) / 4) * (pw + 150)) + int(rng.integers(-2, 3))
            x1, x2 = max(0, x), min(W, x + pw)
            if x2 > x1:
                frame[50:50 + ph, x1:x2] = person[:, x1 - x:x2 - x]
        noise = rng.normal(0, 2.0, frame.shape)
        out.write(np.clip(frame + noise, 0, 255).astype(np.uint8))
    out.release()


def run_agent(tmp_path: Path, clip: Path, detect: DetectConfig) -> CameraWorker:
    cfg = CameraConfig(device_id="cam-test", source=str(clip), fps=FPS, realtime=False,
                       model_dir=ROOT / "models" / "ppe", confirm=ConfirmConfig(),
                       detect=detect)
    det, violations = load_detector(cfg)
    worker = CameraWorker("site-test", cfg, Spool(tmp_path / f"{id(detect)}.db"), det,
                          violations, VideoSource(cfg.device_id, str(clip), FPS))
    worker.run(threading.Event())
    return worker


def test_violation_still_raised_with_the_cheap_settings(tmp_path: Path) -> None:
    clip = tmp_path / "kitchen.avi"
    make_clip(clip)
    cheap = run_agent(tmp_path, clip, DetectConfig(idle_fps=1, pending_fps=5, crops=True,
                                                   rect=True, precision="int8"))
    raised = {v for v, state in cheap.counters.published if state == "raised"}
    assert {"no_chef_hat", "no_work_clothes"} <= raised
    before = run_agent(tmp_path, clip, DetectConfig(idle_fps=5, pending_fps=0, crops=False,
                                                    rect=False, precision="fp32"))
    assert {v for v, s in before.counters.published if s == "raised"} == raised
    assert cheap.counters.frames == before.counters.frames == 120
    # before: every frame with motion; cheap: 1/s until the first hit, then 5/s to confirm
    assert cheap.counters.inferences <= before.counters.inferences
    assert cheap.counters.crops >= 1
