"""Frames -> objects in the dataset schema: detect, then track. One path for every stage.

``build_dataset`` and the symbolic policy at play both call :meth:`Perception.observe`, so
training and acting see the same inputs: positions are object centres in native pixels
(rounded to int, as the schema has them), velocities pixels per agent step from the tracker.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from diffses.detection import Detector
from diffses.tracking import Tracker, TrackedObject


def to_schema(obj: TrackedObject) -> dict[str, Any]:
    """A tracked object as a schema object (with width, height, confidence and track)."""
    d = obj.detection
    return {"type": int(d.type), "x_velocity": round(float(obj.vx), 4),
            "y_velocity": round(float(obj.vy), 4), "x_position": int(round(d.x)),
            "y_position": int(round(d.y)), "width": round(float(d.w), 2),
            "height": round(float(d.h), 2), "confidence": round(float(d.confidence), 4),
            "track": int(obj.track)}


class Perception:
    """A detector and a tracker: batches of frames in, schema object lists out."""

    def __init__(self, detector: Detector, gate: float = 30.0, max_missing: int = 3):
        self.detector = detector
        self.tracker = Tracker(gate=gate, max_missing=max_missing, coast=detector.coast,
                               confirm=detector.confirm)

    @property
    def env_kwargs(self) -> dict[str, Any]:
        """What the env must put in ``info`` for this perception."""
        return {"native_frames": True, **self.detector.env_kwargs}

    def reset(self) -> None:
        self.tracker.reset()

    def observe(self, frames: np.ndarray, infos: Sequence[dict[str, Any]],
                episode_starts: Sequence[bool]) -> list[list[dict[str, Any]]]:
        """Consecutive frames (B, H, W, 3) of one env -> B states; tracks restart where
        ``episode_starts`` is true."""
        states = []
        for dets, start in zip(self.detector.detect(frames, infos), episode_starts):
            if start:
                self.tracker.reset()
            states.append([to_schema(o) for o in self.tracker.update(dets)])
        return states
