"""The detector runtime: letterbox math, decoding and NMS, model cards, and the shipped
models on real images from the datasets they were validated on."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from vision.card import CardError, ModelCard, load_card
from vision.decode import decode
from vision.preprocess import letterbox, to_batch
from vision.runtime import YoloDetector

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"
DATASETS = ROOT.parent / "shared" / "datasets"


def test_letterbox_keeps_aspect_and_maps_boxes_back() -> None:
    frame = np.zeros((300, 600, 3), np.uint8)
    img, fit = letterbox(frame, 320)
    assert img.shape == (320, 320, 3) and fit.scale == pytest.approx(320 / 600)
    assert fit.pad_x == 0 and fit.pad_y == 80  # 600x300 -> 320x160, 80 px above and below
    assert (img[:80] == 114).all() and (img[80:240] == 0).all()
    back = fit.to_frame(np.array([[0, 80, 320, 240], [-5, 0, 400, 400]], np.float32))
    assert back[0].tolist() == pytest.approx([0, 0, 600, 300])
    assert back[1].tolist() == pytest.approx([0, 0, 600, 300])  # clipped to the frame


def test_batch_is_rgb_nchw_in_unit_range() -> None:
    frame = np.zeros((10, 10, 3), np.uint8)
    frame[:, :, 0] = 255  # blue in BGR
    batch, fits = to_batch([frame, frame], 32)
    assert batch.shape == (2, 3, 32, 32) and batch.dtype == np.float32
    assert batch[0, 2, 16, 16] == 1.0 and batch[0, 0, 16, 16] == 0.0  # blue is channel 2
    assert len(fits) == 2


def test_decode_thresholds_and_suppresses_per_class() -> None:
    # 2 classes, 4 anchors: two overlapping class-0 boxes, one class-1 box on top of them,
    # one below threshold.
    anchors = np.array([
        # cx, cy, w, h, s0, s1
        [50, 50, 20, 20, 0.9, 0.0],
        [52, 50, 20, 20, 0.8, 0.0],
        [50, 50, 20, 20, 0.0, 0.7],
        [10, 10, 5, 5, 0.1, 0.1],
    ], np.float32)
    (raw,) = decode(anchors.T[None], score_threshold=0.25, iou_threshold=0.5)
    assert raw.classes.tolist() == [0, 1]
    assert raw.scores.tolist() == pytest.approx([0.9, 0.7])
    i = int(np.argmax(raw.scores))
    assert raw.xyxy[i].tolist() == pytest.approx([40, 40, 60, 60])
    (empty,) = decode(anchors.T[None], score_threshold=0.95, iou_threshold=0.5)
    assert empty.xyxy.shape == (0, 4)


def test_card_refuses_violation_of_an_unknown_class(tmp_path: Path) -> None:
    card = {"name": "x", "version": "1", "input_size": 320, "classes": ["a", "b"],
            "violations": {"c": "no_mask"}}
    (tmp_path / "card.yaml").write_text(yaml.safe_dump(card))
    with pytest.raises(CardError, match="unknown classes"):
        load_card(tmp_path)


def _iou(a: list[float], b: list[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def _truth(image: Path, card: ModelCard, w: int, h: int) -> list[tuple[str, list[float]]]:
    label = image.parent.parent.parent / "labels" / image.parent.name / (image.stem + ".txt")
    out = []
    for line in label.read_text().splitlines():
        c, cx, cy, bw, bh = (float(x) for x in line.split())
        out.append((card.classes[int(c)], [(cx - bw / 2) * w, (cy - bh / 2) * h,
                                           (cx + bw / 2) * w, (cy + bh / 2) * h]))
    return out


@pytest.mark.parametrize(("model", "dataset", "min_recall"), [
    ("ppe", "ppe-helmet-uniform", 0.5), ("mask", "face-mask", 0.6)])
def test_shipped_model_finds_labelled_objects_in_validation_images(
        model: str, dataset: str, min_recall: float) -> None:
    detector = YoloDetector.from_dir(MODELS / model)
    card = detector.card
    assert card.evaluation is not None and card.evaluation.all.map50 > 0.5
    images = sorted((DATASETS / dataset / "images" / "val").glob("*.jpg"))[:12]
    assert images, f"no validation images under {DATASETS / dataset}"
    frames = [cv2.imread(str(p)) for p in images]
    found = total = 0
    for image, frame, boxes in zip(images, frames, detector.detect(frames), strict=True):
        h, w = frame.shape[:2]
        for cls, box in _truth(image, card, w, h):
            total += 1
            found += any(b.label == cls and _iou([b.x1, b.y1, b.x2, b.y2], box) >= 0.5
                         for b in boxes)
        assert all(0 <= b.x1 < b.x2 <= w and 0 <= b.y1 < b.y2 <= h for b in boxes)
    assert total > 20 and found / total >= min_recall, (found, total)


def test_batched_and_single_frames_agree() -> None:
    detector = YoloDetector.from_dir(MODELS / "mask")
    images = sorted((DATASETS / "face-mask" / "images" / "val").glob("*.jpg"))[:3]
    frames = [cv2.imread(str(p)) for p in images]
    batched = detector.detect(frames)
    single = [detector.detect([f])[0] for f in frames]
    for a, b in zip(batched, single, strict=True):
        assert [x.label for x in a] == [x.label for x in b]
        assert all(abs(x.x1 - y.x1) < 0.5 for x, y in zip(a, b, strict=True))
