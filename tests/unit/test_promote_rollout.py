"""The promotion gate and the rollout to a box, with the shipped mask model and images of
its public dataset (no training): a model as good passes and is installed with its
figures; a worse one is refused and nothing changes; a box switches versions atomically,
keeps two earlier ones and refuses a model that does not run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from ganzhi.contracts import Violation
from vision.card import ClassMetrics, GateSet, load_card, save_card
from vision.labelling import import_yolo
from vision.promote import EvalSet, main, promote, site_set, verdict
from vision.rollout import RolloutError, activate, check_model, install

ROOT = Path(__file__).resolve().parents[2]
MASK = ROOT / "models" / "mask"
DATA = ROOT.parent / "shared" / "datasets" / "face-mask"

needs_data = pytest.mark.skipif(not (DATA / "images" / "val").is_dir(),
                                reason="needs ../shared/datasets")


def m(map50: float) -> ClassMetrics:
    return ClassMetrics(precision=0.5, recall=0.5, map50=map50, map50_95=map50 / 2)


def test_verdict_refuses_a_model_worse_on_either_set() -> None:
    sets = [GateSet(name="public", images=10, current=m(0.7), candidate=m(0.72)),
            GateSet(name="site", images=5, current=m(0.5), candidate=m(0.49))]
    ok, lines = verdict(sets)
    assert not ok and "site (5 images): mAP50 0.490 against 0.500: WORSE" in lines
    assert verdict(sets, tolerance=0.02)[0]
    new = [GateSet(name="site", images=5, current=None, candidate=m(0.3))]
    assert verdict(new)[0]  # nothing to replace
    assert not verdict([GateSet(name="site", images=0, current=None, candidate=m(1))])[0]


def small_public(tmp_path: Path, n: int = 12) -> EvalSet:
    images = sorted((DATA / "images" / "val").glob("*.jpg"))[:n]
    meta = yaml.safe_load((DATA / "data.yaml").read_text())
    names = meta["names"]
    classes = [names[i] for i in sorted(names)] if isinstance(names, dict) else list(names)
    return EvalSet("public", images, DATA / "labels" / "val", classes)


def worse_copy(tmp_path: Path) -> Path:
    """The same weights run at 96 px instead of 512: a much worse model."""
    bad = tmp_path / "worse"
    shutil.copytree(MASK, bad)
    card = load_card(bad)
    card.input_size, card.version = 96, "2026.12.01-worse"
    save_card(bad, card)
    return bad


@needs_data
def test_the_gate_installs_a_model_as_good_and_refuses_a_worse_one(tmp_path: Path) -> None:
    public = small_public(tmp_path)
    # A site dataset: some of the public images, labelled, imported like a labeller's work.
    src = tmp_path / "labelled"
    (src / "images").mkdir(parents=True)
    (src / "labels").mkdir()
    for img in sorted((DATA / "images" / "val").glob("*.jpg"))[12:40]:
        shutil.copy(img, src / "images" / img.name)
        shutil.copy(DATA / "labels" / "val" / f"{img.stem}.txt", src / "labels")
    (src / "classes.txt").write_text("mask\nno_mask\nmask_incorrect\n")
    import_yolo(src, tmp_path / "site")
    site = site_set(tmp_path / "site")
    assert site.images and len(site.images) < 28  # the held-out part only

    shipped = tmp_path / "shipped"
    shutil.copytree(MASK, shipped)
    before = (shipped / "model.onnx").read_bytes()
    ok, lines = promote(worse_copy(tmp_path), shipped, [public, site], shipped, 0.0, "test")
    assert not ok and any("WORSE" in line for line in lines), lines
    assert (shipped / "model.onnx").read_bytes() == before
    assert load_card(shipped).version == load_card(MASK).version

    same = tmp_path / "same"
    shutil.copytree(MASK, same)
    card = load_card(same)
    card.version = "2026.12.01"
    save_card(same, card)
    ok, lines = promote(same, shipped, [public, site], shipped, 0.0, "test")
    assert ok, lines
    installed = load_card(shipped)
    assert installed.version == "2026.12.01" and installed.promotion is not None
    assert installed.promotion.replaced == f"mask@{load_card(MASK).version}"
    assert [s.name for s in installed.promotion.sets] == ["public", "site"]


@needs_data
def test_the_gate_command_exits_3_when_refused(tmp_path: Path) -> None:
    shipped = tmp_path / "shipped"
    shutil.copytree(MASK, shipped)
    sub = tmp_path / "public"
    for part in ("images/val", "labels/val"):
        (sub / part).mkdir(parents=True)
    for img in sorted((DATA / "images" / "val").glob("*.jpg"))[:10]:
        shutil.copy(img, sub / "images/val")
        shutil.copy(DATA / "labels/val" / f"{img.stem}.txt", sub / "labels/val")
    shutil.copy(DATA / "data.yaml", sub / "data.yaml")
    assert main(["--candidate", str(worse_copy(tmp_path)), "--current", str(shipped),
                 "--public", str(sub)]) == 3


def test_rollout_switches_versions_keeps_two_and_refuses_a_broken_model(
        tmp_path: Path) -> None:
    root = tmp_path / "box-models"
    versions = []
    for n in range(4):
        v = tmp_path / f"v{n}"
        shutil.copytree(MASK, v, ignore=shutil.ignore_patterns("*.int8.onnx"))
        card = load_card(v)
        card.version, card.int8 = f"2026.12.0{n}", None
        save_card(v, card)
        versions.append(install(v, root))
        assert (root / "mask" / "current").resolve() == versions[-1].resolve()
        assert check_model(root / "mask" / "current") == f"mask@2026.12.0{n}"
    kept = sorted(p.name for p in (root / "mask").iterdir() if not p.is_symlink())
    assert kept == ["2026.12.01", "2026.12.02", "2026.12.03"]
    activate(root / "mask", "2026.12.02")  # roll back
    assert check_model(root / "mask" / "current") == "mask@2026.12.02"
    broken = tmp_path / "broken"
    shutil.copytree(tmp_path / "v3", broken)
    (broken / "model.onnx").write_bytes(b"not a model")
    card = load_card(broken)
    card.version = "2026.12.09"
    save_card(broken, card)
    with pytest.raises(RolloutError, match="does not run"):
        install(broken, root)
    assert check_model(root / "mask" / "current") == "mask@2026.12.02"
    assert not (root / "mask" / "2026.12.09").exists()


def test_the_new_scenario_violation_is_in_the_contract() -> None:
    assert Violation("uncovered_bin") is Violation.UNCOVERED_BIN
