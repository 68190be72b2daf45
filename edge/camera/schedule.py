"""When to run the detector, and on which part of the frame: pure, frame timestamps only.

The detector is the camera agent's whole cost, so it runs as seldom as recall allows:

* **idle** (motion, nothing pending): at most ``idle_fps`` (1 per second by default), on
  a crop around the motion (Frigate's motion regions) when it covers a small enough part
  of the picture, at the crop's own pixels (no upscaling, the input a multiple of 32);
* **pending** (a violation seen in the confirmation window and not yet raised): at
  ``pending_fps`` (the camera's rate), on the whole frame, motion or not: a bare head that
  stands still is confirmed as quickly as one that moves;
* **still**: once every ``max_interval_s`` on the whole frame, as before.

With ``idle_fps`` = ``pending_fps`` = the camera's fps and crops off, this is the motion
gate of before: every frame with motion reaches the detector.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Mode(StrEnum):
    SKIP = "skip"
    CROP = "crop"  # the motion region
    FULL = "full"  # the whole frame


@dataclass(frozen=True)
class ScheduleParams:
    idle_fps: float = 1.0
    pending_fps: float = 5.0  # 0: no boost while pending
    max_interval_s: float = 10.0
    crops: bool = True


class DetectionSchedule:
    def __init__(self, params: ScheduleParams | None = None) -> None:
        self.p = params or ScheduleParams()
        self._last: float | None = None

    def due(self, t: float, interval_s: float) -> bool:
        # 10 ms of slack: frames at 5 fps arrive every 0.2 s, give or take the clock.
        return self._last is None or t - self._last >= interval_s - 0.01

    def decide(self, t: float, moved: bool, pending: bool, has_region: bool = False) -> Mode:
        """One frame at ``t``: did the picture move, is a violation pending confirmation,
        is there a motion region small enough to crop."""
        pending = pending and self.p.pending_fps > 0  # 0: no boost, pending runs as idle
        if pending and self.due(t, 1.0 / self.p.pending_fps):
            mode = Mode.FULL
        elif moved and not pending and self.due(t, 1.0 / self.p.idle_fps):
            mode = Mode.CROP if self.p.crops and has_region else Mode.FULL
        elif self.due(t, self.p.max_interval_s):
            mode = Mode.FULL
        else:
            return Mode.SKIP
        self._last = t
        return mode


Box = tuple[int, int, int, int]  # x1, y1, x2, y2 in frame pixels


def crop_region(motion: Box, width: int, height: int, *, min_side: int, margin: float = 0.15,
                max_share: float = 0.6) -> Box | None:
    """The part of a ``width`` x ``height`` frame to detect on for a motion box: the box
    grown by ``margin`` of its size on each side and to at least ``min_side`` pixels each
    way (a person's head and shoulders need context), clipped to the frame. None when it
    would cover more than ``max_share`` of the frame (then the whole frame is cheaper to
    handle as one)."""
    x1, y1, x2, y2 = motion
    bw, bh = max(1, x2 - x1), max(1, y2 - y1)
    w = max(round(bw * (1 + 2 * margin)), min(min_side, width))
    h = max(round(bh * (1 + 2 * margin)), min(min_side, height))
    w, h = min(w, width), min(h, height)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    left = int(min(max(round(cx - w / 2), 0), width - w))
    top = int(min(max(round(cy - h / 2), 0), height - h))
    if w * h > max_share * width * height:
        return None
    return left, top, left + w, top + h


def to_frame(xyxy: tuple[float, float, float, float], region: Box, scale: float = 1.0
             ) -> tuple[float, float, float, float]:
    """A box found in a crop (resized by ``scale`` before detection) -> the same box in
    the whole frame's pixels."""
    x0, y0 = region[0], region[1]
    return (xyxy[0] / scale + x0, xyxy[1] / scale + y0, xyxy[2] / scale + x0,
            xyxy[3] / scale + y0)


def crop_scale(width: int, height: int, input_size: int, native: bool) -> float:
    """How a crop of a ``width`` x ``height`` frame is resized for the detector: by the
    scale the whole frame runs at (objects look the size they do in full-frame
    detections: recall as before), or (``native``) not at all, as Frigate does."""
    return 1.0 if native else min(1.0, input_size / max(width, height))
