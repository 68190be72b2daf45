"""Detector latency on this machine's CPU, and how much motion gating saves.

    .venv/bin/python benchmarks/vision_latency.py --model models/ppe --write-card
    .venv/bin/python benchmarks/vision_latency.py --model models/mask --write-card

For each input size (320 px, and the model's own when different) it times single frames
(batch 1) on one ONNX Runtime thread and on all cores, median and p95 over ``--runs``
frames from the model's validation images, and prints the ratio. Then it plays a
static scene (one kitchen-like frame with sensor noise, ``--static-s`` seconds at 5 fps)
and a scene with a person walking through, through the motion gate, and prints the
share of frames on which the detector would not run. ``--write-card`` records the
latency at the model's input size in its ``card.yaml``.
"""

from __future__ import annotations

import argparse
import glob
import platform
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from edge.camera.motion import MotionGate
from vision.card import Latency, load_card, save_card
from vision.runtime import YoloDetector, cpu_count

ROOT = Path(__file__).resolve().parents[1]
VAL = {"ppe": "ppe-helmet-uniform", "mask": "face-mask"}


def frames_for(model_dir: Path, n: int) -> list[np.ndarray]:
    ds = VAL.get(model_dir.name, "")
    files = sorted(glob.glob(str(ROOT.parent / "shared/datasets" / ds / "images/val/*.jpg")))
    if not files:
        rng = np.random.default_rng(0)
        return [rng.integers(0, 255, (480, 640, 3), dtype=np.uint8) for _ in range(n)]
    return [cv2.imread(files[i % len(files)]) for i in range(n)]


def time_detector(det: YoloDetector, frames: list[np.ndarray], label: str) -> list[float]:
    det.detect(frames[:2])  # warm-up
    times = []
    for i, f in enumerate(frames):
        t = time.perf_counter()
        det.detect([f])
        times.append((time.perf_counter() - t) * 1000)
        if (i + 1) % 20 == 0:
            print(f"\r  {label}: {i + 1}/{len(frames)}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return times


def summary(times: list[float]) -> tuple[float, float]:
    return statistics.median(times), float(np.percentile(times, 95))


def scene(t: float, walker: bool, rng: np.random.Generator) -> np.ndarray:
    img = np.tile(np.linspace(60, 200, 640, dtype=np.uint8), (480, 1))
    img = cv2.merge([img, img, img])
    cv2.rectangle(img, (40, 300), (600, 400), (40, 40, 40), -1)
    cv2.rectangle(img, (80, 60), (240, 240), (220, 220, 220), -1)
    if walker and int(t) % 20 < 6:  # someone crosses for 6 s of every 20 s
        x = int(40 + (t % 20) * 90)
        cv2.rectangle(img, (x, 120), (x + 60, 380), (30, 60, 200), -1)
    return np.clip(img + rng.normal(0, 2.5, img.shape), 0, 255).astype(np.uint8)


def gating_share(seconds: float, walker: bool) -> float:
    gate, rng, fps = MotionGate(), np.random.default_rng(1), 5.0
    n = int(seconds * fps)
    runs = sum(gate.should_detect(i / fps, scene(i / fps, walker, rng)) for i in range(n))
    return 1 - runs / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--static-s", type=float, default=120.0)
    ap.add_argument("--write-card", action="store_true")
    a = ap.parse_args()
    card = load_card(a.model)
    frames = frames_for(a.model, a.runs)
    cores = cpu_count()
    print(f"{card.name}: {platform.processor() or platform.machine()}, {cores} cores")
    results: dict[tuple[int, int], tuple[float, float]] = {}
    for size in sorted({320, card.input_size}):
        for threads in (1, cores):
            det = YoloDetector.from_dir(a.model, threads=threads,
                                        providers=["CPUExecutionProvider"])
            det.card = det.card.model_copy(update={"input_size": size})
            results[(size, threads)] = summary(
                time_detector(det, frames, f"{size} px, {threads} thread(s)"))
        one, many = results[(size, 1)], results[(size, cores)]
        print(f"  {size} px: 1 thread {one[0]:6.1f} ms (p95 {one[1]:.1f}) | {cores} threads "
              f"{many[0]:6.1f} ms (p95 {many[1]:.1f}) | ratio {one[0] / many[0]:.2f}")
    static = gating_share(a.static_s, walker=False)
    busy = gating_share(a.static_s, walker=True)
    print(f"  motion gating at 5 fps: {static:.1%} of frames skipped on a static scene, "
          f"{busy:.1%} with someone crossing 6 s in 20 (checks every 10 s regardless)")
    if a.write_card:
        one, many = results[(card.input_size, 1)], results[(card.input_size, cores)]
        card = card.model_copy(update={"latency": Latency(
            machine=f"{platform.machine()}, {cores} cores (the project's CI machine)",
            threads_1_ms=round(one[0], 1), threads_all_ms=round(many[0], 1),
            threads_all=cores,
            command=f"benchmarks/vision_latency.py --model {a.model} --write-card")})
        print(f"  wrote {save_card(a.model, card)}")


if __name__ == "__main__":
    main()
