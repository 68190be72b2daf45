"""Per-class score thresholds for the alerting classes, chosen on the validation split.

One threshold for every class (the card's ``score_threshold``, 0.35) is too low for a
class the model is sure of and too high for one it is not. For each class that raises a
violation, :func:`best_threshold` picks the score that maximises F-beta (beta < 1 weighs
precision more: every false alert is a clue an inspector opens) of its detections at
IoU 0.5; the camera agent then acts on that class's own threshold
(``class_thresholds`` in the card, :class:`vision.runtime.YoloDetector`)::

    python -m vision.thresholds models/mask --write-card

The figures before and after go into the card's ``threshold_choice``. They are measured
on the split the thresholds were chosen on, so ``after`` is optimistic; the choice is
still better grounded than one number for all classes. Other classes keep the card's
``score_threshold``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from vision.card import ClassMetrics, ThresholdChoice, load_card, save_card
from vision.evaluate import Accumulator, collect

LOWEST, HIGHEST = 0.05, 0.9  # never pick outside: too noisy / too deaf


@dataclass(frozen=True)
class Choice:
    threshold: float
    precision: float
    recall: float
    fbeta: float


def best_threshold(scores: NDArray[np.float64], tp: NDArray[np.bool_], labels: int,
                   beta: float = 1.0) -> Choice | None:
    """``scores`` best first with ``tp`` (true positive at IoU 0.5) for one class with
    ``labels`` labelled instances: the cut (keep every detection scoring at least the
    threshold) with the highest F-beta within [LOWEST, HIGHEST]. None: nothing to cut."""
    if not labels or not len(scores):
        return None
    ctp = np.cumsum(tp)
    precision = ctp / np.arange(1, len(tp) + 1)
    recall = ctp / labels
    b2 = beta * beta
    fbeta = (1 + b2) * precision * recall / np.maximum(b2 * precision + recall, 1e-12)
    # A cut may only fall where the next detection scores lower (ties stay together).
    last_of_tie = np.append(scores[1:] < scores[:-1], True)
    allowed = last_of_tie & (scores >= LOWEST) & (scores <= HIGHEST)
    if not allowed.any():
        return None
    i = int(np.argmax(np.where(allowed, fbeta, -1.0)))
    return Choice(threshold=round(float(scores[i]), 4), precision=round(float(precision[i]), 4),
                  recall=round(float(recall[i]), 4), fbeta=round(float(fbeta[i]), 4))


def choose(acc: Accumulator, classes: list[str], beta: float) -> dict[str, Choice]:
    out = {}
    for name in classes:
        c = acc.classes.index(name)
        if c not in acc.stats:
            continue
        scores, tp = acc.ranked(c)
        choice = best_threshold(scores, tp[:, 0] if len(tp) else tp.reshape(0), acc.stats[c]
                                .labels, beta)
        if choice is not None:
            out[name] = choice
    return out


def _at(acc: Accumulator, score_threshold: float, per_class: dict[str, float],
        classes: list[str]) -> dict[str, ClassMetrics]:
    acc.score_threshold, acc.class_thresholds = score_threshold, per_class
    _, per = acc.metrics()
    return {c: per[c] for c in classes if c in per}


def main(argv: list[str] | None = None) -> int:
    from vision.quantize import DATASETS, ROOT
    from vision.runtime import YoloDetector

    ap = argparse.ArgumentParser(prog="python -m vision.thresholds", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path, help="a model folder (models/<name>)")
    ap.add_argument("--dataset", type=Path, help="YOLO dataset (default: the model's)")
    ap.add_argument("--beta", type=float, default=1.0,
                    help="F-beta to maximise (below 1 favours precision)")
    ap.add_argument("--classes", default="",
                    help="comma-separated classes (default: the card's violation classes)")
    ap.add_argument("--write-card", action="store_true")
    a = ap.parse_args(argv)
    card = load_card(a.model)
    dataset = a.dataset or ROOT.parent / "shared" / "datasets" / DATASETS.get(card.name, "")
    val = sorted((dataset / "images" / "val").glob("*.jpg"))
    if not val:
        print(f"{dataset}: no images/val/*.jpg", file=sys.stderr)
        return 2
    classes = [c for c in a.classes.split(",") if c] or list(card.violations)
    unknown = set(classes) - set(card.classes)
    if unknown or not classes:
        print(f"--classes: {sorted(unknown) or 'none'} (model classes: {card.classes})",
              file=sys.stderr)
        return 2
    det = YoloDetector(a.model / "model.onnx", card, providers=["CPUExecutionProvider"])
    acc = collect(det, val, dataset / "labels" / "val", card.classes, label=card.name)
    chosen = choose(acc, classes, a.beta)
    thresholds = {c: ch.threshold for c, ch in chosen.items()}
    before = _at(acc, card.score_threshold, {}, classes)
    after = _at(acc, card.score_threshold, thresholds, classes)
    print(f"| class | threshold | precision | recall | (at {card.score_threshold}: P / R) |")
    print("|---|---|---|---|---|")
    for c in classes:
        b, t = before.get(c), after.get(c)
        if b is None or t is None:
            print(f"| {c} | – | – | – | no labelled instances |")
            continue
        print(f"| {c} | {thresholds.get(c, card.score_threshold)} | {t.precision:.3f} | "
              f"{t.recall:.3f} | {b.precision:.3f} / {b.recall:.3f} |")
    if a.write_card:
        card = card.model_copy(update={
            "class_thresholds": thresholds,
            "threshold_choice": ThresholdChoice(
                method=f"per class, the score maximising F{a.beta:g} at IoU 0.5 on the val "
                       f"split, within [{LOWEST}, {HIGHEST}]",
                images=len(val), beta=a.beta, before=before, after=after,
                command="python -m vision.thresholds " + " ".join(
                    argv if argv is not None else sys.argv[1:]))})
        save_card(a.model, card)
        print(f"[vision.thresholds] {a.model}/card.yaml: class_thresholds {thresholds}",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
