"""Per-class score thresholds: chosen on validation (vision.thresholds), kept in the card,
applied by the runtime, replaced by a camera's own threshold."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from edge.camera.worker import load_detector
from edge.config import CameraConfig
from vision.card import CardError, load_card
from vision.decode import decode
from vision.evaluate import Accumulator
from vision.thresholds import best_threshold, main

ROOT = Path(__file__).resolve().parents[2]
MASK = ROOT / "models" / "mask"
FACE_MASK = ROOT.parent / "shared" / "datasets" / "face-mask"


def test_decode_applies_each_classes_own_threshold() -> None:
    anchors = np.array([
        # cx, cy, w, h, s0, s1
        [50, 50, 20, 20, 0.5, 0.0],
        [150, 50, 20, 20, 0.0, 0.5],
        [250, 50, 20, 20, 0.0, 0.85],
    ], np.float32)
    (raw,) = decode(anchors.T[None], np.array([0.3, 0.8], np.float32), 0.5)
    kept = sorted(zip(raw.classes.tolist(), raw.scores.tolist(), strict=True))
    assert [c for c, _ in kept] == [0, 1]  # class 1's 0.5 is under its own 0.8
    assert [s for _, s in kept] == pytest.approx([0.5, 0.85])


def test_the_best_cut_maximises_f1_and_keeps_ties_together() -> None:
    scores = np.array([0.95, 0.9, 0.7, 0.6, 0.6, 0.3, 0.2])
    tp = np.array([True, True, True, False, False, True, False])
    choice = best_threshold(scores, tp, labels=4)
    # Cuts: 0.95 F1 .4, 0.9 .667, 0.7 .857, 0.6 (both) .667, 0.3 .727, 0.2 .727
    assert choice is not None and choice.threshold == 0.7
    assert (choice.precision, choice.recall) == (1.0, 0.75)
    # Weighing precision (beta 0.5) cannot prefer a cut with lower precision and recall.
    assert best_threshold(scores, tp, labels=4, beta=0.5).threshold == 0.7  # type: ignore[union-attr]
    assert best_threshold(np.array([]), np.array([], bool), labels=3) is None
    assert best_threshold(scores, tp, labels=0) is None
    # Outside [0.05, 0.9] never: here every cut is at 0.95 or 0.99.
    assert best_threshold(np.array([0.99, 0.95]), np.array([True, True]), labels=2) is None


def test_precision_and_recall_at_a_class_threshold() -> None:
    gt = np.array([[0, 0, 10, 10], [20, 20, 40, 40]], np.float32)
    acc = Accumulator(["a"], score_threshold=0.35, class_thresholds={"a": 0.85})
    acc.add(np.array([0, 0]), np.array([0.9, 0.8], np.float32), gt, np.array([0, 0]), gt)
    _, per = acc.metrics()
    assert (per["a"].precision, per["a"].recall) == (1.0, 0.5)


def test_the_card_refuses_thresholds_of_unknown_classes_or_out_of_range(tmp_path: Path
                                                                        ) -> None:
    card = {"name": "x", "version": "1", "input_size": 320, "classes": ["a"],
            "class_thresholds": {"b": 0.5}}
    (tmp_path / "card.yaml").write_text(yaml.safe_dump(card))
    with pytest.raises(CardError, match="class_thresholds name unknown classes"):
        load_card(tmp_path)
    card["class_thresholds"] = {"a": 1.5}
    (tmp_path / "card.yaml").write_text(yaml.safe_dump(card))
    with pytest.raises(CardError, match="between 0 and 1"):
        load_card(tmp_path)


@pytest.fixture
def mask_copy(tmp_path: Path) -> Path:
    dst = tmp_path / "mask"
    dst.mkdir()
    for name in ("card.yaml", "model.onnx"):
        shutil.copy(MASK / name, dst / name)
    return dst


def test_thresholds_are_chosen_on_validation_and_used_by_the_camera(
        mask_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    card = load_card(mask_copy)
    card_dict = yaml.safe_load((mask_copy / "card.yaml").read_text())
    card_dict.pop("class_thresholds", None)
    card_dict.pop("threshold_choice", None)
    (mask_copy / "card.yaml").write_text(yaml.safe_dump(card_dict, allow_unicode=True))
    assert main([str(mask_copy), "--dataset", str(FACE_MASK), "--write-card"]) == 0
    card = load_card(mask_copy)
    assert set(card.class_thresholds) == set(card.violations)  # the alerting classes only
    choice = card.threshold_choice
    assert choice is not None and choice.images > 50
    for c in card.class_thresholds:
        b, a = choice.before[c], choice.after[c]
        # F1 at the chosen threshold is at least F1 at the single one (same data).
        f1 = [2 * m.precision * m.recall / max(m.precision + m.recall, 1e-9) for m in (b, a)]
        assert f1[1] >= f1[0] - 1e-9
    assert "| no_mask |" in capsys.readouterr().out

    cfg = CameraConfig.model_validate({"device_id": "cam-1", "source": "x.mp4",
                                       "model_dir": str(mask_copy)})
    det, _ = load_detector(cfg)
    assert det.class_thresholds == card.class_thresholds  # type: ignore[attr-defined]
    cfg = cfg.model_copy(update={"score_threshold": 0.5})
    det, _ = load_detector(cfg)  # the camera's own threshold, for every class
    assert det.score_threshold == 0.5 and det.class_thresholds == {}  # type: ignore[attr-defined]


def test_bad_arguments_exit_2(mask_copy: Path, tmp_path: Path) -> None:
    assert main([str(mask_copy), "--dataset", str(FACE_MASK), "--classes", "nope"]) == 2
    assert main([str(mask_copy), "--dataset", str(tmp_path)]) == 2
