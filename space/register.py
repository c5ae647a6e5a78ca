"""Registration: where a moved picture sits against the frames a detector learned from, and the
picture moved back.

A game's static layout (walls, bricks, the columns its paddles keep to, the score's place)
marks every frame the same way. Its trace is two profiles, the share of pixels in each row and
in each column that differ from the frame's background colour, averaged over the training
frames. A frame's own profiles, slid against them, peak in correlation at the shift the picture
was moved by; moving the frame back (its edge repeated, as a moved picture repeats it) gives
the detector the layout it learned, and its objects' centres in the game's own coordinates.
"""

from __future__ import annotations

import numpy as np

from diffses.envs import background_colour, move

#: the largest shift, in native pixels along each axis, looked for
MAX_SHIFT = 8
#: pixels farther than this from the frame's most common colour (RGB distance) are drawn
OBJECT_GAP = 60.0
#: a shift is taken only where the profiles match at least this well (Pearson correlation);
#: a frame that matches nowhere stays where it is
MIN_MATCH = 0.5


def drawn(frame: np.ndarray) -> np.ndarray:
    """(H, W) bool: the pixels of an RGB ``frame`` farther than :data:`OBJECT_GAP` (RGB
    distance) from its background colour, so pixel noise alone draws nothing."""
    square = np.zeros(frame.shape[:2], np.int32)
    for c, level in enumerate(background_colour(frame).tolist()):
        gap = frame[..., c].astype(np.int32) - level
        square += gap * gap
    return square > OBJECT_GAP ** 2


def profiles(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows' (H,) and columns' (W,) mean share of drawn pixels over ``frames`` (N, H, W, 3)
    uint8."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or not len(frames):
        raise ValueError(f"frames must be (N, H, W, 3) uint8 RGB with N >= 1, got "
                         f"{frames.shape} {frames.dtype}")
    masks = np.stack([drawn(f) for f in frames]).astype(np.float64)
    return masks.mean(axis=(0, 2)), masks.mean(axis=(0, 1))


def _best_shift(profile: np.ndarray, reference: np.ndarray, most: int) -> int:
    """The shift s in [-most, most] where ``profile`` moved back by s (its ends repeated)
    best matches ``reference`` (Pearson correlation; of equal matches the smallest shift); 0
    where no shift matches at least :data:`MIN_MATCH`."""
    n = len(reference)
    shifts = np.array(sorted(range(-most, most + 1), key=lambda s: (abs(s), s)))
    moved = profile[np.clip(np.arange(n)[None, :] + shifts[:, None], 0, n - 1)]   # (S, n)
    a = moved - moved.mean(axis=1, keepdims=True)
    b = reference - reference.mean()
    norms = np.sqrt((a * a).sum(axis=1) * (b * b).sum())
    scores = np.where(norms > 0, (a @ b) / np.where(norms > 0, norms, 1.0), -np.inf)
    best = int(np.argmax(scores))
    return int(shifts[best]) if scores[best] >= MIN_MATCH else 0


class Registration:
    """Finds how far a frame's picture was moved against reference ``rows`` (H,) and
    ``cols`` (W,) profiles (:func:`profiles` of the training frames) and moves it back."""

    def __init__(self, rows: np.ndarray, cols: np.ndarray, most: int = MAX_SHIFT):
        self.rows = np.asarray(rows, np.float64).reshape(-1)
        self.cols = np.asarray(cols, np.float64).reshape(-1)
        if not len(self.rows) or not len(self.cols) or most < 0:
            raise ValueError("a registration needs row and column profiles and a largest "
                             "shift >= 0")
        self.most = most

    def shift_of(self, frame: np.ndarray) -> tuple[int, int]:
        """(dx, dy): how far ``frame`` (H, W, 3) sits right of and below the reference."""
        if frame.shape[:2] != (len(self.rows), len(self.cols)):
            raise ValueError(f"frame of {frame.shape[:2]} pixels against a reference of "
                             f"{(len(self.rows), len(self.cols))}")
        mask = drawn(frame)
        return (_best_shift(mask.mean(axis=0), self.cols, self.most),
                _best_shift(mask.mean(axis=1), self.rows, self.most))

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """``frames`` (B, H, W, 3), each moved back to the reference."""
        out = [move(f, *(-s for s in self.shift_of(f))) for f in frames]
        return np.stack(out) if out else frames

    def state(self) -> dict[str, list[float]]:
        """The profiles as a checkpoint keeps them."""
        return {"rows": self.rows.tolist(), "cols": self.cols.tolist()}
