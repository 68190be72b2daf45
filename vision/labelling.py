"""The labelling loop's files: review frames out to a labelling tool, labels back in.

``python -m vision.labelling export``: frames from a box's review queue
(:mod:`edge.camera.review`: the uncertain ones, and those of findings the task system
marked false positive) as a dataset a labelling tool reads, the model's boxes as
pre-annotations:

* ``--format yolo``: ``images/``, ``labels/`` (one ``class cx cy w h`` line per box,
  normalised), ``classes.txt`` and ``data.yaml`` (Ultralytics' layout; Label Studio:
  ``label-studio-converter import yolo``; CVAT: "Ultralytics YOLO Detection");
* ``--format coco``: ``images/`` and ``annotations.json`` (COCO; Label Studio and CVAT
  import it as is).

``python -m vision.labelling import``: the labelled files back (YOLO folder or COCO
JSON) into the site's dataset, every line checked (a bad one is refused with its file,
line and reason; nothing is imported from a file with an error). The site dataset is
``images/<sha>.jpg`` + ``labels/<sha>.txt`` + ``classes.txt``: images named by content,
so importing again replaces an image's labels instead of adding a copy. Class ids are
matched by *name*: a labeller may add classes (a chef hat, a bin lid), which are
appended to ``classes.txt``.

The site dataset's held-out part (:func:`split`, by a hash of each image's name, so it
never moves) is what ``python -m vision.promote`` evaluates on.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ganzhi.contracts import BoundingBox
from vision.review import ReviewItem, read_queue

SITE_HOLDOUT_PERCENT = 20


class LabelError(ValueError):
    """A labels file that cannot be imported: file, line and reason."""


# --- export ---------------------------------------------------------------------------


def select(items: Iterable[ReviewItem], false_positives: set[str], *,
           uncertain: bool = True) -> list[ReviewItem]:
    """The frames to label: uncertain ones (if ``uncertain``) and those of findings whose
    evidence snapshot the task system marked false positive."""
    return [i for i in items
            if (uncertain and i.reason == "uncertain")
            or (i.reason == "finding" and i.snapshot_sha256 in false_positives)]


def yolo_line(box: BoundingBox, width: int, height: int, cls: int) -> str:
    x1, x2 = sorted((max(0.0, min(box.x1, width)), max(0.0, min(box.x2, width))))
    y1, y2 = sorted((max(0.0, min(box.y1, height)), max(0.0, min(box.y2, height))))
    cx, cy = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height
    return f"{cls} {cx:.6f} {cy:.6f} {(x2 - x1) / width:.6f} {(y2 - y1) / height:.6f}"


def export_yolo(items: Sequence[ReviewItem], classes: Sequence[str], out: Path) -> int:
    index = {c: i for i, c in enumerate(classes)}
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    for item in items:
        shutil.copy(item.image, out / "images" / f"{item.id}.jpg")
        lines = [yolo_line(b, item.width, item.height, index[b.label])
                 for b in item.boxes if b.label in index]
        (out / "labels" / f"{item.id}.txt").write_text("".join(f"{ln}\n" for ln in lines))
    (out / "classes.txt").write_text("".join(f"{c}\n" for c in classes))
    (out / "data.yaml").write_text(yaml.safe_dump(
        {"path": ".", "train": "images", "val": "images", "names": list(classes)},
        sort_keys=False))
    _notes(items, out)
    return len(items)


def export_coco(items: Sequence[ReviewItem], classes: Sequence[str], out: Path) -> int:
    index = {c: i + 1 for i, c in enumerate(classes)}  # COCO category ids start at 1
    (out / "images").mkdir(parents=True, exist_ok=True)
    images: list[dict[str, object]] = []
    annotations: list[dict[str, object]] = []
    for n, item in enumerate(items, start=1):
        shutil.copy(item.image, out / "images" / f"{item.id}.jpg")
        images.append({"id": n, "file_name": f"{item.id}.jpg", "width": item.width,
                       "height": item.height})
        for b in item.boxes:
            if b.label not in index:
                continue
            w, h = abs(b.x2 - b.x1), abs(b.y2 - b.y1)
            annotations.append({
                "id": len(annotations) + 1, "image_id": n, "category_id": index[b.label],
                "bbox": [round(min(b.x1, b.x2), 2), round(min(b.y1, b.y2), 2), round(w, 2),
                         round(h, 2)],
                "area": round(w * h, 2), "iscrowd": 0, "score": round(b.score, 4)})
    (out / "annotations.json").write_text(json.dumps({
        "images": images, "annotations": annotations,
        "categories": [{"id": i, "name": c} for c, i in index.items()]}, indent=1))
    _notes(items, out)
    return len(items)


def _notes(items: Sequence[ReviewItem], out: Path) -> None:
    """Why each frame is there, for the labeller (not read back)."""
    rows = ["image,reason,camera,ts,model,snapshot_sha256"]
    rows += [f"{i.id}.jpg,{i.reason},{i.camera},{i.ts.isoformat()},{i.model or ''},"
             f"{i.snapshot_sha256 or ''}" for i in items]
    (out / "notes.csv").write_text("\n".join(rows) + "\n")


# --- import ---------------------------------------------------------------------------


@dataclass
class SiteDataset:
    """A site's own labelled images (see the module text)."""

    root: Path
    classes: list[str] = field(default_factory=list)

    @classmethod
    def open(cls, root: Path) -> SiteDataset:
        names = root / "classes.txt"
        classes = [c.strip() for c in names.read_text().splitlines() if c.strip()] \
            if names.is_file() else []
        return cls(root, classes)

    def class_id(self, name: str) -> int:
        if name not in self.classes:
            self.classes.append(name)
        return self.classes.index(name)

    def images(self) -> list[Path]:
        return sorted((self.root / "images").glob("*.jpg"))

    def save_classes(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "classes.txt").write_text("".join(f"{c}\n" for c in self.classes))


@dataclass(frozen=True)
class ImportReport:
    images: int
    boxes: int
    new_classes: list[str]


def parse_yolo(text: str, source: str, n_classes: int) -> list[tuple[int, float, float,
                                                                     float, float]]:
    out = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        where = f"{source}:{lineno}"
        if len(parts) != 5:
            raise LabelError(f"{where}: expected 'class cx cy w h', got {len(parts)} fields")
        try:
            cls = int(parts[0])
            cx, cy, w, h = (float(p) for p in parts[1:])
        except ValueError:
            raise LabelError(f"{where}: not numbers: {line.strip()!r}") from None
        if not 0 <= cls < n_classes:
            raise LabelError(f"{where}: class {cls} is not in classes.txt (0-{n_classes - 1})")
        if not all(0 <= v <= 1 for v in (cx, cy, w, h)) or w <= 0 or h <= 0:
            raise LabelError(f"{where}: box outside the image or empty: {line.strip()!r}")
        out.append((cls, cx, cy, w, h))
    return out


def _content_name(image: Path) -> str:
    return hashlib.sha256(image.read_bytes()).hexdigest()[:16]


def import_yolo(src: Path, dst: Path) -> ImportReport:
    """A labelled YOLO folder (``images/``, ``labels/``, ``classes.txt`` or ``data.yaml``)
    into the site dataset ``dst``. All files are checked before anything is written."""
    names = _yolo_classes(src)
    staged: list[tuple[Path, list[tuple[str, float, float, float, float]]]] = []
    for image in sorted((src / "images").glob("*")):
        if image.suffix.lower() not in (".jpg", ".jpeg", ".png"):
            continue
        label = src / "labels" / f"{image.stem}.txt"
        rows = parse_yolo(label.read_text(), str(label), len(names)) if label.is_file() else []
        staged.append((image, [(names[c], cx, cy, w, h) for c, cx, cy, w, h in rows]))
    if not staged:
        raise LabelError(f"{src}: no images under images/")
    return _write_site(staged, dst, names)


def import_coco(annotations: Path, dst: Path) -> ImportReport:
    """A labelled COCO JSON (images beside it under ``images/`` or next to it)."""
    try:
        doc = json.loads(annotations.read_text())
        cats = {int(c["id"]): str(c["name"]) for c in doc["categories"]}
        imgs = {int(i["id"]): i for i in doc["images"]}
    except (ValueError, KeyError, TypeError) as exc:
        raise LabelError(f"{annotations}: not a COCO file ({exc})") from None
    rows: dict[int, list[tuple[str, float, float, float, float]]] = {i: [] for i in imgs}
    for n, a in enumerate(doc.get("annotations", []), start=1):
        where = f"{annotations}: annotation {a.get('id', n)}"
        try:
            image = imgs[int(a["image_id"])]
            name = cats[int(a["category_id"])]
            x, y, w, h = (float(v) for v in a["bbox"])
            iw, ih = float(image["width"]), float(image["height"])
        except KeyError as exc:
            raise LabelError(f"{where}: unknown image or category {exc}") from None
        except (ValueError, TypeError):
            raise LabelError(f"{where}: bbox must be [x, y, width, height]") from None
        if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > iw + 0.5 or y + h > ih + 0.5:
            raise LabelError(f"{where}: box outside the {iw:.0f}x{ih:.0f} image or empty")
        rows[int(a["image_id"])].append(
            (name, (x + w / 2) / iw, (y + h / 2) / ih, min(w / iw, 1.0), min(h / ih, 1.0)))
    staged = []
    for image_id, meta in imgs.items():
        path = annotations.parent / "images" / str(meta["file_name"])
        if not path.is_file():
            path = annotations.parent / str(meta["file_name"])
        if not path.is_file():
            raise LabelError(f"{annotations}: image {meta['file_name']} not found")
        staged.append((path, rows[image_id]))
    return _write_site(staged, dst, [cats[k] for k in sorted(cats)])


def _yolo_classes(src: Path) -> list[str]:
    if (src / "classes.txt").is_file():
        return [c.strip() for c in (src / "classes.txt").read_text().splitlines() if c.strip()]
    if (src / "data.yaml").is_file():
        names = yaml.safe_load((src / "data.yaml").read_text()).get("names")
        if isinstance(names, dict):
            return [str(names[k]) for k in sorted(names)]
        if isinstance(names, list):
            return [str(n) for n in names]
    raise LabelError(f"{src}: no classes.txt or data.yaml with names")


def _write_site(staged: Sequence[tuple[Path, list[tuple[str, float, float, float, float]]]],
                dst: Path, names: Sequence[str]) -> ImportReport:
    site = SiteDataset.open(dst)
    before = list(site.classes)
    for name in names:  # every class of the source, in its order, even one without boxes
        site.class_id(name)
    (dst / "images").mkdir(parents=True, exist_ok=True)
    (dst / "labels").mkdir(parents=True, exist_ok=True)
    boxes = 0
    for image, rows in staged:
        name = _content_name(image)
        if image.suffix.lower() in (".jpg", ".jpeg"):
            shutil.copy(image, dst / "images" / f"{name}.jpg")
        else:
            import cv2

            pixels = cv2.imread(str(image))
            if pixels is None:
                raise LabelError(f"{image}: not an image")
            cv2.imwrite(str(dst / "images" / f"{name}.jpg"), pixels)
        lines = [f"{site.class_id(c)} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}"
                 for c, cx, cy, w, h in rows]
        (dst / "labels" / f"{name}.txt").write_text("".join(f"{ln}\n" for ln in lines))
        boxes += len(lines)
    site.save_classes()
    return ImportReport(len(staged), boxes, [c for c in site.classes if c not in before])


def split(names: Iterable[str], holdout_percent: int = SITE_HOLDOUT_PERCENT
          ) -> tuple[list[str], list[str]]:
    """(train, held out) by a hash of each name: stable as the dataset grows."""
    train: list[str] = []
    held: list[str] = []
    for n in sorted(names):
        bucket = int(hashlib.sha1(n.encode()).hexdigest(), 16) % 100
        (held if bucket < holdout_percent else train).append(n)
    return train, held


# --- command line ---------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vision.labelling", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("export", help="review frames -> a dataset for a labelling tool")
    ex.add_argument("--queue", type=Path, required=True, help="a box's review queue folder")
    ex.add_argument("--model", type=Path, required=True,
                    help="the model folder whose classes label the boxes (models/<name>)")
    ex.add_argument("--false-positives", type=Path, default=None,
                    help="snapshot SHA-256s of clues marked false positive, one per line")
    ex.add_argument("--no-uncertain", action="store_true", help="false positives only")
    ex.add_argument("--extra-class", action="append", default=[],
                    help="a class the labellers add (e.g. bin_open); repeatable")
    ex.add_argument("--format", choices=("yolo", "coco"), default="yolo")
    ex.add_argument("--out", type=Path, required=True)
    im = sub.add_parser("import", help="labelled files -> the site dataset")
    im.add_argument("source", type=Path, help="a YOLO folder or a COCO annotations JSON")
    im.add_argument("--into", type=Path, required=True, help="the site dataset folder")
    a = ap.parse_args(argv)
    try:
        if a.command == "export":
            from vision.card import load_card

            classes = list(load_card(a.model).classes) + [
                c for c in a.extra_class if c not in load_card(a.model).classes]
            fps: set[str] = set()
            if a.false_positives is not None:
                fps = {ln.strip() for ln in a.false_positives.read_text().splitlines()
                       if ln.strip()}
            items = select(read_queue(a.queue), fps, uncertain=not a.no_uncertain)
            n = (export_yolo if a.format == "yolo" else export_coco)(items, classes, a.out)
            print(f"exported {n} frames ({sum(i.reason == 'uncertain' for i in items)} "
                  f"uncertain, {sum(i.reason == 'finding' for i in items)} false-positive "
                  f"findings) to {a.out} as {a.format}")
            return 0
        src: Path = a.source
        report = import_coco(src, a.into) if src.suffix == ".json" else import_yolo(src, a.into)
        print(f"imported {report.images} images, {report.boxes} boxes into {a.into}"
              + (f"; new classes: {', '.join(report.new_classes)}" if report.new_classes
                 else ""))
        return 0
    except (LabelError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
