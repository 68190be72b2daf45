"""The promotion gate: ``python -m vision.promote``.

A candidate model (from ``python -m vision.train``) replaces the shipped one only if it
is not worse on either evaluation set, both measured here the same way
(:func:`vision.evaluate.evaluate`, mAP50 over the classes each set labels):

* ``public``: the public dataset's validation split (what the model was first built on);
* ``site``: the held-out part of the site's own labelled data
  (:func:`vision.labelling.split`), which the candidate never trained on.

A class the current model does not know counts 0 for it, so a model that adds a
scenario wins there; it must still not lose on the rest. Passed: the candidate is
copied into ``--install`` (default: the current model's folder) with the figures in its
card (``promotion``). Refused: exit 3, the reason, nothing installed.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from numpy.typing import NDArray

from ganzhi.contracts import BoundingBox
from vision.card import CARD_FILE, MODEL_FILE, ClassMetrics, GateSet, Promotion, load_card
from vision.card import save_card as _save_card
from vision.evaluate import evaluate
from vision.labelling import SiteDataset, split
from vision.runtime import YoloDetector


@dataclass(frozen=True)
class EvalSet:
    name: str
    images: list[Path]
    labels: Path
    classes: list[str]


def verdict(sets: Sequence[GateSet], tolerance: float = 0.0) -> tuple[bool, list[str]]:
    """Pass only if the candidate's mAP50 is at least the current one's (less
    ``tolerance``) on every set. Pure: the figures in, the decision and its lines out."""
    ok, lines = True, []
    for s in sets:
        if s.images == 0:
            ok = False
            lines.append(f"{s.name}: no images to evaluate on: refused (nothing shows the "
                         "candidate is not worse)")
            continue
        cur = s.current.map50 if s.current is not None else 0.0
        better = s.candidate.map50 >= cur - tolerance
        ok = ok and better
        lines.append(f"{s.name} ({s.images} images): mAP50 {s.candidate.map50:.3f} against "
                     f"{cur:.3f}: {'not worse' if better else 'WORSE'}")
    return ok, lines


class _OnlyClasses:
    """A detector whose boxes are limited to the classes a set labels."""

    def __init__(self, det: YoloDetector, classes: set[str]) -> None:
        self.det, self.classes = det, classes

    @property
    def score_threshold(self) -> float:
        return self.det.score_threshold

    @score_threshold.setter
    def score_threshold(self, value: float) -> None:
        self.det.score_threshold = value

    @property
    def class_thresholds(self) -> dict[str, float]:
        return self.det.class_thresholds

    @class_thresholds.setter
    def class_thresholds(self, value: dict[str, float]) -> None:
        self.det.class_thresholds = value

    def detect(self, frames: Sequence[NDArray[np.uint8]]) -> list[list[BoundingBox]]:
        return [[b for b in boxes if b.label in self.classes]
                for boxes in self.det.detect(frames)]


def measure(model_dir: Path, s: EvalSet) -> tuple[ClassMetrics, dict[str, ClassMetrics]]:
    det = YoloDetector.from_dir(model_dir)
    wanted = set(s.classes)
    mean, per = evaluate(_OnlyClasses(det, wanted), s.images, s.labels, s.classes,
                         det.card.score_threshold, label=f"{model_dir.name} on {s.name}",
                         class_thresholds=det.card.class_thresholds)
    if not per:  # the model knows none of the set's classes
        return ClassMetrics(precision=0, recall=0, map50=0, map50_95=0), {}
    # Classes labelled in the set but unknown to the model score 0 (evaluate() skips a
    # class with no labels, not one with no detections).
    return mean, per


def public_set(dataset: Path) -> EvalSet:
    meta = yaml.safe_load((dataset / "data.yaml").read_text())
    names = meta["names"]
    classes = [names[i] for i in sorted(names)] if isinstance(names, dict) else list(names)
    images = sorted((dataset / "images" / "val").glob("*"))
    return EvalSet("public", images, dataset / "labels" / "val", classes)


def site_set(site: Path) -> EvalSet:
    ds = SiteDataset.open(site)
    _train, held = split(p.stem for p in ds.images())
    return EvalSet("site", [site / "images" / f"{n}.jpg" for n in held], site / "labels",
                   ds.classes)


def promote(candidate: Path, current: Path | None, sets: Sequence[EvalSet], install: Path,
            tolerance: float, command: str) -> tuple[bool, list[str]]:
    results = []
    for s in sets:
        cand, per = measure(candidate, s)
        cur = measure(current, s)[0] if current is not None else None
        results.append(GateSet(name=s.name, images=len(s.images), current=cur,
                               candidate=cand, candidate_per_class=per))
    ok, lines = verdict(results, tolerance)
    if not ok:
        return False, lines
    card = load_card(candidate)
    replaced = None
    if current is not None:
        old = load_card(current)
        replaced = f"{old.name}@{old.version}"
    card.promotion = Promotion(replaced=replaced, tolerance=tolerance, sets=results,
                               command=command)
    install.mkdir(parents=True, exist_ok=True)
    staging = install.parent / f".{install.name}.new"
    if staging.exists():
        shutil.rmtree(staging)
    shutil.copytree(candidate, staging)
    _save_card(staging, card)
    # Swap the folder's files (the model, then its card) so a reader never sees a card
    # that does not describe the model beside it for long.
    for name in (MODEL_FILE, CARD_FILE):
        (staging / name).replace(install / name)
    # The old model's INT8 copy and training log no longer match: replaced or removed.
    for stale in ("model.int8.onnx", "training-results.csv"):
        if not (staging / stale).exists():
            (install / stale).unlink(missing_ok=True)
        else:
            (staging / stale).replace(install / stale)
    shutil.rmtree(staging, ignore_errors=True)
    lines.append(f"installed {card.name}@{card.version} into {install}"
                 + (f", replacing {replaced}" if replaced else ""))
    return True, lines


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vision.promote", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--candidate", type=Path, required=True, help="a trained model folder")
    ap.add_argument("--current", type=Path, default=None,
                    help="the shipped model it would replace (models/<name>)")
    ap.add_argument("--public", type=Path, action="append", default=[],
                    help="a public YOLO dataset whose val split it must not lose on")
    ap.add_argument("--site", type=Path, default=None, help="the site dataset")
    ap.add_argument("--install", type=Path, default=None,
                    help="where a passed candidate goes (default: --current)")
    ap.add_argument("--tolerance", type=float, default=0.0, help="mAP50 it may lose")
    a = ap.parse_args(argv)
    install = a.install or a.current
    if install is None:
        ap.error("--install is needed without --current")
    sets = [public_set(p) for p in a.public]
    if a.site is not None:
        sets.append(site_set(a.site))
    if not sets:
        ap.error("give --public and/or --site: the gate needs data to compare on")
    command = "python -m vision.promote " + " ".join(argv if argv is not None else sys.argv[1:])
    ok, lines = promote(a.candidate, a.current, sets, install, a.tolerance, command)
    for line in lines:
        print(line)
    if not ok:
        print("refused: the candidate is worse on a set; nothing installed", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
