"""The evaluator behind the INT8 card figures: IoU, matching, AP and recall (pure)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vision.evaluate import Accumulator, iou_matrix, read_labels

GT = np.array([[0, 0, 10, 10], [20, 20, 40, 40]], np.float32)


def test_iou_of_identical_disjoint_and_half_overlapping_boxes() -> None:
    m = iou_matrix(GT, np.array([[0, 0, 10, 10], [100, 100, 110, 110], [0, 0, 10, 20]],
                                np.float32))
    assert m[0].tolist() == pytest.approx([1.0, 0.0, 0.5], abs=1e-6)


def test_perfect_detections_score_one_and_a_miss_halves_recall() -> None:
    acc = Accumulator(["a"], score_threshold=0.35)
    acc.add(np.array([0, 0]), np.array([0.9, 0.8], np.float32), GT, np.array([0, 0]), GT)
    mean, per = acc.metrics()
    assert (per["a"].precision, per["a"].recall, per["a"].map50) == (1.0, 1.0, 1.0)
    assert mean.map50_95 == pytest.approx(1.0)
    acc = Accumulator(["a"], score_threshold=0.35)
    # one box found, one below the threshold (counts for AP, not for P/R), one false
    acc.add(np.array([0, 0, 0]), np.array([0.9, 0.2, 0.6], np.float32),
            np.array([[0, 0, 10, 10], [20, 20, 40, 40], [60, 60, 70, 70]], np.float32),
            np.array([0, 0]), GT)
    _, per = acc.metrics()
    assert per["a"].recall == 0.5 and per["a"].precision == 0.5
    assert 0.5 < per["a"].map50 < 1.0


def test_yolo_labels_to_pixels(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("1 0.5 0.5 0.2 0.4\n")
    cls, xyxy = read_labels(tmp_path / "x.txt", 100, 50)
    assert cls.tolist() == [1] and xyxy[0].tolist() == pytest.approx([40, 15, 60, 35])
    cls, xyxy = read_labels(tmp_path / "missing.txt", 100, 50)
    assert len(cls) == 0 and xyxy.shape == (0, 4)
