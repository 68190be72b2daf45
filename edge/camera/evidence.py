"""Evidence snapshots: the frame with its boxes, labels, time and camera, as a JPEG."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime

import cv2
import numpy as np
from numpy.typing import NDArray

from ganzhi.contracts import BoundingBox

RED, GREEN, WHITE, BLACK = (0, 0, 255), (0, 170, 0), (255, 255, 255), (0, 0, 0)


def annotate(frame: NDArray[np.uint8], boxes: Sequence[BoundingBox], violating: set[str],
             camera: str, ts: datetime, title: str) -> NDArray[np.uint8]:
    img = frame.copy()
    scale = max(0.4, img.shape[0] / 900)
    for b in boxes:
        color = RED if b.label in violating else GREEN
        p1, p2 = (int(b.x1), int(b.y1)), (int(b.x2), int(b.y2))
        cv2.rectangle(img, p1, p2, color, max(1, int(2 * scale)))
        text = f"{b.label} {b.score:.2f}"
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale * 0.6, 1)
        cv2.rectangle(img, (p1[0], p1[1] - th - 4), (p1[0] + tw + 2, p1[1]), color, -1)
        cv2.putText(img, text, (p1[0] + 1, p1[1] - 3), cv2.FONT_HERSHEY_SIMPLEX,
                    scale * 0.6, WHITE, 1, cv2.LINE_AA)
    stamp = f"{camera}  {ts.isoformat(timespec='seconds')}  {title}"
    (tw, th), _ = cv2.getTextSize(stamp, cv2.FONT_HERSHEY_SIMPLEX, scale * 0.6, 1)
    cv2.rectangle(img, (0, 0), (tw + 8, th + 10), BLACK, -1)
    cv2.putText(img, stamp, (4, th + 4), cv2.FONT_HERSHEY_SIMPLEX, scale * 0.6, WHITE, 1,
                cv2.LINE_AA)
    return img


def encode_jpeg(img: NDArray[np.uint8], quality: int = 85) -> tuple[bytes, str]:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    data = buf.tobytes()
    return data, hashlib.sha256(data).hexdigest()
