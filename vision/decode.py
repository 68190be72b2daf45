"""YOLOv8 / YOLO11 detect head output to boxes: score threshold, class-aware NMS."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class Raw:
    """One image's detections in input pixels."""

    xyxy: NDArray[np.float32]  # (n, 4)
    scores: NDArray[np.float32]  # (n,)
    classes: NDArray[np.int64]  # (n,)


def decode(pred: NDArray[np.float32], score_threshold: float | NDArray[np.float32],
           iou_threshold: float, max_detections: int = 100) -> list[Raw]:
    """``pred`` (N, 4 + classes, anchors), boxes as centre x, y, width, height.
    ``score_threshold``: one for every class, or one per class (an array of classes)."""
    per_class = np.ndim(score_threshold) > 0
    lowest = float(np.min(score_threshold))
    out: list[Raw] = []
    for p in pred:
        p = p.T  # (anchors, 4 + nc)
        cls_scores = p[:, 4:]
        classes = cls_scores.argmax(axis=1)
        scores = cls_scores[np.arange(len(p)), classes]
        keep = scores >= (np.asarray(score_threshold)[classes] if per_class else lowest)
        if not keep.any():
            out.append(Raw(np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                           np.zeros(0, np.int64)))
            continue
        cxcywh, scores, classes = p[keep, :4], scores[keep], classes[keep]
        xywh = cxcywh.copy()
        xywh[:, 0] -= xywh[:, 2] / 2
        xywh[:, 1] -= xywh[:, 3] / 2
        kept = cv2.dnn.NMSBoxesBatched(xywh.tolist(), scores.tolist(), classes.tolist(),
                                       lowest, iou_threshold, top_k=max_detections)
        idx = np.asarray(kept, dtype=np.int64).reshape(-1)[:max_detections]
        xyxy = xywh[idx].copy()
        xyxy[:, 2] += xyxy[:, 0]
        xyxy[:, 3] += xyxy[:, 1]
        out.append(Raw(xyxy.astype(np.float32), scores[idx].astype(np.float32),
                       classes[idx].astype(np.int64)))
    return out
