"""The labelling loop end to end, without real footage: a new scenario (a waste bin with
its lid off, ``uncovered_bin``) taught from frames a camera kept.

Generated kitchen scenes go into a camera's review queue; the export hands them to the
"labeller" (this test, which knows where it drew each bin); the labels come back in,
a model is trained for a few epochs on CPU with the site's data, the promotion gate
compares it on the site's held-out frames (and refuses a worse retrain), the model
rolls out to a box's models folder, and the camera agent, loading it from there, raises
``uncovered_bin`` on a video where a bin's lid comes off, naming the model version.

Needs the ``train`` extra (ultralytics, torch): ``pip install -e '.[train]'``, then
``pytest tests/e2e/test_labelling_loop.py`` (about 3 minutes on 2 cores). ``./dev test``
does not install it, so CI skips this test; its last run is in docs/vision.md.
"""

from __future__ import annotations

import importlib.util
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from synthetic_bins import CLASSES, scene, video, yolo_label

from edge.camera.capture import VideoSource
from edge.camera.review import ReviewParams, ReviewQueue
from edge.camera.worker import CameraWorker, load_detector
from edge.config import CameraConfig, ConfirmConfig, DetectConfig
from edge.spool import Spool
from ganzhi.contracts import BoundingBox, Detection
from vision import labelling, promote, rollout
from vision import train as vision_train
from vision.card import load_card
from vision.review import read_queue

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("ultralytics") is None,
                       reason="needs the train extra (ultralytics, torch)"),
    pytest.mark.timeout(1200),
]
T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def test_a_new_scenario_from_kept_frames_to_a_raised_violation(tmp_path: Path) -> None:
    # 1. The camera kept frames (here: generated scenes, one bin each).
    queue = ReviewQueue(ReviewParams(tmp_path / "queue", min_interval_s=0, max_items=1000),
                        "cam-bins", {"bin_open"})
    truth: dict[datetime, tuple[int, tuple[int, int, int, int]]] = {}
    for seed in range(160):
        is_open = seed % 2 == 0
        img, box = scene(seed, is_open)
        ts = T0 + timedelta(seconds=seed)
        guess = BoundingBox(label="bin_open", score=0.3, x1=box[0], y1=box[1], x2=box[2],
                            y2=box[3])
        assert queue.offer(seed, img, ts, [guess], "none@0")
        truth[ts] = (0 if is_open else 1, box)

    # 2. Export for the labelling tool; the labeller corrects every frame's label.
    exported = tmp_path / "to-label"
    items = labelling.select(read_queue(tmp_path / "queue"), set())
    assert labelling.export_yolo(items, CLASSES, exported) == 160
    for item in items:
        cls, box = truth[item.ts]
        (exported / "labels" / f"{item.id}.txt").write_text(yolo_label(box, cls) + "\n")

    # 3. Back into the site dataset.
    site = tmp_path / "site"
    report = labelling.import_yolo(exported, site)
    assert (report.images, report.boxes) == (160, 160)

    # 4. Train with the site's data; the gate (no model yet) installs it.
    models = tmp_path / "models" / "bins"
    common = ["--site-data", str(site), "--name", "bins", "--out", str(models),
              "--imgsz", "256", "--batch", "16", "--workers", "0",
              "--violations", "bin_open=uncovered_bin"]
    assert vision_train.main([*common, "--epochs", "30", "--version", "2026.12.01",
                              "--work", str(tmp_path / "work1")]) == 0
    card = load_card(models)
    assert card.version == "2026.12.01" and card.promotion is not None
    site_figures = card.promotion.sets[0]
    assert site_figures.name == "site" and site_figures.candidate.map50 >= 0.5, site_figures

    # 5. A worse retrain (one epoch) is refused; the installed model is unchanged.
    assert vision_train.main([*common, "--epochs", "1", "--version", "2026.12.02",
                              "--work", str(tmp_path / "work2")]) == 3
    assert load_card(models).version == "2026.12.01"

    # 6. Out to a box, and the camera agent raises the new violation on a video.
    box_models = tmp_path / "box" / "models"
    rollout.install(models, box_models)
    clip = tmp_path / "bin.avi"
    video(clip)
    cfg = CameraConfig(
        device_id="cam-bins", source=str(clip), fps=5, realtime=False,
        model_dir=box_models / "bins" / "current",
        confirm=ConfirmConfig(window_s=3, raise_ratio=0.6, confirm_s=2),
        detect=DetectConfig(idle_fps=5, pending_fps=5, crops=False))
    det, violations = load_detector(cfg)
    assert violations == {"bin_open": "uncovered_bin"}
    spool = Spool(tmp_path / "spool.db")
    worker = CameraWorker("site-1", cfg, spool, det, violations,
                          VideoSource(cfg.device_id, str(clip), 5))
    worker.run(threading.Event())
    found = [Detection.model_validate_json(m.payload) for m in
             spool.pending("cam-bins", limit=1000) if b'"kind":"detection"' in m.payload]
    raised = [d for d in found if d.state == "raised"]
    assert [d.violation for d in raised] == ["uncovered_bin"], found
    assert raised[0].model == "bins@2026.12.01"
    assert worker.counters.published[0] == ("uncovered_bin", "raised")
    assert promote.verdict([site_figures])[0]
