"""Frames from a camera: RTSP/HTTP URL, video file or device, sampled at a set rate.

``read()`` blocks (OpenCV); the agent calls it from a thread. A live stream that drops
is reopened with full-jitter backoff; a file ends (or loops). Timestamps: a file's
frames are placed at ``started + media position`` (so a recording replays in real event
time), a live stream's at the wall clock when read.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from edge import metrics
from ganzhi.failures import RetryPolicy
from ganzhi.observability import get_logger

log = get_logger("edge.camera")


@dataclass(frozen=True)
class Frame:
    t: float  # seconds, monotonic per camera (media time for files)
    ts: datetime
    image: NDArray[np.uint8]


class VideoSource:
    def __init__(self, camera: str, source: str, fps: float, *, loop: bool = False,
                 realtime: bool = False, backoff: RetryPolicy | None = None) -> None:
        self.camera, self.source, self.fps, self.loop = camera, source, fps, loop
        self.realtime = realtime  # a file: play at its own speed, not as fast as it decodes
        self.backoff = backoff or RetryPolicy(base_s=1.0, max_s=60.0)
        self.is_file = Path(source).is_file()
        self._cap: cv2.VideoCapture | None = None
        self._next_due = 0.0
        self._attempt = 0
        self._started = datetime.now(UTC)
        self._t0 = time.monotonic()
        self._offset = 0.0  # media time carried over loops
        self.ended = False

    def _open(self) -> bool:
        target: str | int = int(self.source) if self.source.isdigit() else self.source
        cap = cv2.VideoCapture(target)
        if not cap.isOpened():
            cap.release()
            return False
        self._cap = cap
        return True

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def _reconnect(self, stop: threading.Event) -> None:
        self.close()
        metrics.CAMERA_RECONNECTS.labels(camera=self.camera).inc()
        delay = self.backoff.delay(self._attempt + 1)
        self._attempt += 1
        log.warning("camera_reconnect", camera=self.camera, attempt=self._attempt,
                    retry_in_s=round(delay, 2))
        stop.wait(delay)

    def read(self, stop: threading.Event) -> Frame | None:
        """The next frame due at ``fps``; None when stopped, ended, or (live) unavailable
        for now (the caller ticks camera health and calls again)."""
        while not stop.is_set() and not self.ended:
            if self._cap is None and not self._open():
                if self.is_file:
                    self.ended = True
                    return None
                self._reconnect(stop)
                return None
            assert self._cap is not None
            ok, image = self._cap.read()
            if not ok:
                if self.is_file:
                    if self.loop:
                        self._offset = self._next_due
                        self.close()
                        continue
                    self.ended = True
                    return None
                self._reconnect(stop)
                return None
            self._attempt = 0
            if self.is_file:
                t = self._offset + self._cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
                ts = self._started + timedelta(seconds=t)
            else:
                t = time.monotonic() - self._t0
                ts = datetime.now(UTC)
            if t + 1e-6 < self._next_due:
                continue  # between samples
            self._next_due = max(self._next_due + 1.0 / self.fps, t)
            if self.is_file and self.realtime:
                ahead = t - (time.monotonic() - self._t0)
                if ahead > 0 and stop.wait(ahead):
                    return None
            return Frame(t, ts, np.asarray(image, dtype=np.uint8))
        return None
