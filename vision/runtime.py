"""The detector: a shipped model (``models/<name>``) on ONNX Runtime.

CPU by default; CUDA when ONNX Runtime offers it. Frames are BGR ``numpy`` arrays (as
OpenCV reads them); boxes come back in each frame's own pixels as
:class:`ganzhi.contracts.BoundingBox`. No weights are ever downloaded: the model file
and its card are read from disk.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from ganzhi.contracts import BoundingBox
from vision.card import MODEL_FILE, ModelCard, load_card
from vision.decode import decode
from vision.preprocess import to_batch


def default_providers() -> list[str]:
    available = ort.get_available_providers()
    preferred = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return [p for p in preferred if p in available] or available


class YoloDetector:
    def __init__(self, model_path: Path, card: ModelCard, *, threads: int | None = None,
                 providers: Sequence[str] | None = None, rect: bool = False) -> None:
        self.card = card
        self.model_path = model_path
        # rect: the input is the smallest stride multiple that holds the frame, not the
        # square (fewer pixels for the same detail; the model has dynamic height/width).
        self.rect = rect
        opts = ort.SessionOptions()
        # One thread by default: a box runs one detector per camera. A single camera may
        # take all cores (1.7x faster on 2 cores here, docs/vision.md).
        opts.intra_op_num_threads = threads if threads is not None else 1
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            str(model_path), sess_options=opts,
            providers=list(providers) if providers else default_providers())
        inp = self.session.get_inputs()[0]
        self._input = inp.name
        self._dynamic_batch = not isinstance(inp.shape[0], int)
        self.score_threshold = card.score_threshold
        # Per class (the card's, chosen on validation); a class not named uses
        # score_threshold. A camera that sets its own score_threshold clears these.
        self.class_thresholds: dict[str, float] = dict(card.class_thresholds)
        self.iou_threshold = card.iou_threshold

    @classmethod
    def from_dir(cls, model_dir: Path, *, threads: int | None = None,
                 providers: Sequence[str] | None = None, precision: str = "fp32",
                 rect: bool = False) -> YoloDetector:
        """``precision``: ``fp32`` (``model.onnx``) or ``int8`` (the card's quantized
        file, written by ``python -m vision.quantize``)."""
        card = load_card(model_dir)
        return cls(model_dir / model_file(card, precision), card, threads=threads,
                   providers=providers, rect=rect)

    @property
    def providers(self) -> list[str]:
        return list(self.session.get_providers())

    def _run(self, batch: NDArray[np.float32]) -> NDArray[np.float32]:
        if self._dynamic_batch or len(batch) == 1:
            out = self.session.run(None, {self._input: batch})[0]
            return np.asarray(out, dtype=np.float32)
        return np.concatenate([np.asarray(self.session.run(None, {self._input: b[None]})[0],
                                          dtype=np.float32) for b in batch])

    def thresholds(self) -> float | NDArray[np.float32]:
        if not self.class_thresholds:
            return self.score_threshold
        return np.asarray([self.class_thresholds.get(c, self.score_threshold)
                           for c in self.card.classes], np.float32)

    def detect(self, frames: Sequence[NDArray[np.uint8]], *, upscale: bool = True
               ) -> list[list[BoundingBox]]:
        """Detections per frame, in the frame's pixels, best first. ``upscale=False``: a
        frame smaller than the input size (a motion crop) runs at its own pixels."""
        if not frames:
            return []
        batch, fits = to_batch(frames, self.card.input_size, rect=self.rect or not upscale,
                               upscale=upscale)
        raws = decode(self._run(batch), self.thresholds(), self.iou_threshold)
        out: list[list[BoundingBox]] = []
        for raw, fit in zip(raws, fits, strict=True):
            xyxy = fit.to_frame(raw.xyxy)
            out.append([
                BoundingBox(label=self.card.classes[int(c)], score=round(float(s), 4),
                            x1=float(b[0]), y1=float(b[1]), x2=float(b[2]), y2=float(b[3]))
                for b, s, c in zip(xyxy, raw.scores, raw.classes, strict=True)])
        return out


def pick_precision(card: ModelCard, wanted: str, classes: Iterable[str]) -> str:
    """``auto``: the INT8 file when the card has one and ``classes`` (the violation
    classes) kept their recall with it on the val split; else FP32."""
    if wanted != "auto":
        return wanted
    return "int8" if card.int8 is not None and card.int8.keeps_recall(classes) else "fp32"


def model_file(card: ModelCard, precision: str) -> str:
    if precision == "fp32":
        return MODEL_FILE
    if precision == "int8":
        if card.int8 is None:
            raise ValueError(f"model {card.name} has no int8 file: run python -m vision.quantize")
        return card.int8.file
    raise ValueError(f"precision {precision!r}: fp32 or int8")


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)
