"""Motion gating: run the detector only when something in the picture moves.

Frames are shrunk to ``width`` pixels, greyed and blurred; the share of pixels that
differ from a slowly updated background by more than ``pixel_threshold`` decides. Even a
still scene is inspected every ``max_interval_s`` (a violation that does not move, such
as a bare head at a work station, is still seen), as Frigate does with its motion boxes.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class MotionParams:
    width: int = 160
    pixel_threshold: int = 25
    min_changed: float = 0.003  # share of pixels
    background_rate: float = 0.05
    max_interval_s: float = 10.0
    min_blob: int = 4  # changed pixels (at ``width``) for a blob to count in the region


class MotionGate:
    def __init__(self, params: MotionParams | None = None) -> None:
        self.p = params or MotionParams()
        self._bg: NDArray[np.float32] | None = None
        self._last_run: float | None = None
        self.changed = 0.0
        self.region: tuple[int, int, int, int] | None = None  # frame pixels, last observe()

    def _grey(self, frame: NDArray[np.uint8]) -> NDArray[np.float32]:
        h, w = frame.shape[:2]
        small = cv2.resize(frame, (self.p.width, max(1, round(h * self.p.width / w))),
                           interpolation=cv2.INTER_AREA)
        grey = cv2.GaussianBlur(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY), (5, 5), 0)
        return np.asarray(grey, dtype=np.float32)

    def observe(self, frame: NDArray[np.uint8]) -> bool:
        """Did the picture move since the background? Sets ``changed`` (share of pixels)
        and ``region``: the box around the moving blobs, in the frame's pixels."""
        grey = self._grey(frame)
        self.region = None
        if self._bg is None or self._bg.shape != grey.shape:
            self._bg = grey
            return True
        diff = np.abs(grey - self._bg) > self.p.pixel_threshold
        self.changed = float(diff.mean())
        cv2.accumulateWeighted(grey, self._bg, self.p.background_rate)
        moved = self.changed >= self.p.min_changed
        if moved:
            self.region = self._region(diff, frame.shape[1], frame.shape[0])
        return moved

    def _region(self, diff: NDArray[np.bool_], width: int, height: int
                ) -> tuple[int, int, int, int] | None:
        _n, _, stats, _ = cv2.connectedComponentsWithStats(diff.astype(np.uint8), connectivity=8)
        blobs = stats[1:][stats[1:, cv2.CC_STAT_AREA] >= self.p.min_blob]
        if not len(blobs):
            return None
        x1 = int(blobs[:, cv2.CC_STAT_LEFT].min())
        y1 = int(blobs[:, cv2.CC_STAT_TOP].min())
        x2 = int((blobs[:, cv2.CC_STAT_LEFT] + blobs[:, cv2.CC_STAT_WIDTH]).max())
        y2 = int((blobs[:, cv2.CC_STAT_TOP] + blobs[:, cv2.CC_STAT_HEIGHT]).max())
        sx, sy = width / diff.shape[1], height / diff.shape[0]
        return (max(0, int(x1 * sx) - 1), max(0, int(y1 * sy) - 1),
                min(width, int(np.ceil(x2 * sx)) + 1), min(height, int(np.ceil(y2 * sy)) + 1))

    def should_detect(self, t: float, frame: NDArray[np.uint8]) -> bool:
        moved = self.observe(frame)
        due = self._last_run is None or t - self._last_run >= self.p.max_interval_s
        if moved or due:
            self._last_run = t
            return True
        return False
