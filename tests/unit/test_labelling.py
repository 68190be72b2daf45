"""Review frames out to a labelling tool and labels back in (YOLO and COCO), every bad
line refused with its place and reason; the site dataset's stable held-out split."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.camera.review import ReviewParams, ReviewQueue
from ganzhi.contracts import BoundingBox
from vision.labelling import (
    LabelError,
    SiteDataset,
    export_coco,
    export_yolo,
    import_coco,
    import_yolo,
    main,
    select,
    split,
)
from vision.review import read_queue

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
CLASSES = ["mask", "no_mask"]


@pytest.fixture
def queue_dir(tmp_path: Path) -> Path:
    root = tmp_path / "queue"
    q = ReviewQueue(ReviewParams(root, min_interval_s=0), "cam-1", {"no_mask"})
    for n in range(3):
        img = np.full((100, 200, 3), 40 * n, np.uint8)
        q.offer(n, img, T0, [BoundingBox(label="no_mask", score=0.3, x1=20, y1=10, x2=60,
                                         y2=90)], "mask@1")
    q.finding(np.full((100, 200, 3), 200, np.uint8), T0,
              [BoundingBox(label="no_mask", score=0.9, x1=0, y1=0, x2=100, y2=50)],
              "mask@1", "f" * 64)
    q.finding(np.full((100, 200, 3), 210, np.uint8), T0,
              [BoundingBox(label="no_mask", score=0.9, x1=0, y1=0, x2=100, y2=50)],
              "mask@1", "e" * 64)
    return root


def test_export_picks_uncertain_and_false_positive_frames(queue_dir: Path) -> None:
    items = read_queue(queue_dir)
    chosen = select(items, {"f" * 64})
    assert sorted(i.reason for i in chosen) == ["finding", "uncertain", "uncertain",
                                                "uncertain"]
    assert [i.snapshot_sha256 for i in chosen if i.reason == "finding"] == ["f" * 64]
    assert len(select(items, {"f" * 64}, uncertain=False)) == 1


def test_yolo_export_has_pre_annotations_and_imports_back(queue_dir: Path,
                                                          tmp_path: Path) -> None:
    out = tmp_path / "yolo"
    items = select(read_queue(queue_dir), {"f" * 64})
    assert export_yolo(items, CLASSES, out) == 4
    first = next(i for i in items if i.reason == "uncertain")
    label = (out / "labels" / f"{first.id}.txt").read_text().split()
    assert label == ["1", "0.200000", "0.500000", "0.200000", "0.800000"]
    assert (out / "classes.txt").read_text() == "mask\nno_mask\n"
    assert "snapshot_sha256" in (out / "notes.csv").read_text()
    # The labeller adds a class and a box of it to one frame.
    (out / "classes.txt").write_text("mask\nno_mask\nchef_hat\n")
    with (out / "labels" / f"{items[1].id}.txt").open("a") as f:
        f.write("2 0.5 0.5 0.1 0.1\n")
    site = tmp_path / "site"
    report = import_yolo(out, site)
    assert (report.images, report.boxes, report.new_classes) == (4, 5, ["mask", "no_mask",
                                                                        "chef_hat"])
    assert SiteDataset.open(site).classes == ["mask", "no_mask", "chef_hat"]
    again = import_yolo(out, site)  # the same images: replaced, not added
    assert again.new_classes == [] and len(SiteDataset.open(site).images()) == 4


def test_coco_export_imports_back_the_same_boxes(queue_dir: Path, tmp_path: Path) -> None:
    items = select(read_queue(queue_dir), {"f" * 64})
    out = tmp_path / "coco"
    export_coco(items, CLASSES, out)
    doc = json.loads((out / "annotations.json").read_text())
    assert doc["categories"] == [{"id": 1, "name": "mask"}, {"id": 2, "name": "no_mask"}]
    assert [20.0, 10.0, 40.0, 80.0] in [a["bbox"] for a in doc["annotations"]]
    site = tmp_path / "site"
    report = import_coco(out / "annotations.json", site)
    assert (report.images, report.boxes) == (4, 4)
    lines = sorted(p.read_text() for p in (site / "labels").glob("*.txt"))
    assert "1 0.200000 0.500000 0.200000 0.800000\n" in lines
    # Class ids by name: the site dataset already had another order.
    (site / "classes.txt").write_text("no_mask\nmask\n")
    import_coco(out / "annotations.json", site)
    lines = sorted(p.read_text() for p in (site / "labels").glob("*.txt"))
    assert "0 0.200000 0.500000 0.200000 0.800000\n" in lines


@pytest.mark.parametrize(("line", "reason"), [
    ("1 0.5 0.5 0.2", "expected 'class cx cy w h'"),
    ("x 0.5 0.5 0.2 0.2", "not numbers"),
    ("7 0.5 0.5 0.2 0.2", "class 7 is not in classes.txt"),
    ("1 1.5 0.5 0.2 0.2", "outside the image or empty"),
    ("1 0.5 0.5 0 0.2", "outside the image or empty"),
])
def test_a_bad_yolo_line_is_refused_and_nothing_imported(tmp_path: Path, line: str,
                                                         reason: str) -> None:
    src = tmp_path / "labelled"
    (src / "images").mkdir(parents=True)
    (src / "labels").mkdir()
    (src / "classes.txt").write_text("mask\nno_mask\n")
    for n in range(2):
        cv2.imwrite(str(src / "images" / f"f{n}.jpg"), np.full((50, 50, 3), n, np.uint8))
        (src / "labels" / f"f{n}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (src / "labels" / "f1.txt").write_text(f"0 0.5 0.5 0.2 0.2\n{line}\n")
    with pytest.raises(LabelError, match=reason) as err:
        import_yolo(src, tmp_path / "site")
    assert "f1.txt:2" in str(err.value)
    assert not (tmp_path / "site").exists()
    assert main(["import", str(src), "--into", str(tmp_path / "site")]) == 2


@pytest.mark.parametrize(("change", "reason"), [
    ({"bbox": [0, 0, 500, 10]}, "outside"),
    ({"bbox": "big"}, r"bbox must be \[x, y, width, height\]"),
    ({"category_id": 9}, "unknown image or category"),
])
def test_a_bad_coco_annotation_is_refused(tmp_path: Path, change: dict[str, object],
                                          reason: str) -> None:
    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "a.jpg"), np.zeros((40, 60, 3), np.uint8))
    ann = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 10, 10], **change}
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg", "width": 60,
                                            "height": 40}],
                                "annotations": [ann],
                                "categories": [{"id": 1, "name": "mask"}]}))
    with pytest.raises(LabelError, match=reason):
        import_coco(path, tmp_path / "site")
    path.write_text("[]")
    with pytest.raises(LabelError, match="not a COCO file"):
        import_coco(path, tmp_path / "site")


def test_the_held_out_split_is_stable_as_the_dataset_grows() -> None:
    names = [f"{n:016x}" for n in range(500)]
    train, held = split(names)
    assert 0.12 < len(held) / len(names) < 0.28 and not set(train) & set(held)
    train2, held2 = split([*names, *(f"new{n}" for n in range(100))])
    assert set(held) <= set(held2) and set(train) <= set(train2)
