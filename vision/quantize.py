"""INT8 copy of a shipped model: ``python -m vision.quantize models/ppe``.

Static quantization with ONNX Runtime's tools (``onnxruntime.quantization``, QDQ format,
per-channel INT8 weights, UINT8 activations calibrated with min/max on training images):
only the convolutions are quantized, and the detect head's box decoding (DFL, anchors,
sigmoid) stays in float, so the boxes keep their precision. Writes
``models/<name>/model.int8.onnx`` and the card's ``int8`` section: accuracy of the FP32
model and the INT8 one on the validation split, measured the same way in the same run
(:mod:`vision.evaluate`), and the CPU latency of each at the card's input size on one
thread. The camera agent runs it with ``detect.precision: int8``; FP32 stays selectable.

Needs ``onnx`` (the ``train`` extra), never the edge. The dataset is only read.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from vision.card import MODEL_FILE, Int8, load_card, save_card
from vision.evaluate import evaluate
from vision.preprocess import to_batch
from vision.runtime import YoloDetector

INT8_FILE = "model.int8.onnx"
ROOT = Path(__file__).resolve().parents[1]
DATASETS = {"ppe": "ppe-helmet-uniform", "mask": "face-mask", "smoking": "smoking-cigarette"}


def head_nodes(model_path: Path) -> list[str]:
    """The detect head's nodes other than its convolutions (kept in float)."""
    import onnx

    graph = onnx.load(str(model_path)).graph
    last = graph.node[-1].name.split("/")[1] if graph.node[-1].name.count("/") > 1 else ""
    prefix = f"/{last}/"
    return [n.name for n in graph.node if n.name.startswith(prefix)
            and not (n.op_type == "Conv" and ("/cv2" in n.name or "/cv3" in n.name))]


def quantize(src: Path, dst: Path, calibration: list[Path], size: int) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.files: Iterator[Path] = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            path = next(self.files, None)
            if path is None:
                return None
            batch, _ = to_batch([np.asarray(cv2.imread(str(path)), np.uint8)], size)
            return {"images": batch}

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                        op_types_to_quantize=["Conv"], nodes_to_exclude=head_nodes(pre))


def latency_ms(det: YoloDetector, images: list[Path], runs: int = 40) -> float:
    frames = [np.asarray(cv2.imread(str(p)), np.uint8) for p in images[:runs]]
    det.detect(frames[:1])
    times = []
    for f in frames:
        t = time.process_time()
        det.detect([f])
        times.append((time.process_time() - t) * 1000)
    return round(statistics.median(times), 1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vision.quantize", description=__doc__)
    ap.add_argument("model", type=Path, help="model folder (models/<name>)")
    ap.add_argument("--dataset", type=Path, help="YOLO dataset (default: the model's own in "
                    "../shared/datasets)")
    ap.add_argument("--calibration", type=int, default=64, help="training images to calibrate")
    ap.add_argument("--limit", type=int, default=0, help="evaluate on the first N val images")
    ap.add_argument("--evaluate-only", action="store_true",
                    help="keep the INT8 file there is, measure both again")
    a = ap.parse_args(argv)
    card = load_card(a.model)
    dataset = a.dataset or ROOT.parent / "shared" / "datasets" / DATASETS.get(card.name, "")
    train = sorted((dataset / "images" / "train").glob("*.jpg"))
    val = sorted((dataset / "images" / "val").glob("*.jpg"))
    if not train or not val:
        raise SystemExit(f"{dataset}: needs images/train and images/val")
    step = max(1, len(train) // a.calibration)
    calibration = train[::step][: a.calibration]
    dst = a.model / INT8_FILE
    print(f"[vision.quantize] {a.model / MODEL_FILE} -> {dst} ({len(calibration)} "
          "calibration images)", file=sys.stderr, flush=True)
    if not a.evaluate_only or not dst.is_file():
        quantize(a.model / MODEL_FILE, dst, calibration, card.input_size)
    if a.limit:
        val = val[: a.limit]
    results = {}
    for name, path in (("fp32", a.model / MODEL_FILE), ("int8", dst)):
        det = YoloDetector(path, card, threads=1, providers=["CPUExecutionProvider"])
        results[name] = (*evaluate(det, val, dataset / "labels" / "val", card.classes,
                                   card.score_threshold, label=name,
                                   class_thresholds=card.class_thresholds),
                         latency_ms(det, val))
    (b_all, b_per, b_ms), (a_all, a_per, a_ms) = results["fp32"], results["int8"]
    card = card.model_copy(update={"int8": Int8(
        file=INT8_FILE,
        method="onnxruntime.quantization.quantize_static: QDQ, per-channel int8 weights, "
               "uint8 activations (MinMax), Conv only, the head's box decoding in float",
        calibration=f"{len(calibration)} training images of {dataset.name}, "
                    f"letterboxed to {card.input_size} px",
        evaluator=f"vision.evaluate on {len(val)} val images at {card.input_size} px: "
                  f"P/R at score >= {card.score_threshold}"
                  f"{' (per class: class_thresholds)' if card.class_thresholds else ''}"
                  ", COCO 101-point AP (zero "
                  "past the highest recall; ultralytics interpolates on to recall 1)",
        before=b_all, after=a_all, before_per_class=b_per, after_per_class=a_per,
        latency_fp32_ms=b_ms, latency_int8_ms=a_ms,
        command=f"python -m vision.quantize {a.model}")})
    save_card(a.model, card)
    for label, m, ms in (("fp32", b_all, b_ms), ("int8", a_all, a_ms)):
        print(f"  {label}: P {m.precision:.3f} R {m.recall:.3f} mAP50 {m.map50:.3f} "
              f"mAP50-95 {m.map50_95:.3f}, {ms} ms CPU per frame (1 thread)")
    for cls in card.classes:
        if cls in b_per and cls in a_per:
            print(f"    {cls:16s} recall {b_per[cls].recall:.3f} -> {a_per[cls].recall:.3f}, "
                  f"mAP50 {b_per[cls].map50:.3f} -> {a_per[cls].map50:.3f}")
    print(f"[vision.quantize] wrote {dst} and {a.model / 'card.yaml'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
