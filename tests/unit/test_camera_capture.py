"""Capture: sampling a video file at a set rate, and reopening a source that is not there."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import cv2
import numpy as np

from edge import metrics
from edge.camera.capture import VideoSource
from ganzhi.failures import RetryPolicy


def write_video(path: Path, seconds: float, fps: int = 20) -> None:
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (64, 48))
    for i in range(int(seconds * fps)):
        out.write(np.full((48, 64, 3), i % 255, np.uint8))
    out.release()


def test_file_is_sampled_at_the_configured_rate_and_ends(tmp_path: Path) -> None:
    video = tmp_path / "v.avi"
    write_video(video, 3.0)
    src = VideoSource("cam-t", str(video), fps=5)
    stop = threading.Event()
    frames = []
    while (f := src.read(stop)) is not None:
        frames.append(f)
    assert src.ended and 14 <= len(frames) <= 16  # 3 s at 5 fps
    gaps = np.diff([f.t for f in frames])
    assert all(abs(g - 0.2) < 0.06 for g in gaps)
    assert all(b.ts > a.ts for a, b in itertools.pairwise(frames))


def test_missing_stream_is_retried_with_backoff_then_read(tmp_path: Path) -> None:
    target = tmp_path / "late.avi"  # not there yet: handled as a live source that is down
    src = VideoSource("cam-r", str(target), fps=5, backoff=RetryPolicy(base_s=0.01, max_s=0.02))
    before = metrics.CAMERA_RECONNECTS.labels(camera="cam-r")._value.get()
    stop = threading.Event()
    assert src.read(stop) is None and src.read(stop) is None and not src.ended
    assert metrics.CAMERA_RECONNECTS.labels(camera="cam-r")._value.get() - before == 2
    write_video(target, 1.0)
    frame = src.read(stop)
    assert frame is not None and frame.image.shape == (48, 64, 3)
