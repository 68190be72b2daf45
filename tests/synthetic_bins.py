"""Generated kitchen scenes with a waste bin, lid on or off: the labelled data and the
video of the labelling-loop test (no real footage needed). Deterministic per seed."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

CLASSES = ["bin_open", "bin_closed"]
W, H = 256, 192


def background(rng: np.random.Generator) -> NDArray[np.uint8]:
    base = int(rng.integers(120, 200))
    ramp = np.tile(np.linspace(base - 40, base + 30, W, dtype=np.float32), (H, 1))
    img = np.stack([ramp * rng.uniform(0.85, 1.0), ramp * rng.uniform(0.85, 1.0), ramp], -1)
    floor = int(rng.integers(120, 150))
    img[floor:] = (rng.integers(60, 100), rng.integers(60, 100), rng.integers(60, 100))
    cv2.rectangle(img, (0, floor - 40), (W, floor - 30), (90, 90, 95), -1)  # a counter edge
    return np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)


def draw_bin(img: NDArray[np.uint8], rng: np.random.Generator, is_open: bool,
             x: int | None = None) -> tuple[int, int, int, int]:
    bw, bh = int(rng.integers(44, 64)), int(rng.integers(56, 76))
    x1 = int(rng.integers(4, W - bw - 4)) if x is None else x
    y2 = int(rng.integers(H - 30, H - 4))
    y1 = y2 - bh
    body = tuple(int(v) for v in rng.integers(30, 80, 3))
    cv2.rectangle(img, (x1, y1 + 8), (x1 + bw, y2), body, -1)
    for i in range(1, 4):  # ribs
        cv2.line(img, (x1 + i * bw // 4, y1 + 14), (x1 + i * bw // 4, y2 - 4),
                 tuple(min(255, c + 40) for c in body), 1)
    if is_open:  # the dark opening and rubbish sticking out
        cv2.ellipse(img, (x1 + bw // 2, y1 + 8), (bw // 2, 8), 0, 0, 360, (15, 15, 15), -1)
        for _ in range(3):
            cx = x1 + int(rng.integers(6, bw - 6))
            cv2.circle(img, (cx, y1 + int(rng.integers(0, 8))), int(rng.integers(3, 6)),
                       (40, int(rng.integers(150, 230)), int(rng.integers(150, 255))), -1)
        top = y1 - 4
    else:  # a pale lid with a handle
        lid = (210, 210, 200)
        cv2.ellipse(img, (x1 + bw // 2, y1 + 8), (bw // 2 + 3, 9), 0, 0, 360, lid, -1)
        cv2.rectangle(img, (x1 + bw // 2 - 8, y1 - 3), (x1 + bw // 2 + 8, y1 + 2), lid, -1)
        top = y1 - 4
    return x1 - 3, top, x1 + bw + 3, y2


def scene(seed: int, is_open: bool) -> tuple[NDArray[np.uint8], tuple[int, int, int, int]]:
    rng = np.random.default_rng(seed)
    img = background(rng)
    box = draw_bin(img, rng, is_open)
    return img, box


def yolo_label(box: tuple[int, int, int, int], cls: int) -> str:
    x1, y1, x2, y2 = box
    return (f"{cls} {(x1 + x2) / 2 / W:.6f} {(y1 + y2) / 2 / H:.6f} {(x2 - x1) / W:.6f} "
            f"{(y2 - y1) / H:.6f}")


def video(path: Path, fps: int = 5, seconds: int = 16, open_from_s: float = 4) -> None:
    """A fixed camera: a closed bin, then (from ``open_from_s``) the lid is off."""
    rng = np.random.default_rng(999)
    bg = background(rng)
    out = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (W, H))
    for i in range(fps * seconds):
        frame = bg.copy()
        draw_bin(frame, np.random.default_rng(7), is_open=i / fps >= open_from_s, x=100)
        noise = np.random.default_rng(i).normal(0, 3, frame.shape)
        out.write(np.clip(frame + noise, 0, 255).astype(np.uint8))
    out.release()
