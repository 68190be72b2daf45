"""Model cards: what a shipped model detects, how to run it, how well it did.

Each model lives in ``models/<name>/`` as ``model.onnx`` plus ``card.yaml``; the runtime
reads its input size, class names and thresholds from the card, and the camera agent its
``violations`` (which class means which kitchen violation).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ganzhi.contracts import Violation

CARD_FILE = "card.yaml"
RECALL_TOLERANCE = 0.01  # INT8 runs by default when no violation class lost more
MODEL_FILE = "model.onnx"


class ClassMetrics(BaseModel):
    model_config = ConfigDict(extra="forbid")

    precision: float
    recall: float
    map50: float
    map50_95: float
    instances: int | None = None


class Evaluation(BaseModel):
    """Measured on the dataset's validation split, at the card's input size."""

    model_config = ConfigDict(extra="forbid")

    split: str = "val"
    images: int
    all: ClassMetrics
    per_class: dict[str, ClassMetrics]


class Latency(BaseModel):
    """CPU latency per frame (batch 1, median of many runs), with the command used."""

    model_config = ConfigDict(extra="forbid")

    machine: str
    threads_1_ms: float
    threads_all_ms: float
    threads_all: int
    command: str


class Int8(BaseModel):
    """The model quantized to INT8 with ONNX Runtime (``python -m vision.quantize``):
    accuracy of both on the validation split, measured the same way in the same run."""

    model_config = ConfigDict(extra="forbid")

    file: str
    method: str
    calibration: str
    evaluator: str
    before: ClassMetrics  # fp32, all classes
    after: ClassMetrics  # int8
    before_per_class: dict[str, ClassMetrics]
    after_per_class: dict[str, ClassMetrics]
    latency_fp32_ms: float
    latency_int8_ms: float
    command: str

    def keeps_recall(self, classes: Iterable[str], tolerance: float = RECALL_TOLERANCE
                     ) -> bool:
        """Did each of ``classes`` (the violation classes) keep its recall on the val
        split, within ``tolerance``? (One instance of a 15-instance class is 0.067.)"""
        return all(self.after_per_class[c].recall >= self.before_per_class[c].recall
                   - tolerance for c in classes
                   if c in self.before_per_class and c in self.after_per_class)


class ThresholdChoice(BaseModel):
    """Per-class score thresholds of the alerting classes, chosen on the validation split
    (``python -m vision.thresholds``): for each, the score that maximises F-beta of its
    detections at IoU 0.5. ``before``: precision and recall at the card's single
    ``score_threshold``; ``after``: at the chosen ones (same images, same run; chosen and
    measured on the same split, so ``after`` is an optimistic estimate)."""

    model_config = ConfigDict(extra="forbid")

    method: str
    images: int
    beta: float
    before: dict[str, ClassMetrics]
    after: dict[str, ClassMetrics]
    command: str


class Training(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: str
    train_images: int
    val_images: int
    architecture: str = "yolov8n"
    init: str = "scratch"
    epochs: int
    imgsz: int
    batch: int
    device: str
    seconds: float
    command: str
    ultralytics: str


class GateSet(BaseModel):
    """One evaluation set of a promotion (``python -m vision.promote``)."""

    model_config = ConfigDict(extra="forbid")

    name: str  # "public" (the dataset's validation split) or "site" (held-out site data)
    images: int
    current: ClassMetrics | None = None  # the model it replaces; None: there was none
    candidate: ClassMetrics
    candidate_per_class: dict[str, ClassMetrics] = Field(default_factory=dict)


class Promotion(BaseModel):
    """Why this model was let out: both sets measured, neither worse than before."""

    model_config = ConfigDict(extra="forbid")

    replaced: str | None = None  # <name>@<version> of the model it replaced
    tolerance: float
    sets: list[GateSet]
    command: str


class ModelCard(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    version: str
    task: str = "detect"
    format: str = "yolov8-onnx"  # output (N, 4 + classes, anchors), boxes cx cy w h
    input_size: int = Field(gt=0, description="square input, pixels (letterboxed)")
    classes: list[str] = Field(min_length=1)
    score_threshold: float = Field(default=0.35, gt=0, lt=1)
    # Per class, where chosen on validation (threshold_choice); others use score_threshold.
    class_thresholds: dict[str, float] = Field(default_factory=dict)
    iou_threshold: float = Field(default=0.5, gt=0, lt=1)
    violations: dict[str, Violation] = Field(
        default_factory=dict,
        description="class name -> violation (the contracts' allow-list); other classes are "
                    "context")
    covers: list[str] = Field(default_factory=list, description="kitchen violations it detects")
    not_covered: list[str] = Field(default_factory=list)
    training: Training | None = None
    evaluation: Evaluation | None = None
    latency: Latency | None = None
    int8: Int8 | None = None
    threshold_choice: ThresholdChoice | None = None
    promotion: Promotion | None = None
    licence: str = ""
    notes: str = ""

    @model_validator(mode="after")
    def _violations_name_classes(self) -> ModelCard:
        unknown = set(self.violations) - set(self.classes)
        if unknown:
            raise ValueError(f"violations name unknown classes {sorted(unknown)}")
        unknown = set(self.class_thresholds) - set(self.classes)
        if unknown:
            raise ValueError(f"class_thresholds name unknown classes {sorted(unknown)}")
        bad = {c: v for c, v in self.class_thresholds.items() if not 0 < v < 1}
        if bad:
            raise ValueError(f"class_thresholds must be between 0 and 1: {bad}")
        return self


class CardError(ValueError):
    pass


def load_card(model_dir: Path) -> ModelCard:
    path = model_dir / CARD_FILE
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        return ModelCard.model_validate(data)
    except (OSError, yaml.YAMLError) as exc:
        raise CardError(f"{path}: {exc}") from exc
    except ValidationError as exc:
        raise CardError(f"{path}: {exc}") from exc


def save_card(model_dir: Path, card: ModelCard) -> Path:
    path = model_dir / CARD_FILE
    path.write_text(yaml.safe_dump(card.model_dump(mode="json", exclude_none=True),
                                   sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path
