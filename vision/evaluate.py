"""Accuracy of an ONNX detector on a YOLO dataset's validation split, without ultralytics.

Per class: average precision at IoU 0.5 and averaged over 0.5:0.95 (detections matched
to labels best score first, COCO's 101-point AP), and the precision and recall at the
card's score threshold (what the camera agent acts on). Used to compare a model with its
INT8 copy measured the same way (``python -m vision.quantize``); its figures are not
ultralytics' (which picks P/R at the best-F1 confidence and interpolates AP on to
recall 1, so reports a higher mAP).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
from numpy.typing import NDArray

from ganzhi.contracts import BoundingBox
from vision.card import ClassMetrics

IOUS = np.linspace(0.5, 0.95, 10)


def iou_matrix(a: NDArray[np.float32], b: NDArray[np.float32]) -> NDArray[np.float32]:
    """(n, 4) x (m, 4) xyxy -> (n, m) intersection over union."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)), np.float32)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = (a[:, 2:] - a[:, :2]).prod(axis=1)
    area_b = (b[:, 2:] - b[:, :2]).prod(axis=1)
    return np.asarray(inter / (area_a[:, None] + area_b[None, :] - inter + 1e-9), np.float32)


def read_labels(path: Path, width: int, height: int
                ) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """A YOLO label file -> (classes, xyxy in pixels)."""
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()] \
        if path.is_file() else []
    if not rows:
        return np.zeros(0, np.int64), np.zeros((0, 4), np.float32)
    arr = np.asarray([[float(v) for v in r[:5]] for r in rows], np.float32)
    cx, cy, w, h = arr[:, 1] * width, arr[:, 2] * height, arr[:, 3] * width, arr[:, 4] * height
    xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    return arr[:, 0].astype(np.int64), xyxy.astype(np.float32)


def average_precision(recall: NDArray[np.float64], precision: NDArray[np.float64]) -> float:
    """COCO's 101-point AP: at each recall level, the best precision at that recall or
    above (0 past the highest recall reached)."""
    if not len(recall):
        return 0.0
    envelope = np.flip(np.maximum.accumulate(np.flip(precision)))
    idx = np.searchsorted(recall, np.linspace(0, 1, 101), side="left")
    return float(np.mean(np.where(idx < len(recall), envelope[np.minimum(idx, len(recall) - 1)],
                                  0.0)))


@dataclass
class _ClassStats:
    scores: list[float] = field(default_factory=list)
    tp: list[NDArray[np.bool_]] = field(default_factory=list)  # per detection, per IoU
    labels: int = 0


@dataclass
class Accumulator:
    classes: list[str]
    score_threshold: float
    # P/R of a class named here are at its own threshold (the card's class_thresholds).
    class_thresholds: dict[str, float] = field(default_factory=dict)
    stats: dict[int, _ClassStats] = field(default_factory=dict)

    def add(self, det_cls: NDArray[np.int64], det_scores: NDArray[np.float32],
            det_xyxy: NDArray[np.float32], gt_cls: NDArray[np.int64],
            gt_xyxy: NDArray[np.float32]) -> None:
        for c in range(len(self.classes)):
            st = self.stats.setdefault(c, _ClassStats())
            g = gt_xyxy[gt_cls == c]
            st.labels += len(g)
            sel = det_cls == c
            d, s = det_xyxy[sel], det_scores[sel]
            order = np.argsort(-s)
            d, s = d[order], s[order]
            ious = iou_matrix(d, g)
            tp = np.zeros((len(d), len(IOUS)), bool)
            for k, thr in enumerate(IOUS):
                taken = np.zeros(len(g), bool)
                for i in range(len(d)):
                    if not len(g):
                        break
                    cand = np.where(~taken & (ious[i] >= thr), ious[i], -1.0)
                    j = int(cand.argmax())
                    if cand[j] >= 0:
                        taken[j] = True
                        tp[i, k] = True
            st.scores.extend(float(v) for v in s)
            st.tp.extend(tp)

    def ranked(self, c: int) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
        """Class ``c``'s detections best first: scores and true positive per IoU."""
        st = self.stats[c]
        scores = np.asarray(st.scores, np.float64)
        tp = np.asarray(st.tp, bool).reshape(-1, len(IOUS))
        order = np.argsort(-scores, kind="stable")
        return scores[order], tp[order]

    def metrics(self) -> tuple[ClassMetrics, dict[str, ClassMetrics]]:
        per: dict[str, ClassMetrics] = {}
        for c, st in sorted(self.stats.items()):
            if not st.labels:
                continue
            scores, tp = self.ranked(c)
            ctp = np.cumsum(tp, axis=0)
            cfp = np.cumsum(~tp, axis=0)
            aps = [average_precision(ctp[:, k] / st.labels,
                                     ctp[:, k] / np.maximum(ctp[:, k] + cfp[:, k], 1))
                   if len(tp) else 0.0 for k in range(len(IOUS))]
            kept = scores >= self.class_thresholds.get(self.classes[c], self.score_threshold)
            n_tp = int(tp[kept, 0].sum())
            per[self.classes[c]] = ClassMetrics(
                precision=round(n_tp / max(int(kept.sum()), 1), 4),
                recall=round(n_tp / st.labels, 4), map50=round(aps[0], 4),
                map50_95=round(float(np.mean(aps)), 4), instances=st.labels)
        vals = list(per.values())
        mean = ClassMetrics(**{k: round(float(np.mean([getattr(v, k) for v in vals])), 4)
                               for k in ("precision", "recall", "map50", "map50_95")})
        return mean, per


class Detects(Protocol):  # what evaluate() needs of vision.runtime.YoloDetector
    score_threshold: float
    class_thresholds: dict[str, float]  # (a detector without it: none per class)

    def detect(self, frames: Sequence[NDArray[np.uint8]]) -> list[list[BoundingBox]]: ...


def evaluate(detector: Detects, images: Iterable[Path], labels_dir: Path,
             classes: list[str], score_threshold: float, *, label: str = "",
             class_thresholds: Mapping[str, float] | None = None) -> tuple[
                 ClassMetrics, dict[str, ClassMetrics]]:
    """Run ``detector`` (a YoloDetector) on each image at a low threshold and score it;
    precision and recall at ``score_threshold`` (per class: ``class_thresholds``)."""
    acc = collect(detector, images, labels_dir, classes, label=label)
    acc.score_threshold = score_threshold
    acc.class_thresholds = dict(class_thresholds or {})
    return acc.metrics()


def collect(detector: Detects, images: Iterable[Path], labels_dir: Path,
            classes: list[str], *, label: str = "") -> Accumulator:
    """Every detection down to score 0.001 on each image, matched to its labels."""
    det = detector
    saved = det.score_threshold
    saved_per_class = getattr(det, "class_thresholds", None)
    det.score_threshold = 0.001
    if saved_per_class is not None:
        det.class_thresholds = {}
    acc = Accumulator(classes, 0.001)
    files = list(images)
    try:
        for n, path in enumerate(files, 1):
            img = cv2.imread(str(path))
            if img is None:
                continue
            h, w = img.shape[:2]
            boxes = det.detect([np.asarray(img, np.uint8)])[0]
            index = {name: i for i, name in enumerate(classes)}
            d_cls = np.asarray([index[b.label] for b in boxes], np.int64)
            d_sc = np.asarray([b.score for b in boxes], np.float32)
            d_xy = np.asarray([[b.x1, b.y1, b.x2, b.y2] for b in boxes],
                              np.float32).reshape(-1, 4)
            g_cls, g_xy = read_labels(labels_dir / f"{path.stem}.txt", w, h)
            acc.add(d_cls, d_sc, d_xy, g_cls, g_xy)
            if n % 50 == 0 or n == len(files):
                print(f"\r  evaluating {label}: {n}/{len(files)}", end="", file=sys.stderr,
                      flush=True)
        print(file=sys.stderr)
    finally:
        det.score_threshold = saved
        if saved_per_class is not None:
            det.class_thresholds = saved_per_class
    return acc
