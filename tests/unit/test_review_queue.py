"""The camera's review queue (frames kept for labelling): which frames, how many, and
that the camera agent keeps them while it works; no model file or dataset needed."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from edge.camera.capture import Frame
from edge.camera.review import ReviewParams, ReviewQueue
from edge.camera.worker import CameraWorker
from edge.config import CameraConfig, ConfirmConfig, DetectConfig, ReviewConfig
from edge.spool import Spool
from ganzhi.contracts import BoundingBox
from vision.review import read_queue

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def box(label: str, score: float) -> BoundingBox:
    return BoundingBox(label=label, score=score, x1=10, y1=20, x2=60, y2=90)


def image(value: int = 0) -> NDArray[np.uint8]:
    img = np.full((120, 160, 3), 90, np.uint8)
    img[10:30, 10:30] = value
    return img


def queue(root: Path, **kw: float) -> ReviewQueue:
    return ReviewQueue(ReviewParams(root, **kw), "cam-1", {"no_mask"})  # type: ignore[arg-type]


def test_only_uncertain_frames_of_watched_classes_are_kept(tmp_path: Path) -> None:
    q = queue(tmp_path, min_interval_s=0)
    assert not q.offer(0, image(), T0, [box("no_mask", 0.9)], "mask@1")  # sure
    assert not q.offer(1, image(), T0, [box("no_mask", 0.1)], "mask@1")  # below the band
    assert not q.offer(2, image(), T0, [box("mask", 0.3)], "mask@1")  # not acted on
    assert q.offer(3, image(), T0, [box("mask", 0.9), box("no_mask", 0.3)], "mask@1")
    (item,) = read_queue(tmp_path)
    assert (item.reason, item.camera, item.model, item.ts) == ("uncertain", "cam-1",
                                                               "mask@1", T0)
    assert (item.width, item.height) == (160, 120)
    assert [b.label for b in item.boxes] == ["mask", "no_mask"]  # pre-annotations
    assert item.image.is_file() and item.snapshot_sha256 is None


def test_uncertain_frames_are_rate_limited_and_the_queue_bounded(tmp_path: Path) -> None:
    q = queue(tmp_path, min_interval_s=30, max_items=3)
    kept = [q.offer(t, image(), T0 + timedelta(seconds=t), [box("no_mask", 0.3)], None)
            for t in range(0, 200, 10)]
    assert kept.count(True) == 7  # one per 30 s
    items = read_queue(tmp_path)
    assert len(items) == 3 and len(list(tmp_path.glob("*.jpg"))) == 3  # oldest dropped
    assert [i.ts for i in items] == sorted(i.ts for i in items)
    assert items[-1].ts == T0 + timedelta(seconds=180)


def test_a_damaged_item_is_skipped_and_a_full_disk_does_not_stop_the_camera(
        tmp_path: Path) -> None:
    q = queue(tmp_path, min_interval_s=0)
    q.finding(image(), T0, [box("no_mask", 0.8)], "mask@1", "ab" * 32)
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "orphan.json").write_text(json.dumps({"camera": "c"}))
    (item,) = read_queue(tmp_path)
    assert item.reason == "finding" and item.snapshot_sha256 == "ab" * 32
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("")
    q2 = queue(blocked, min_interval_s=0)
    assert not q2.offer(0, image(), T0, [box("no_mask", 0.3)], None)
    assert q2.failed == 1


class Scripted:
    """A detector that answers from a script: frame n -> its boxes."""

    card = None
    score_threshold = 0.25

    def __init__(self, script: Sequence[list[BoundingBox]]) -> None:
        self.script, self.n = list(script), 0

    def detect(self, frames: Sequence[NDArray[np.uint8]], *, upscale: bool = True
               ) -> list[list[BoundingBox]]:
        out = self.script[min(self.n, len(self.script) - 1)]
        self.n += 1
        return [out for _ in frames]


def test_the_camera_keeps_uncertain_frames_and_the_frames_of_its_findings(
        tmp_path: Path) -> None:
    cfg = CameraConfig(
        device_id="cam-1", source="unused.mp4", fps=5, model_dir=tmp_path,
        confirm=ConfirmConfig(window_s=2, raise_ratio=0.5, confirm_s=0.5, clear_s=1,
                              cooldown_s=0),
        detect=DetectConfig(idle_fps=5, pending_fps=5, crops=False),
        review=ReviewConfig(dir=tmp_path / "review", min_interval_s=1))
    script = [[box("no_mask", 0.3)]] * 10 + [[box("no_mask", 0.9)]] * 15
    spool = Spool(tmp_path / "spool.db")
    worker = CameraWorker("site-1", cfg, spool, Scripted(script), {"no_mask": "no_mask"},
                          source=object())  # type: ignore[arg-type]
    for n in range(25):
        img = image(value=(n * 37) % 255)  # the scene changes: every frame is detected on
        worker.process(Frame(n / 5, T0 + timedelta(seconds=n / 5), img))
    items = read_queue(tmp_path / "review")
    uncertain = [i for i in items if i.reason == "uncertain"]
    findings = [i for i in items if i.reason == "finding"]
    # Uncertain answers for the first 10 detections (over 2 s or more): one kept per second.
    times = [i.ts for i in uncertain]
    assert len(times) >= 2
    assert all(b - a >= timedelta(seconds=1) for a, b in itertools.pairwise(times))
    assert worker.counters.published == [("no_mask", "raised")]
    (finding,) = findings
    sent = [json.loads(m.payload) for m in spool.pending("cam-1", limit=100)]
    detection = next(m for m in sent if m.get("kind") == "detection")
    assert finding.snapshot_sha256 == detection["snapshot_sha256"]
