"""Frames to the detector's input: letterbox (keep aspect, pad), batch, and back."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

PAD_VALUE = 114  # ultralytics' letterbox grey

Image = NDArray[np.uint8]


@dataclass(frozen=True)
class Letterbox:
    """How a frame was fitted into the square input: scale, then padding."""

    scale: float
    pad_x: float
    pad_y: float
    width: int  # of the original frame
    height: int

    def to_frame(self, xyxy: NDArray[np.float32]) -> NDArray[np.float32]:
        """Boxes (n, 4) in input pixels -> original frame pixels, clipped to the frame."""
        out = xyxy.copy()
        out[:, [0, 2]] = (out[:, [0, 2]] - self.pad_x) / self.scale
        out[:, [1, 3]] = (out[:, [1, 3]] - self.pad_y) / self.scale
        out[:, [0, 2]] = out[:, [0, 2]].clip(0, self.width)
        out[:, [1, 3]] = out[:, [1, 3]].clip(0, self.height)
        return out


def letterbox(frame: Image, size: int) -> tuple[Image, Letterbox]:
    """Resize ``frame`` (BGR, HxWx3) to fit ``size`` x ``size``, centred, grey padding."""
    h, w = frame.shape[:2]
    scale = min(size / h, size / w)
    nw, nh = round(w * scale), round(h * scale)
    resized = frame if (nw, nh) == (w, h) else cv2.resize(
        frame, (nw, nh), interpolation=cv2.INTER_LINEAR)
    pad_x, pad_y = (size - nw) / 2, (size - nh) / 2
    top, left = round(pad_y - 0.1), round(pad_x - 0.1)
    out = cv2.copyMakeBorder(resized, top, size - nh - top, left, size - nw - left,
                             cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)
    return np.asarray(out, dtype=np.uint8), Letterbox(scale, float(left), float(top), w, h)


def to_batch(frames: Sequence[Image], size: int
             ) -> tuple[NDArray[np.float32], list[Letterbox]]:
    """BGR frames -> (N, 3, size, size) float32 RGB in [0, 1], with each frame's fit."""
    boxes: list[Letterbox] = []
    batch = np.empty((len(frames), 3, size, size), dtype=np.float32)
    for i, frame in enumerate(frames):
        img, lb = letterbox(frame, size)
        batch[i] = img[:, :, ::-1].transpose(2, 0, 1) / np.float32(255.0)
        boxes.append(lb)
    return batch, boxes
