"""Train, evaluate and export a detector: ``python -m vision.train``.

One command from a YOLO-format dataset (``data.yaml`` + ``images/{train,val}`` +
``labels/{train,val}``: the datasets in ``../shared/datasets`` or a site's own labelled
footage) to ``models/<name>/model.onnx`` and its ``card.yaml``::

    python -m vision.train --dataset ../shared/datasets/face-mask --name mask \\
        --violations no_mask=no_mask,mask_incorrect=mask_worn_incorrectly \\
        --epochs 150 --imgsz 512 --device 0

Needs the ``train`` extra (ultralytics, torch); never the edge. Runs with no network:
ultralytics is told not to download or install anything, the model is built from
``yolov8n.yaml`` (from scratch, or ``--init nudenet``: nudenet's pretrained YOLOv8n,
batch-norm calibrated, see :mod:`vision.pretrained`) and the font it wants comes from a
local file.
The dataset is copied first (ultralytics writes ``labels/*.cache`` beside the labels).
Progress is ultralytics' own per-epoch line. CPU latency is measured separately on the
target machine (``benchmarks/vision_latency.py --write-card``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from vision.card import (
    MODEL_FILE,
    ClassMetrics,
    Evaluation,
    ModelCard,
    Training,
    load_card,
    save_card,
)

NUDENET_LICENCE = (
    "Start: nudenet's YOLOv8n (320n.onnx from the PyPI package nudenet 3.4; its ONNX "
    "metadata names the AGPL-3.0 of Ultralytics and the package ships AGPL-3.0 licence "
    "files, while its PyPI metadata says MIT); these weights derive from it.")

FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
)


def offline_environment(config_dir: Path) -> None:
    """What ultralytics needs to run with no network (set before importing it)."""
    target = config_dir / "Ultralytics"
    target.mkdir(parents=True, exist_ok=True)
    fonts = [Path(p) for p in FONT_CANDIDATES]
    try:
        import matplotlib

        fonts.append(Path(matplotlib.get_data_path()) / "fonts/ttf/DejaVuSans.ttf")
    except ImportError:
        pass
    font = next((f for f in fonts if f.is_file()), None)
    if font is None:
        raise SystemExit("no TTF font found for ultralytics (install fonts-dejavu-core)")
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        if not (target / name).exists():
            shutil.copy(font, target / name)
    os.environ.update(YOLO_OFFLINE="1", YOLO_AUTOINSTALL="False",
                      YOLO_CONFIG_DIR=str(config_dir))


def dataset_classes(src: Path) -> list[str]:
    meta = yaml.safe_load((src / "data.yaml").read_text(encoding="utf-8"))
    names = meta["names"]
    return [names[i] for i in sorted(names)] if isinstance(names, dict) else list(names)


def add_site_data(site: Path, dst: Path, classes: list[str]) -> dict[str, int]:
    """The site dataset's images into ``dst`` (its train part to train, its held-out part
    to val), labels renumbered to ``classes`` (extended by the site's new classes)."""
    from vision.labelling import SiteDataset, split

    ds = SiteDataset.open(site)
    remap = {}
    for i, name in enumerate(ds.classes):
        if name not in classes:
            classes.append(name)
        remap[i] = classes.index(name)
    train, held = split(p.stem for p in ds.images())
    for part, names in (("train", train), ("val", held)):
        (dst / "images" / part).mkdir(parents=True, exist_ok=True)
        (dst / "labels" / part).mkdir(parents=True, exist_ok=True)
        for n in names:
            shutil.copy(site / "images" / f"{n}.jpg", dst / "images" / part / f"site-{n}.jpg")
            rows = (site / "labels" / f"{n}.txt").read_text().split("\n")
            lines = [" ".join([str(remap[int(r.split()[0])]), *r.split()[1:]])
                     for r in rows if r.strip()]
            (dst / "labels" / part / f"site-{n}.txt").write_text(
                "".join(f"{ln}\n" for ln in lines))
    return {"train": len(train), "val": len(held)}


def prepare_dataset(src: Path | None, work: Path, site: Path | None = None
                    ) -> tuple[Path, list[str], dict[str, int]]:
    """Copy a YOLO dataset (and the site's, merged by class name) to ``work`` and write a
    data yaml with an absolute path."""
    dst = work / "dataset"
    if dst.exists():
        shutil.rmtree(dst)
    classes: list[str] = []
    if src is not None:
        classes = dataset_classes(src)
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.cache"))
    if site is not None:
        add_site_data(site, dst, classes)
    counts = {split: len(list((dst / "images" / split).glob("*"))) for split in ("train", "val")}
    if not counts["train"] or not counts["val"]:
        raise SystemExit(f"{src}: needs images/train and images/val (found {counts})")
    data = {"path": str(dst.resolve()), "train": "images/train", "val": "images/val",
            "nc": len(classes), "names": classes}
    path = dst / "ganzhi-data.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path, classes, counts


def _metrics(result: Any, classes: list[str], images: int) -> Evaluation:
    box = result.box
    per_class: dict[str, ClassMetrics] = {}
    counts = getattr(result, "nt_per_class", None)
    for i, cls in enumerate(result.ap_class_index):
        name = classes[int(cls)]
        p, r, ap50, ap = box.class_result(i)
        per_class[name] = ClassMetrics(
            precision=round(float(p), 4), recall=round(float(r), 4),
            map50=round(float(ap50), 4), map50_95=round(float(ap), 4),
            instances=int(counts[int(cls)]) if counts is not None else None)
    mp, mr, map50, map_ = box.mean_results()
    return Evaluation(images=images, all=ClassMetrics(
        precision=round(float(mp), 4), recall=round(float(mr), 4),
        map50=round(float(map50), 4), map50_95=round(float(map_), 4)), per_class=per_class)


def pretrained_start(data: Path, classes: list[str], a: argparse.Namespace, work: Path
                     ) -> tuple[Path, str]:
    """nudenet's YOLOv8n for ``classes``, calibrated on a sample of the training images;
    the checkpoint path and the card's ``init`` line."""
    import random

    from vision.pretrained import StartError, build_start, save_start

    train = sorted((data.parent / "images" / "train").iterdir())
    sample = random.Random(a.seed).sample(train, min(a.calibration_images, len(train)))
    try:
        model, report = build_start(len(classes), sample, a.imgsz)
    except StartError as exc:
        raise SystemExit(f"--init nudenet: {exc}") from exc
    print(f"[vision.train] start: {report.summary()}", flush=True)
    return save_start(model, work / "start.pt", report), report.summary()


def parse_violations(text: str, classes: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        cls, sep, violation = item.partition("=")
        if not sep or cls not in classes:
            raise SystemExit(f"--violations: {item!r} (classes: {classes})")
        out[cls] = violation
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vision.train", description=__doc__)
    ap.add_argument("--dataset", type=Path, default=None,
                    help="a public YOLO dataset folder")
    ap.add_argument("--site-data", type=Path, default=None,
                    help="a site's own labelled data (python -m vision.labelling import)")
    ap.add_argument("--no-gate", action="store_true",
                    help="write the model without the promotion gate (a first model)")
    ap.add_argument("--name", required=True, help="model name (models/<name>)")
    ap.add_argument("--out", type=Path, help="output folder (default models/<name>)")
    ap.add_argument("--violations", default="", help="class=violation,... (see docs)")
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--imgsz", type=int, default=416)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--device", default="cpu", help="cpu, or a CUDA index such as 0")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--patience", type=int, default=50)
    ap.add_argument("--hours", type=float, default=None,
                    help="train for this long instead (the schedule is fitted to it)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--init", choices=("scratch", "nudenet"), default="scratch",
                    help="random weights, or nudenet's YOLOv8n with calibrated batch-norm")
    ap.add_argument("--calibration-images", type=int, default=128,
                    help="--init nudenet: training images the batch-norms are measured on")
    ap.add_argument("--work", type=Path, help="scratch folder (default: var/train/<name>)")
    ap.add_argument("--version", default=time.strftime("%Y.%m.%d"))
    a = ap.parse_args(argv)
    if a.dataset is None and a.site_data is None:
        ap.error("--dataset and/or --site-data")

    work = (a.work or Path("var/train") / a.name).resolve()
    out = (a.out or Path("models") / a.name).resolve()
    offline_environment(work / "config")
    data, classes, counts = prepare_dataset(a.dataset, work, a.site_data)
    violations = parse_violations(a.violations, classes)

    import ultralytics
    from ultralytics import YOLO

    print(f"[vision.train] {a.name}: {counts['train']} train / {counts['val']} val images, "
          f"classes {classes}, {a.epochs} epochs at {a.imgsz} px on {a.device}", flush=True)
    init = "scratch"
    if a.init == "nudenet":
        start, init = pretrained_start(data, classes, a, work)
        model = YOLO(str(start))
    else:
        model = YOLO("yolov8n.yaml")
    started = time.time()
    # amp=False: ultralytics' AMP self-check downloads a model.
    model.train(data=str(data), epochs=a.epochs, imgsz=a.imgsz, batch=a.batch,
                device=a.device, workers=a.workers, patience=a.patience, seed=a.seed,
                pretrained=a.init != "scratch", amp=False, plots=False, project=str(work / "runs"),
                name=a.name, exist_ok=True, verbose=True,
                **({"time": a.hours} if a.hours else {}))
    seconds = time.time() - started
    trainer = getattr(model, "trainer", None)
    epochs_run = int(trainer.epoch) + 1 if trainer is not None else a.epochs
    best = YOLO(str(work / "runs" / a.name / "weights" / "best.pt"))
    result = best.val(data=str(data), imgsz=a.imgsz, batch=a.batch, device=a.device,
                      split="val", plots=False)
    evaluation = _metrics(result, classes, counts["val"])
    onnx = Path(best.export(format="onnx", imgsz=a.imgsz, opset=17, dynamic=True,
                            simplify=False))
    gated = not a.no_gate
    final = out
    if gated:  # the candidate goes through the promotion gate before it replaces `out`
        out = work / "candidate"
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(onnx, out / MODEL_FILE)
    per_epoch = work / "runs" / a.name / "results.csv"
    if per_epoch.is_file():
        shutil.copy(per_epoch, out / "training-results.csv")
    # What the model it replaces says of its data and scope still holds for the data.
    previous = load_card(final) if (final / "card.yaml").is_file() else None
    licence = previous.licence if previous is not None else ""
    if a.init == "nudenet" and NUDENET_LICENCE not in licence:
        licence = f"{licence} {NUDENET_LICENCE}".strip()
    card = ModelCard(
        name=a.name, version=a.version, input_size=a.imgsz, classes=classes,
        violations=violations, covers=sorted(set(violations.values())),
        training=Training(
            dataset=" + ".join(str(p) for p in (a.dataset, a.site_data) if p is not None),
            train_images=counts["train"], val_images=counts["val"],
            init=init, epochs=epochs_run, imgsz=a.imgsz, batch=a.batch, device=str(a.device),
            seconds=round(seconds, 1), ultralytics=ultralytics.__version__,
            command="python -m vision.train " + " ".join(argv or sys.argv[1:])),
        evaluation=evaluation,
        licence=licence,
        not_covered=previous.not_covered if previous is not None else [],
    )
    save_card(out, card)
    print(f"[vision.train] {out / MODEL_FILE}: mAP50 {evaluation.all.map50:.3f}, "
          f"mAP50-95 {evaluation.all.map50_95:.3f} on {counts['val']} val images", flush=True)
    if not gated:
        return 0
    from vision.promote import promote, public_set, site_set

    sets = ([public_set(a.dataset)] if a.dataset is not None else []) + (
        [site_set(a.site_data)] if a.site_data is not None else [])
    current = final if (final / MODEL_FILE).is_file() else None
    ok, lines = promote(out, current, sets, final, 0.0, card.training.command
                        if card.training else "python -m vision.train")
    for line in lines:
        print(f"[vision.train] gate: {line}", flush=True)
    if not ok:
        print(f"[vision.train] refused by the promotion gate: {final} unchanged; the "
              f"candidate stays in {out}", flush=True)
        return 3
    if a.dataset is not None and violations:  # the alerting classes' own thresholds
        from vision import thresholds

        thresholds.main([str(final), "--dataset", str(a.dataset), "--write-card"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
