"""A model onto an edge box: ``python -m vision.rollout MODEL_DIR --root DIR``.

Each version gets its own folder (``<root>/<name>/<version>/``: the ONNX file(s) and the
card), checked before it goes live (the card parses, every file it names is there, the
model opens and runs on a blank frame), then ``<root>/<name>/current`` is switched to it
atomically. The camera configuration names ``<root>/<name>/current``; restart the agent
(``systemctl restart ganzhi-edge@<box>``) and its detections carry the new
``<name>@<version>``. The two previous versions are kept: roll back by pointing
``current`` at one of them (``--activate VERSION``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vision.card import CARD_FILE, MODEL_FILE, CardError, load_card

KEEP = 3
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")


class RolloutError(RuntimeError):
    pass


def check_model(model_dir: Path) -> str:
    """``name@version`` of a model folder that loads and runs; RolloutError otherwise."""
    from vision.runtime import YoloDetector

    try:
        card = load_card(model_dir)
    except CardError as exc:
        raise RolloutError(str(exc)) from None
    if not _VERSION.match(card.version) or not _VERSION.match(card.name):
        raise RolloutError(f"{model_dir}: name {card.name!r} or version {card.version!r} "
                           "is not a plain word")
    files = [MODEL_FILE] + ([card.int8.file] if card.int8 is not None else [])
    missing = [f for f in files if not (model_dir / f).is_file()]
    if missing:
        raise RolloutError(f"{model_dir}: missing {missing}")
    try:
        det = YoloDetector.from_dir(model_dir)
        det.detect([np.zeros((card.input_size, card.input_size, 3), np.uint8)])
    except Exception as exc:  # ONNX Runtime raises its own types
        raise RolloutError(f"{model_dir}: the model does not run: {exc}") from None
    return f"{card.name}@{card.version}"


def install(src: Path, root: Path) -> Path:
    """Install ``src`` as a new version under ``root`` and make it current."""
    label = check_model(src)
    name, version = label.split("@", 1)
    home = root / name
    target = home / version
    if target.exists():
        if check_model(target) != label:
            raise RolloutError(f"{target} exists and is not {label}")
    else:
        home.mkdir(parents=True, exist_ok=True)
        staging = home / f".{version}.new"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(src, staging, ignore=shutil.ignore_patterns("*.csv", ".*"))
        check_model(staging)
        os.replace(staging, target)
    activate(home, version)
    prune(home)
    return target


def activate(home: Path, version: str) -> None:
    if not (home / version / CARD_FILE).is_file():
        raise RolloutError(f"{home}: no version {version}")
    link = home / ".current.new"
    link.unlink(missing_ok=True)
    link.symlink_to(version)
    os.replace(link, home / "current")


def prune(home: Path, keep: int = KEEP) -> list[str]:
    current = os.readlink(home / "current")
    # Oldest first by ctime, which the rename into place sets.
    versions = sorted((p for p in home.iterdir() if p.is_dir() and not p.is_symlink()
                       and not p.name.startswith(".")), key=lambda p: p.stat().st_ctime_ns)
    dropped = []
    for old in versions[:-keep]:
        if old.name != current:
            shutil.rmtree(old)
            dropped.append(old.name)
    return dropped


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vision.rollout", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path, nargs="?", help="a model folder (models/<name>)")
    ap.add_argument("--root", type=Path, required=True,
                    help="the box's models folder, e.g. /var/lib/ganzhi-edge/models")
    ap.add_argument("--activate", metavar="NAME@VERSION", help="switch back to a kept version")
    a = ap.parse_args(argv)
    try:
        if a.activate:
            name, _, version = a.activate.partition("@")
            activate(a.root / name, version)
            print(f"{a.root / name / 'current'} -> {version}; restart the agent")
            return 0
        if a.model is None:
            ap.error("a model folder, or --activate")
        target = install(a.model, a.root)
        print(f"installed {check_model(target)} at {target}; "
              f"{target.parent / 'current'} -> {target.name}; restart the agent")
        return 0
    except RolloutError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
