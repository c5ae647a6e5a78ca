"""Frames for SPACE: native RGB frames -> cropped, resized model inputs; boxes back to native."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from diffses.envs import VisualShift
from diffses.errors import UserError
from diffses.frames import read_index, read_png
from space.config import DataConfig, TrainConfig


def crop_box(data: DataConfig, frame_shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the native frame the model sees, clipped to the frame."""
    height, width = frame_shape[:2]
    top, bottom, left, right = data.crop if data.crop is not None else (0, height, 0, width)
    top, bottom = max(0, top), min(height, bottom)
    left, right = max(0, left), min(width, right)
    if top >= bottom or left >= right:
        raise UserError(f"data.crop {list(data.crop)} lies outside the {height}x{width} frames")
    return top, bottom, left, right


def preprocess(frames: np.ndarray, data: DataConfig) -> np.ndarray:
    """Native frames (B, H, W, 3) uint8 -> model inputs (B, 3, h, w) uint8 (crop, area resize)."""
    top, bottom, left, right = crop_box(data, frames.shape[1:])
    h, w = data.image_size
    out = np.empty((len(frames), 3, h, w), np.uint8)                   # (B, 3, h, w)
    for i, frame in enumerate(frames):
        img = cv2.resize(frame[top:bottom, left:right], (w, h), interpolation=cv2.INTER_AREA)
        out[i] = img.transpose(2, 0, 1)
    return out


def to_native(centre: np.ndarray, size: np.ndarray, data: DataConfig,
              frame_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Boxes in model coordinates (centre in [-1, 1], size as a fraction of the image side;
    x first) -> (centre, size) in native pixels, clipped to the cropped part of the frame."""
    top, bottom, left, right = crop_box(data, frame_shape)
    origin = np.array([left, top], np.float64)
    extent = np.array([right - left, bottom - top], np.float64)
    c = origin + (centre + 1) / 2 * extent                              # (M, 2)
    half = size * extent / 2                                            # (M, 2)
    lo = np.clip(c - half, origin, origin + extent)
    hi = np.clip(c + half, origin, origin + extent)
    return (lo + hi) / 2, hi - lo


def select_records(frames_path: str | Path, split: str, limit: int = 0) -> list[dict[str, Any]]:
    """The records of one split of a frames run (``limit`` > 0: at most that many, evenly
    spaced)."""
    records = [r for r in read_index(frames_path) if r["split"] == split]
    if limit and len(records) > limit:
        keep = np.linspace(0, len(records) - 1, limit).round().astype(int)
        records = [records[i] for i in keep]
    return records


def random_shift(rng: np.random.Generator, noise: float, shift: int) -> VisualShift:
    """One change of the picture drawn at random: a background repainted in a random colour,
    Gaussian noise of std up to ``noise``, or a shift of up to ``shift`` pixels each way."""
    kinds = ["background"] + (["noise"] if noise > 0 else []) + (["shift"] if shift > 0 else [])
    kind = kinds[rng.integers(len(kinds))]
    if kind == "background":
        return VisualShift(kind, tuple(float(v) for v in rng.integers(0, 256, 3)))
    if kind == "noise":
        return VisualShift(kind, (float(rng.uniform(0, noise)),))
    return VisualShift(kind, tuple(float(v) for v in rng.integers(-shift, shift + 1, 2)))


def augment(frames: np.ndarray, data: DataConfig, train: TrainConfig,
            rng: np.random.Generator) -> np.ndarray:
    """Model inputs (B, 3, h, w) uint8 of native ``frames`` (B, H, W, 3), each shown with
    probability ``train.augment`` under a :func:`random_shift`."""
    changed = [random_shift(rng, train.augment_noise, train.augment_shift)(f, rng)
               if rng.random() < train.augment else f for f in frames]
    return preprocess(np.stack(changed), data)


def load_frames(frames_path: str | Path, records: list[dict[str, Any]]) -> np.ndarray:
    """The native frames (N, H, W, 3) uint8 of ``records``."""
    return np.stack([read_png(Path(frames_path) / r["file"]) for r in records])


def load_inputs(frames_path: str | Path, records: list[dict[str, Any]], data: DataConfig
                ) -> np.ndarray:
    """Model inputs (N, 3, h, w) uint8 of ``records``, read and preprocessed one at a time."""
    out = np.empty((len(records), 3, *data.image_size), np.uint8)      # (N, 3, h, w)
    for i, rec in enumerate(records):
        out[i] = preprocess(read_png(Path(frames_path) / rec["file"])[None], data)[0]
    return out
