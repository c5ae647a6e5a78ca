"""Track detected objects between agent steps to give them identities and velocities.

Per type, the objects of the previous steps are matched to the current detections by the
Hungarian algorithm on the distance between each track's predicted centre (last centre plus
its velocity times the steps since it was seen) and each detection, with a gate in pixels.
A matched detection's velocity is its displacement per agent step since the track was last
seen; a new object has velocity 0. A track not seen for more than ``max_missing`` steps is
dropped, so an object that flickers for a step or two keeps its identity. With ``coast`` k, a
track missed for at most k steps is still reported, at its predicted centre with its last
size and velocity: a learned detector that drops an object for a frame does not make it
vanish from the policy's view. With ``confirm`` c, a detection less confident than c is weak:
it may continue a track no confident detection continued (nearest first, within the gate) but
never starts one, so a detector's doubtful sightings of a known object count and its doubtful
sightings of nothing do not (hysteresis, as in two-threshold trackers).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from diffses.detection import Detection


@dataclass
class Track:
    """One object followed over time."""

    id: int
    type: int
    x: float
    y: float
    vx: float = 0.0
    vy: float = 0.0
    last_seen: int = 0
    #: the detection it was last seen as
    seen_as: Detection | None = None


@dataclass(frozen=True)
class TrackedObject:
    """A detection of this step with its track id and velocity (pixels per agent step)."""

    detection: Detection
    track: int
    vx: float
    vy: float


class Tracker:
    """Per-type Hungarian tracking with a distance gate and tolerance for flicker."""

    def __init__(self, gate: float = 30.0, max_missing: int = 3, coast: int = 0,
                 confirm: float = 0.0):
        self.gate, self.max_missing, self.coast = gate, max_missing, min(coast, max_missing)
        self.confirm = confirm
        self.reset()

    def reset(self) -> None:
        """Forget every track (a new episode)."""
        self.tracks: list[Track] = []
        self.t = 0
        self._next_id = 0

    def update(self, detections: Sequence[Detection]) -> list[TrackedObject]:
        """Match this step's detections to the tracks; returns them sorted by (type, track)."""
        self.t += 1
        out: list[TrackedObject] = []
        for typ in sorted({d.type for d in detections} | {tr.type for tr in self.tracks}):
            dets = [d for d in detections if d.type == typ]
            tracks = [tr for tr in self.tracks if tr.type == typ]
            out += self._update_type(typ, dets, tracks)
        self.tracks = [tr for tr in self.tracks if self.t - tr.last_seen <= self.max_missing]
        return sorted(out, key=lambda o: (o.detection.type, o.track))

    def _pairs(self, tracks: list[Track], dets: list[Detection]) -> list[tuple[int, int]]:
        """(track, detection) index pairs: Hungarian on the distance between each track's
        predicted centre and each detection, pairs within the gate."""
        if not dets or not tracks:
            return []
        gaps = np.array([self.t - tr.last_seen for tr in tracks], dtype=float)      # (T,)
        pred = np.array([[tr.x + tr.vx * g, tr.y + tr.vy * g]
                         for tr, g in zip(tracks, gaps)])                           # (T, 2)
        pos = np.array([[d.x, d.y] for d in dets])                                  # (D, 2)
        dist = np.linalg.norm(pred[:, None] - pos[None], axis=-1)                   # (T, D)
        rows, cols = linear_sum_assignment(np.where(dist <= self.gate, dist, 1e9))
        return [(r, c) for r, c in zip(rows, cols) if dist[r, c] <= self.gate]

    def _update_type(self, typ: int, dets: list[Detection], tracks: list[Track]
                     ) -> list[TrackedObject]:
        sure = [d for d in dets if d.confidence >= self.confirm]
        weak = [d for d in dets if d.confidence < self.confirm]
        pairs = [(r, sure[c]) for r, c in self._pairs(tracks, sure)]
        taken = {r for r, _ in pairs}
        free = [r for r in range(len(tracks)) if r not in taken]
        pairs += [(free[r], weak[c]) for r, c in self._pairs([tracks[r] for r in free], weak)]
        out = []
        for r, d in pairs:
            tr = tracks[r]
            gap = self.t - tr.last_seen
            tr.vx, tr.vy = (d.x - tr.x) / gap, (d.y - tr.y) / gap
            tr.x, tr.y, tr.last_seen, tr.seen_as = d.x, d.y, self.t, d
            out.append(TrackedObject(d, tr.id, tr.vx, tr.vy))
        found = {r for r, _ in pairs}
        for r, tr in enumerate(tracks):
            gap = self.t - tr.last_seen
            if r not in found and 0 < gap <= self.coast and tr.seen_as is not None:
                guess = replace(tr.seen_as, x=tr.x + tr.vx * gap, y=tr.y + tr.vy * gap)
                out.append(TrackedObject(guess, tr.id, tr.vx, tr.vy))
        matched = {id(d) for _, d in pairs}
        for d in sure:
            if id(d) in matched:
                continue
            tr = Track(self._next_id, typ, d.x, d.y, last_seen=self.t, seen_as=d)
            self._next_id += 1
            self.tracks.append(tr)
            out.append(TrackedObject(d, tr.id, 0.0, 0.0))
        return out
