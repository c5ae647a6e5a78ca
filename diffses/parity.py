"""Where a learned detector costs a policy its return: the same policy on the same seeded games
through the learned detector with its errors removed one kind at a time.

Every frame is seen by both detectors: the learned one and OCAtari's RAM objects (the truth).
Each learned detection is matched to a true object of the frame (Hungarian on centre distance
within ``gate`` pixels, any type), and the steps below repair the learned path cumulatively,
each a row of the table:

- ``learned``: the learned detections as they are;
- ``no false positives``: learned detections that match no true object dropped;
- ``true types``: a matched detection takes its true object's type;
- ``true boxes``: a matched detection takes its true object's centre and size;
- ``no misses``: the true objects no learned detection matched are added, which leaves the
  truth itself, so this row reproduces the ``ocatari`` row (a check of the method).

Tracking and velocities come from the same tracker on every row, so the velocity error of a
learned path shows up where its boxes or misses are repaired.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from diffses.detection import Detection, Detector

#: The repair steps, in order; each includes every step before it.
STEPS: tuple[str, ...] = ("learned", "no false positives", "true types", "true boxes",
                          "no misses")


def match(learned: Sequence[Detection], truth: Sequence[Detection], gate: float
          ) -> dict[int, int]:
    """Learned index -> true index, Hungarian on centre distance, pairs within ``gate`` px."""
    if not learned or not truth:
        return {}
    a = np.array([[d.x, d.y] for d in learned])
    b = np.array([[d.x, d.y] for d in truth])
    dist = np.linalg.norm(a[:, None] - b[None], axis=-1)
    rows, cols = linear_sum_assignment(np.where(dist <= gate, dist, 1e9))
    return {int(r): int(c) for r, c in zip(rows, cols) if dist[r, c] <= gate}


def repair(learned: Sequence[Detection], truth: Sequence[Detection], step: str,
           gate: float) -> list[Detection]:
    """One frame's learned detections with the errors up to ``step`` (one of :data:`STEPS`)
    replaced by the truth."""
    level = STEPS.index(step)
    if level == 0:
        return list(learned)
    if level == len(STEPS) - 1:
        return list(truth)
    out = []
    for i, j in sorted(match(learned, truth, gate).items(), key=lambda p: p[1]):
        d, t = learned[i], truth[j]
        if level >= 2:
            d = replace(d, type=t.type)
        if level >= 3:
            d = replace(d, x=t.x, y=t.y, w=t.w, h=t.h)
        out.append(d)
    return out


class RepairedDetector(Detector):
    """A learned detector whose errors up to ``step`` are repaired from the RAM truth; both
    detectors must already give the policy's type ids."""

    def __init__(self, learned: Detector, truth: Detector, step: str, gate: float = 6.0):
        if step not in STEPS:
            raise ValueError(f"step must be one of {STEPS}, not {step!r}")
        self.learned, self.truth, self.step, self.gate = learned, truth, step, gate
        self.name = f"{learned.name} ({step})"
        self.type_names, self.env_id = learned.type_names, learned.env_id
        self.env_kwargs = {**learned.env_kwargs, **truth.env_kwargs}
        shown = truth if step == STEPS[-1] else learned
        self.coast, self.confirm = shown.coast, shown.confirm
        #: per true type: true objects, matched, learned detections matching none (by the
        #: learned type), summed centre error of the matched (px), over every frame seen
        self.counts: dict[int, np.ndarray] = {}

    def _count(self, learned: Sequence[Detection], truth: Sequence[Detection]) -> None:
        pairs = match(learned, truth, self.gate)
        for j, t in enumerate(truth):
            self.counts.setdefault(t.type, np.zeros(4))[0] += 1
        for i, j in pairs.items():
            row = self.counts[truth[j].type]
            row[1] += 1
            row[3] += np.hypot(learned[i].x - truth[j].x, learned[i].y - truth[j].y)
        for i, d in enumerate(learned):
            if i not in pairs:
                self.counts.setdefault(d.type, np.zeros(4))[2] += 1

    def summary(self) -> dict[str, dict[str, float]]:
        """Per type name over the frames seen: true objects, recall, false positives and the
        mean centre error of the matched in pixels."""
        out = {}
        for typ, (n, hit, fp, err) in sorted(self.counts.items()):
            out[self.type_names.get(typ, str(typ))] = {
                "objects": int(n), "recall": hit / n if n else None, "false_positives": int(fp),
                "centre_error": err / hit if hit else None}
        return out

    def detect(self, frames: np.ndarray, infos: Sequence[dict[str, Any]] | None = None
               ) -> list[list[Detection]]:
        truth = self.truth.detect(frames, infos)
        learned = self.learned.detect(frames, infos)
        for ld, td in zip(learned, truth):
            self._count(self.learned.confident(ld), td)
        return [repair(ld, td, self.step, self.gate) for ld, td in zip(learned, truth)]
