"""The review queue: frames a camera keeps for people to label (the labelling loop).

Two kinds of frame are kept, raw (no boxes drawn), each as ``<id>.jpg`` with a
``<id>.json`` beside it (camera, time, why, the model that looked and its boxes, which
become the labeller's pre-annotations):

* ``uncertain``: the detector saw a class the camera acts on, but with a score in the
  uncertain band (default 0.25-0.5), where a labelled example teaches the model most. At
  most one every ``min_interval_s`` per camera.
* ``finding``: the frame of every finding the camera raised, with the SHA-256 of the
  evidence snapshot sent with it. When the task system marks that clue false positive,
  the export (``python -m vision.labelling export``) picks these frames by that SHA-256.

The queue is bounded (``max_items``: the oldest go first) and lives on the box, beside
the spool; a write that fails is logged and counted, never stops the camera.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from edge import metrics
from ganzhi.contracts import BoundingBox
from ganzhi.observability import get_logger
from vision.review import Reason

log = get_logger("edge.camera.review")


@dataclass(frozen=True)
class ReviewParams:
    root: Path
    uncertain_low: float = 0.25
    uncertain_high: float = 0.5
    min_interval_s: float = 30.0
    max_items: int = 500
    jpeg_quality: int = 95


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ReviewQueue:
    """One camera's side of the queue (cameras of a box share the folder)."""

    def __init__(self, params: ReviewParams, camera: str, watched: set[str]) -> None:
        self.p, self.camera, self.watched = params, camera, watched
        self._last_uncertain: float | None = None
        self.kept = 0
        self.failed = 0

    def uncertain(self, boxes: Sequence[BoundingBox]) -> bool:
        return any(b.label in self.watched
                   and self.p.uncertain_low <= b.score < self.p.uncertain_high for b in boxes)

    def offer(self, t: float, image: NDArray[np.uint8], ts: datetime,
              boxes: Sequence[BoundingBox], model: str | None) -> bool:
        """Keep the frame if it is uncertain and the last one kept is old enough."""
        if not self.uncertain(boxes):
            return False
        if self._last_uncertain is not None and t - self._last_uncertain < self.p.min_interval_s:
            return False
        if self._keep(image, ts, "uncertain", boxes, model, None):
            self._last_uncertain = t
            return True
        return False

    def finding(self, image: NDArray[np.uint8], ts: datetime, boxes: Sequence[BoundingBox],
                model: str | None, snapshot_sha256: str) -> bool:
        return self._keep(image, ts, "finding", boxes, model, snapshot_sha256)

    def _keep(self, image: NDArray[np.uint8], ts: datetime, reason: Reason,
              boxes: Sequence[BoundingBox], model: str | None, sha: str | None) -> bool:
        item = f"{ts:%Y%m%dT%H%M%S}-{self.camera}-{uuid.uuid4().hex[:8]}"
        h, w = image.shape[:2]
        meta = {"camera": self.camera, "ts": ts.isoformat(), "reason": reason, "model": model,
                "width": w, "height": h, "snapshot_sha256": sha,
                "boxes": [b.model_dump() for b in boxes]}
        try:
            self.p.root.mkdir(parents=True, exist_ok=True)
            ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY,
                                                   self.p.jpeg_quality])
            if not ok:
                raise OSError("JPEG encoding failed")
            _write_atomic(self.p.root / f"{item}.jpg", buf.tobytes())
            # The sidecar last: an item is complete when its JSON exists.
            _write_atomic(self.p.root / f"{item}.json", json.dumps(meta).encode())
            self._prune()
        except OSError as exc:
            self.failed += 1
            metrics.REVIEW_FAILED.labels(camera=self.camera).inc()
            log.warning("review_keep_failed", camera=self.camera, error=str(exc))
            return False
        self.kept += 1
        metrics.REVIEW_KEPT.labels(camera=self.camera, reason=reason).inc()
        return True

    def _prune(self) -> None:
        sidecars = sorted(self.p.root.glob("*.json"))
        for old in sidecars[: max(0, len(sidecars) - self.p.max_items)]:
            old.unlink(missing_ok=True)
            old.with_suffix(".jpg").unlink(missing_ok=True)
