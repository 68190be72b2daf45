"""A pretrained start for ``vision.train``: nudenet's YOLOv8n, batch-norm calibrated.

The only pretrained YOLO weights installable here are nudenet's (``nudenet/320n.onnx``
from PyPI, an Ultralytics YOLOv8n detector of people and body parts at 320 px). The
ONNX export carries every batch-norm folded into its conv: a conv weight ``W`` and a
bias ``b`` where ultralytics has a bias-free conv followed by a batch-norm.

Copying ``W`` and setting each batch-norm to "add ``b``" reproduces the network in eval
mode but not in training, where batch-norm normalises by the batch's own statistics
and most of the copied features are lost. So the start is *calibrated*: the copied
network runs over training images, each conv's output ``z = W * x`` is measured per
channel (mean ``m``, variance ``v``), and its batch-norm gets running mean ``m`` and
variance ``v``, scale ``sqrt(v + eps)`` and shift ``m + b``. Then

* eval mode computes ``(z - m) / sqrt(v + eps) * sqrt(v + eps) + m + b = z + b``, the
  original network, exactly;
* training mode, whose batch statistics are close to ``m`` and ``v``, computes nearly the
  same, so the features survive into fine-tuning.

:func:`build_start` returns the model and a :class:`StartReport` (what was copied, how
close train mode stays to eval mode per layer) for the model card; ``vision.train
--init nudenet`` uses it. The class head (its last conv, one output per class) cannot
be copied when the classes differ and starts as ultralytics initialises it.

Weights and licence: the ONNX file's metadata names the AGPL-3.0 (Ultralytics); the
package's own metadata says MIT while its licence files are AGPL-3.0. A model trained
from this start is a derivative of those weights: see the model card's licence.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from vision.preprocess import to_batch

NUDENET_NAME = "nudenet-320n"


class StartError(RuntimeError):
    """The pretrained start cannot be built (missing package, unexpected weights)."""


def nudenet_onnx() -> Path:
    """The ONNX file of the installed ``nudenet`` package (the ``train`` extra)."""
    spec = importlib.util.find_spec("nudenet")
    if spec is None or not spec.submodule_search_locations:
        raise StartError("the nudenet package is not installed (pip install 'ganzhi[train]')")
    path = Path(next(iter(spec.submodule_search_locations))) / "320n.onnx"
    if not path.is_file():
        raise StartError(f"{path}: not found in the nudenet package")
    return path


def fused_weights(onnx_path: Path) -> dict[str, NDArray[np.float32]]:
    """The named conv weights and biases of an ultralytics ONNX export (``model.0.conv.
    weight`` ...), batch-norm folded in."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path)).graph
    return {i.name: numpy_helper.to_array(i).astype(np.float32) for i in graph.initializer
            if i.name.startswith("model.") and i.name.endswith((".weight", ".bias"))}


@dataclass
class StartReport:
    """What the start holds, for the model card and the training log."""

    source: str
    copied_convs: int = 0
    skipped: list[str] = field(default_factory=list)  # keys not copied (class head)
    calibration_images: int = 0
    # Per calibrated layer: cosine similarity of its output in train mode vs eval mode.
    train_eval_cosine: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        cos = list(self.train_eval_cosine.values())
        spread = f"{min(cos):.3f}–{max(cos):.3f}" if cos else "n/a"
        return (f"{self.source}: {self.copied_convs} convs copied, batch-norm calibrated on "
                f"{self.calibration_images} training images (train/eval cosine per "
                f"backbone layer {spread}); not copied: {', '.join(self.skipped) or 'none'}")


def calibration_batches(images: Sequence[Path], imgsz: int, batch: int = 16
                        ) -> Iterable[NDArray[np.float32]]:
    """Training images as the network's input (letterboxed, RGB, [0, 1])."""
    frames: list[NDArray[np.uint8]] = []
    for path in images:
        frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if frame is None:
            continue
        frames.append(np.asarray(frame, dtype=np.uint8))
        if len(frames) == batch:
            yield to_batch(frames, imgsz)[0]
            frames = []
    if frames:
        yield to_batch(frames, imgsz)[0]


def build_start(nc: int, images: Sequence[Path], imgsz: int, *,
                onnx_path: Path | None = None, cfg: str = "yolov8n.yaml"
                ) -> tuple[Any, StartReport]:
    """An ultralytics ``DetectionModel`` for ``nc`` classes from nudenet's weights, its
    batch-norms calibrated on ``images``."""
    import torch
    from torch import nn
    from ultralytics.nn.modules import Conv
    from ultralytics.nn.tasks import DetectionModel

    onnx_path = onnx_path or nudenet_onnx()
    fused = fused_weights(onnx_path)
    model = DetectionModel(cfg, nc=nc, verbose=False)
    report = StartReport(source=NUDENET_NAME)
    biases: dict[str, torch.Tensor] = {}
    convs: dict[str, Any] = {}
    used: set[str] = set()
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, Conv) and isinstance(module.bn, nn.BatchNorm2d):
                w, b = fused.get(f"{name}.conv.weight"), fused.get(f"{name}.conv.bias")
                if w is None or b is None or tuple(w.shape) != tuple(module.conv.weight.shape):
                    report.skipped.append(name)
                    continue
                module.conv.weight.copy_(torch.from_numpy(w))
                bn = module.bn
                # "Add b" for now: eval mode then reproduces the fused network.
                bn.running_mean.zero_()
                bn.running_var.fill_(1.0 - bn.eps)
                bn.weight.fill_(1.0)
                bn.bias.copy_(torch.from_numpy(b))
                biases[name] = torch.from_numpy(b)
                convs[name] = module
                used.update((f"{name}.conv.weight", f"{name}.conv.bias"))
            elif type(module) is nn.Conv2d and module.bias is not None:  # the head's last convs
                w, b = fused.get(f"{name}.weight"), fused.get(f"{name}.bias")
                if w is None or b is None or tuple(w.shape) != tuple(module.weight.shape):
                    report.skipped.append(name)
                    continue
                module.weight.copy_(torch.from_numpy(w))
                module.bias.copy_(torch.from_numpy(b))
                used.update((f"{name}.weight", f"{name}.bias"))
    report.copied_convs = len(convs)
    if not convs:
        raise StartError(f"{onnx_path}: no weights match {cfg}")

    # Each conv's bias-free output z, per channel: sum, sum of squares, count.
    stats: dict[str, list[torch.Tensor]] = {}

    def hook(name: str) -> Any:
        def record(_m: Any, _inp: Any, out: torch.Tensor) -> None:
            z = out.detach().double()
            s = stats.setdefault(name, [torch.zeros(z.shape[1], dtype=torch.float64),
                                        torch.zeros(z.shape[1], dtype=torch.float64),
                                        torch.zeros((), dtype=torch.float64)])
            s[0] += z.sum(dim=(0, 2, 3))
            s[1] += (z * z).sum(dim=(0, 2, 3))
            s[2] += z.shape[0] * z.shape[2] * z.shape[3]
        return record

    handles = [m.conv.register_forward_hook(hook(n)) for n, m in convs.items()]
    model.eval()
    seen = 0
    with torch.no_grad():
        for x in calibration_batches(images, imgsz):
            model(torch.from_numpy(x))
            seen += x.shape[0]
    for h in handles:
        h.remove()
    if not seen:
        raise StartError("no readable calibration images")
    report.calibration_images = seen
    with torch.no_grad():
        for name, module in convs.items():
            total, squares, n = stats[name]
            mean = total / n
            var = (squares / n - mean * mean).clamp_min(0.0)
            bn = module.bn
            bn.running_mean.copy_(mean.float())
            bn.running_var.copy_(var.float())
            bn.weight.copy_(torch.sqrt(var + bn.eps).float())
            bn.bias.copy_(mean.float() + biases[name])
    report.train_eval_cosine = train_eval_agreement(model, images, imgsz)
    model.eval()
    return model, report


def train_eval_agreement(model: Any, images: Sequence[Path], imgsz: int,
                         layers: Sequence[int] = (2, 4, 6, 9)) -> dict[str, float]:
    """Cosine similarity of backbone layer outputs in train mode vs eval mode on one
    batch: near 1 when the batch-norms agree with the copied features (DESIGN measured
    0.69 down to 0.16 without calibration)."""
    import torch

    x = next(iter(calibration_batches(images[:16], imgsz)), None)
    if x is None:
        return {}
    outputs: dict[str, dict[int, torch.Tensor]] = {"train": {}, "eval": {}}
    handles = []
    mode = ["eval"]
    for i in layers:
        def record(_m: Any, _inp: Any, out: torch.Tensor, i: int = i) -> None:
            outputs[mode[0]][i] = out.detach().flatten()
        handles.append(model.model[i].register_forward_hook(record))
    saved = {k: v.clone() for k, v in model.state_dict().items() if "running" in k
             or "num_batches" in k}
    with torch.no_grad():
        model.eval()
        model(torch.from_numpy(x))
        mode[0] = "train"
        model.train()
        model(torch.from_numpy(x))
    model.load_state_dict(saved, strict=False)  # train mode moved the running statistics
    model.eval()
    for h in handles:
        h.remove()
    cos = torch.nn.functional.cosine_similarity
    return {f"model.{i}": round(float(cos(outputs["train"][i], outputs["eval"][i], dim=0)), 4)
            for i in layers}


def save_start(model: Any, path: Path, report: StartReport) -> Path:
    """The start as an ultralytics checkpoint that ``YOLO(path)`` loads and trains."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model, "train_args": {}, "date": None, "version": "ganzhi",
                "ganzhi_start": report.summary()}, path)
    return path
