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


STRIDE = 32  # YOLOv8's largest stride: input sides are multiples of it


def _ceil(n: int, stride: int = STRIDE) -> int:
    return -(-n // stride) * stride


def fitted(width: int, height: int, size: int, *, upscale: bool = True
           ) -> tuple[int, int, float]:
    """(width, height, scale) of the frame scaled to fit ``size`` x ``size`` (aspect
    kept); with ``upscale=False`` a smaller frame (a motion crop) keeps its own pixels."""
    scale = min(size / height, size / width)
    if not upscale:
        scale = min(scale, 1.0)
    return max(1, round(width * scale)), max(1, round(height * scale)), scale


def canvas_for(sizes: Sequence[tuple[int, int]], size: int, *, rect: bool
               ) -> tuple[int, int]:
    """The input's (width, height): ``size`` square, or (``rect``) the smallest multiple
    of the stride that holds every fitted frame (a 16:9 frame at 448 runs at 448x256, not
    448x448: the model takes any size, as ultralytics validates with ``rect=True``)."""
    if not rect:
        return size, size
    return (_ceil(max(w for w, _ in sizes)), _ceil(max(h for _, h in sizes)))


def letterbox(frame: Image, size: int, *, canvas: tuple[int, int] | None = None,
              upscale: bool = True) -> tuple[Image, Letterbox]:
    """Resize ``frame`` (BGR, HxWx3) to fit ``size`` x ``size``, centred on a grey
    ``canvas`` (width, height; default ``size`` x ``size``)."""
    h, w = frame.shape[:2]
    nw, nh, scale = fitted(w, h, size, upscale=upscale)
    cw, ch = canvas or (size, size)
    resized = frame if (nw, nh) == (w, h) else cv2.resize(
        frame, (nw, nh), interpolation=cv2.INTER_LINEAR)
    pad_x, pad_y = (cw - nw) / 2, (ch - nh) / 2
    top, left = round(pad_y - 0.1), round(pad_x - 0.1)
    out = cv2.copyMakeBorder(resized, top, ch - nh - top, left, cw - nw - left,
                             cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)
    return np.asarray(out, dtype=np.uint8), Letterbox(scale, float(left), float(top), w, h)


def to_batch(frames: Sequence[Image], size: int, *, rect: bool = False,
             upscale: bool = True) -> tuple[NDArray[np.float32], list[Letterbox]]:
    """BGR frames -> (N, 3, H, W) float32 RGB in [0, 1], with each frame's fit. H = W =
    ``size`` unless ``rect`` (see :func:`canvas_for`)."""
    sizes = [fitted(f.shape[1], f.shape[0], size, upscale=upscale)[:2] for f in frames]
    cw, ch = canvas_for(sizes, size, rect=rect) if frames else (size, size)
    boxes: list[Letterbox] = []
    batch = np.empty((len(frames), 3, ch, cw), dtype=np.float32)
    for i, frame in enumerate(frames):
        img, lb = letterbox(frame, size, canvas=(cw, ch), upscale=upscale)
        batch[i] = img[:, :, ::-1].transpose(2, 0, 1) / np.float32(255.0)
        boxes.append(lb)
    return batch, boxes
