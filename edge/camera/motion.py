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


class MotionGate:
    def __init__(self, params: MotionParams | None = None) -> None:
        self.p = params or MotionParams()
        self._bg: NDArray[np.float32] | None = None
        self._last_run: float | None = None
        self.changed = 0.0

    def _grey(self, frame: NDArray[np.uint8]) -> NDArray[np.float32]:
        h, w = frame.shape[:2]
        small = cv2.resize(frame, (self.p.width, max(1, round(h * self.p.width / w))),
                           interpolation=cv2.INTER_AREA)
        grey = cv2.GaussianBlur(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY), (5, 5), 0)
        return np.asarray(grey, dtype=np.float32)

    def should_detect(self, t: float, frame: NDArray[np.uint8]) -> bool:
        grey = self._grey(frame)
        if self._bg is None or self._bg.shape != grey.shape:
            self._bg = grey
            moved = True
        else:
            diff = np.abs(grey - self._bg) > self.p.pixel_threshold
            self.changed = float(diff.mean())
            moved = self.changed >= self.p.min_changed
            cv2.accumulateWeighted(grey, self._bg, self.p.background_rate)
        due = self._last_run is None or t - self._last_run >= self.p.max_interval_s
        if moved or due:
            self._last_run = t
            return True
        return False
