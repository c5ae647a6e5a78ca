"""The feature layout: a list of objects -> one fixed-length vector.

Each object type gets ``slots[type]`` slots; the objects of a type fill its slots in the order
they come (the tracker sorts them by track id, oldest first, so a slot keeps following the
same object); extra objects are dropped and missing ones leave zeros with presence 0. Per slot:
``x``, ``y`` (centre / frame width or height, in [0, 1]), ``vx``, ``vy`` (pixels per step /
frame width or height, times ``velocity_gain``) and ``present`` (1 or 0). Names read like
``ball0_x``. Distillation, fine-tuning and the policy at play use one layout, stored in
``policy.json``.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

SLOT_FIELDS = ("x", "y", "vx", "vy", "present")


def _clean(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "obj"


@dataclass(frozen=True)
class FeatureLayout:
    """Type names, slots per type and frame size; turns object lists into vectors."""

    type_names: dict[int, str]
    slots: dict[int, int]
    frame_size: tuple[int, int]       # (height, width) in native pixels
    velocity_gain: float = 10.0

    @property
    def types(self) -> list[int]:
        return sorted(self.slots)

    @property
    def names(self) -> list[str]:
        """Feature names in vector order, e.g. ``ball0_x``."""
        out = []
        for t in self.types:
            base = _clean(self.type_names.get(t, f"type{t}"))
            for j in range(self.slots[t]):
                out += [f"{base}{j}_{f}" for f in SLOT_FIELDS]
        return out

    @property
    def size(self) -> int:
        return len(SLOT_FIELDS) * sum(self.slots.values())

    @property
    def offsets(self) -> dict[int, int]:
        """Each type's first feature index."""
        out, start = {}, 0
        for t in self.types:
            out[t] = start
            start += self.slots[t] * len(SLOT_FIELDS)
        return out

    def vector(self, state: Sequence[dict[str, Any]]) -> np.ndarray:
        """One record's ``state`` (schema objects) -> (F,) float32."""
        h, w = self.frame_size
        out = np.zeros(self.size, dtype=np.float32)
        offsets = self.offsets
        used: Counter = Counter()
        for obj in state:
            t = obj["type"]
            if t not in self.slots or used[t] >= self.slots[t]:
                continue
            i = offsets[t] + used[t] * len(SLOT_FIELDS)
            out[i:i + 5] = (obj["x_position"] / w, obj["y_position"] / h,
                            obj["x_velocity"] / w * self.velocity_gain,
                            obj["y_velocity"] / h * self.velocity_gain, 1.0)
            used[t] += 1
        return out

    def matrix(self, states: Sequence[Sequence[dict[str, Any]]]) -> np.ndarray:
        """Many states -> (N, F) float32."""
        return np.stack([self.vector(s) for s in states]) if states else \
            np.zeros((0, self.size), np.float32)

    def python_source(self, name: str) -> list[str]:
        """Lines of a standalone function ``name(objects)`` that computes :meth:`vector` in
        plain Python (``array`` from the standard library gives the same float32 values)."""
        h, w = self.frame_size
        gain = self.velocity_gain
        slots = {t: (first, self.slots[t]) for t, first in self.offsets.items()}
        return [f"def {name}(objects):",
                '    """Object records -> the layout\'s feature vector (float32 values, as at '
                'distillation)."""',
                f"    slots = {slots!r}  # object type -> (first feature index, slots)",
                f"    x = [0.0] * {self.size}",
                "    used = {}",
                "    for obj in objects:",
                '        first, n = slots.get(obj["type"], (0, 0))',
                '        k = used.get(obj["type"], 0)',
                "        if k >= n:",
                "            continue",
                f"        i = first + {len(SLOT_FIELDS)} * k",
                f'        x[i:i + 5] = (obj["x_position"] / {w}, obj["y_position"] / {h},',
                f'                      obj["x_velocity"] / {w} * {gain!r},',
                f'                      obj["y_velocity"] / {h} * {gain!r}, 1.0)',
                '        used[obj["type"]] = k + 1',
                '    return list(array("f", x))']

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (with the feature names, for readers)."""
        return {"type_names": {str(k): v for k, v in self.type_names.items()},
                "slots": {str(k): v for k, v in self.slots.items()},
                "frame_size": list(self.frame_size), "velocity_gain": self.velocity_gain,
                "names": self.names}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FeatureLayout":
        return cls(type_names={int(k): v for k, v in d["type_names"].items()},
                   slots={int(k): int(v) for k, v in d["slots"].items()},
                   frame_size=(int(d["frame_size"][0]), int(d["frame_size"][1])),
                   velocity_gain=float(d.get("velocity_gain", 10.0)))

    @classmethod
    def for_dataset(cls, records: Sequence[dict[str, Any]], meta: dict[str, Any] | None,
                    max_slots: int | None = None) -> "FeatureLayout":
        """Slots per type: the most objects of that type seen in one record (from the meta
        when it has them), capped at ``max_slots``."""
        stats = ObjectStats()
        if meta and "max_objects_per_type" in meta:
            seen = {int(k): int(v) for k, v in meta["max_objects_per_type"].items()}
        else:
            for rec in records:
                stats.add(rec["state"])
            seen = stats.counts
        slots = {t: min(n, max_slots) if max_slots else n for t, n in seen.items() if n > 0}
        names = {int(k): v for k, v in (meta or {}).get("type_names", {}).items()}
        if meta:
            size = (int(meta["frame_size"][0]), int(meta["frame_size"][1]))
        else:
            size = stats.extent
        return cls(type_names={t: names.get(t, f"type{t}") for t in slots}, slots=slots,
                   frame_size=size)


class ObjectStats:
    """The most objects of each type in one state, and the extent of every position, gathered
    one state at a time."""

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.max_x: int | None = None
        self.max_y: int | None = None

    def add(self, state: Sequence[dict[str, Any]]) -> None:
        for t, n in Counter(o["type"] for o in state).items():
            self.counts[t] = max(self.counts.get(t, 0), n)
        if state:
            x = max(o["x_position"] for o in state)
            y = max(o["y_position"] for o in state)
            self.max_x = x if self.max_x is None else max(self.max_x, x)
            self.max_y = y if self.max_y is None else max(self.max_y, y)

    @property
    def extent(self) -> tuple[int, int]:
        """A frame size (height, width) that contains every position seen."""
        return (1 + (1 if self.max_y is None else self.max_y),
                1 + (1 if self.max_x is None else self.max_x))
