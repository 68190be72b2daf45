"""The nudenet start (vision.pretrained): the copied network computes what nudenet's ONNX
file computes, and after calibration its batch-norms keep the features in train mode.

Needs the ``train`` extra (torch, ultralytics, nudenet); ``./dev test`` does not install
it, so CI skips this module.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("torch", "ultralytics", "nudenet")),
    reason="needs the train extra (torch, ultralytics, nudenet)")


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Scenes with structure (shapes, gradients, noise), not flat colour."""
    root = tmp_path_factory.mktemp("calibration")
    rng = np.random.default_rng(3)
    out = []
    for i in range(24):
        img = np.tile(np.linspace(40, 200, 480, dtype=np.uint8)[None, :, None], (360, 1, 3))
        for _ in range(6):
            x, y = int(rng.integers(0, 420)), int(rng.integers(0, 300))
            color = tuple(int(c) for c in rng.integers(0, 255, 3))
            cv2.rectangle(img, (x, y), (x + int(rng.integers(20, 120)),
                                        y + int(rng.integers(20, 120))), color, -1)
            cv2.circle(img, (int(rng.integers(0, 480)), int(rng.integers(0, 360))),
                       int(rng.integers(5, 40)), color, 2)
        img = np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
        path = root / f"{i}.jpg"
        cv2.imwrite(str(path), img)
        out.append(path)
    return out


def test_the_copied_network_is_nudenets_in_eval_mode(images: list[Path]) -> None:
    import onnxruntime as ort
    import torch

    from vision.pretrained import build_start, calibration_batches, nudenet_onnx

    model, report = build_start(18, images[:16], 320)  # nudenet's own 18 classes
    assert report.copied_convs == 57 and report.skipped == []
    x = next(iter(calibration_batches(images[16:20], 320)))
    want = ort.InferenceSession(str(nudenet_onnx())).run(None, {"images": x})[0]
    with torch.no_grad():
        got = model(torch.from_numpy(x))
    got = (got[0] if isinstance(got, (list, tuple)) else got).numpy()
    assert got.shape == want.shape
    assert np.abs(got - want).max() < 1e-3 * np.abs(want).max()


def test_calibration_keeps_the_features_in_train_mode(images: list[Path]) -> None:
    from vision.pretrained import build_start

    _, report = build_start(2, images, 320)
    # Without calibration DESIGN measured 0.69 (layer 2) down to 0.16 (layer 9).
    assert report.train_eval_cosine and min(report.train_eval_cosine.values()) > 0.95
    # Two classes: the class head's last convs (18 outputs in nudenet) are not copied.
    assert report.skipped == ["model.22.cv3.0.2", "model.22.cv3.1.2", "model.22.cv3.2.2"]
    assert "batch-norm calibrated on 24 training images" in report.summary()


def test_the_start_loads_as_an_ultralytics_checkpoint(images: list[Path], tmp_path: Path
                                                      ) -> None:
    import torch
    from ultralytics import YOLO

    from vision.pretrained import build_start, save_start

    model, report = build_start(1, images[:8], 320)
    path = save_start(model, tmp_path / "start.pt", report)
    loaded = YOLO(str(path))
    a = model.state_dict()
    b = loaded.model.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
