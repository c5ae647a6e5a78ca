"""Pictures of detections: boxes drawn on frames and frames tiled into one grid image."""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

#: distinct RGB colours for type ids
PALETTE = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
           (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212))


def colour(type_id: int) -> tuple[int, int, int]:
    """The drawing colour of a type id."""
    return PALETTE[type_id % len(PALETTE)]


def draw_boxes(image: np.ndarray, centres: np.ndarray, sizes: np.ndarray,
               colours: Sequence[tuple[int, int, int]], scale: int = 1) -> np.ndarray:
    """A copy of ``image`` (H, W, 3) uint8, enlarged ``scale`` times (nearest), with boxes
    (centres and sizes (M, 2), x first, in the image's pixels) outlined one pixel wide."""
    out = np.ascontiguousarray(np.repeat(np.repeat(image, scale, 0), scale, 1))
    for (cx, cy), (w, h), col in zip(centres, sizes, colours):
        x0, y0 = int(round((cx - w / 2) * scale)), int(round((cy - h / 2) * scale))
        x1, y1 = int(round((cx + w / 2) * scale)) - 1, int(round((cy + h / 2) * scale)) - 1
        cv2.rectangle(out, (x0, y0), (max(x1, x0), max(y1, y0)), tuple(int(c) for c in col), 1)
    return out


def tile(images: Sequence[np.ndarray], cols: int, pad: int = 2, fill: int = 255) -> np.ndarray:
    """Images of one shape (H, W, 3) in a grid of ``cols`` columns, ``pad`` pixels apart."""
    h, w = images[0].shape[:2]
    rows = -(-len(images) // cols)
    grid = np.full((rows * (h + pad) - pad, cols * (w + pad) - pad, 3), fill, np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        grid[r * (h + pad):r * (h + pad) + h, c * (w + pad):c * (w + pad) + w] = img
    return grid
