"""The review queue's files, as the camera agent writes them and the labelling export
reads them (:mod:`edge.camera.review` writes; :mod:`vision.labelling` reads): per kept
frame ``<id>.jpg`` (the raw frame) and ``<id>.json`` (camera, time, reason, model, image
size, the model's boxes, and for a finding the SHA-256 of its evidence snapshot)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from ganzhi.contracts import BoundingBox
from ganzhi.observability import get_logger

log = get_logger("vision.review")

Reason = Literal["uncertain", "finding"]


@dataclass(frozen=True)
class ReviewItem:
    """One kept frame, as read back from the queue."""

    id: str
    image: Path
    camera: str
    ts: datetime
    reason: Reason
    model: str | None
    width: int
    height: int
    boxes: list[BoundingBox]
    snapshot_sha256: str | None = None


def read_queue(root: Path) -> list[ReviewItem]:
    """Every complete item of a queue folder, oldest first (a damaged sidecar is skipped
    with a warning)."""
    items = []
    for meta_path in sorted(root.glob("*.json")):
        image = meta_path.with_suffix(".jpg")
        try:
            m = json.loads(meta_path.read_text())
            items.append(ReviewItem(
                id=meta_path.stem, image=image, camera=str(m["camera"]),
                ts=datetime.fromisoformat(m["ts"]), reason=m["reason"], model=m.get("model"),
                width=int(m["width"]), height=int(m["height"]),
                boxes=[BoundingBox.model_validate(b) for b in m.get("boxes", [])],
                snapshot_sha256=m.get("snapshot_sha256")))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("review_item_unreadable", item=str(meta_path), error=str(exc))
            continue
        if not image.is_file():
            log.warning("review_item_without_image", item=str(meta_path))
            items.pop()
    return items
