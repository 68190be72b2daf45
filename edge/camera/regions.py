"""Which detections count: regions of interest and a minimum object size per camera."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from ganzhi.contracts import BoundingBox

Polygon = Sequence[tuple[float, float]]  # normalised 0-1 (x, y)


@dataclass(frozen=True)
class RegionFilter:
    rois: Sequence[Polygon] = ()  # empty: the whole frame
    min_height: float = 0.0  # share of the frame height

    def keep(self, box: BoundingBox, width: int, height: int) -> bool:
        if (box.y2 - box.y1) < self.min_height * height:
            return False
        if not self.rois:
            return True
        # The centre of the box: a head or torso box sits inside the work area.
        cx, cy = (box.x1 + box.x2) / 2 / width, (box.y1 + box.y2) / 2 / height
        return any(cv2.pointPolygonTest(np.asarray(roi, np.float32), (cx, cy), False) >= 0
                   for roi in self.rois)

    def apply(self, boxes: Sequence[BoundingBox], width: int, height: int
              ) -> list[BoundingBox]:
        return [b for b in boxes if self.keep(b, width, height)]
