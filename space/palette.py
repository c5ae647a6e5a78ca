"""A game's palette: the colours of the frames a detector learned from, and the projection of
any frame onto them.

Atari games draw with a handful of colours. Projecting every pixel onto the nearest of them
undoes pixel noise and any colour the game never drew (a repainted background goes back to
the nearest of the game's own), so the detector sees the frames it was trained on. The
projection is a lookup: each colour, quantised to 5 bits a channel, maps to the palette
colour nearest the centre of its bin, and the palette's own colours map to themselves.
"""

from __future__ import annotations

import numpy as np

#: colours covering at least this share of the pixels belong to the palette
MIN_SHARE = 1e-5
BITS = 5


def palette_of(frames: np.ndarray, min_share: float = MIN_SHARE) -> np.ndarray:
    """(P, 3) uint8: the colours covering at least ``min_share`` of the pixels of ``frames``
    (N, H, W, 3) uint8."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or not len(frames):
        raise ValueError(f"frames must be (N, H, W, 3) uint8 RGB with N >= 1, got "
                         f"{frames.shape} {frames.dtype}")
    colours, counts = np.unique(frames.reshape(-1, 3), axis=0, return_counts=True)
    return colours[counts >= min_share * counts.sum()]


def _bins(pixels: np.ndarray) -> np.ndarray:
    q = (pixels >> (8 - BITS)).astype(np.uint16)
    bins = q[..., 0] << 2 * BITS
    bins |= q[..., 1] << BITS
    bins |= q[..., 2]
    return bins


class Palette:
    """Projection of RGB frames onto ``colours`` (P, 3)."""

    def __init__(self, colours: np.ndarray):
        self.colours = np.asarray(colours, dtype=np.uint8).reshape(-1, 3)
        if not len(self.colours):
            raise ValueError("a palette needs at least one colour")
        levels = (np.arange(2 ** BITS) << (8 - BITS)) + (1 << (7 - BITS))
        centres = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(-1, 3)
        gaps = ((centres[:, None, :] - self.colours[None].astype(np.int64)) ** 2).sum(-1)
        self.table = self.colours[gaps.argmin(1)]
        self.table[_bins(self.colours)] = self.colours

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """``frames`` (..., 3) uint8 with every pixel replaced by its palette colour."""
        return np.take(self.table, _bins(frames), axis=0)
