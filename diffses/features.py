"""The feature layout: a list of objects -> one fixed-length vector.

Each object type gets ``slots[type]`` slots; the objects of a type fill its slots in the order
they come (the tracker sorts them by track id, oldest first, so a slot keeps following the
same object); extra objects are dropped and missing ones leave zeros with presence 0. Per slot:
``x``, ``y`` (centre / frame width or height, in [0, 1]), ``vx``, ``vy`` (pixels per step /
frame width or height, times ``velocity_gain``) and ``present`` (1 or 0). Names read like
``ball0_x``. With ``leads`` the layout also relates every pair of object types that have
one slot each: their differences in x and y (``ball0_minus_player0_x``), and the same with
either object led along its velocity by k steps for every k in ``leads``
(``ball0_lead4_minus_player0_x`` = ball x + 4 * ball vx - player x), in frame widths or
heights; 0 where either object is missing. Distillation, fine-tuning and the policy at play
use one layout, stored in ``policy.json``.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from itertools import combinations
from typing import Any, Sequence

import numpy as np

SLOT_FIELDS = ("x", "y", "vx", "vy", "present")
#: Velocity leads (agent steps) of the object relations a distillation offers by default.
DEFAULT_LEADS = (2, 4, 8)


def _clean(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "obj"


@dataclass(frozen=True)
class FeatureLayout:
    """Type names, slots per type and frame size; turns object lists into vectors."""

    type_names: dict[int, str]
    slots: dict[int, int]
    frame_size: tuple[int, int]       # (height, width) in native pixels
    velocity_gain: float = 10.0
    leads: tuple[int, ...] | None = None   # object relations with these leads; None: none

    @property
    def types(self) -> list[int]:
        return sorted(self.slots)

    @property
    def pairs(self) -> list[tuple[int, int]]:
        """The related pairs of object types: every pair of types with one slot each (the
        first of many objects of a type, such as a wall of bricks, is an arbitrary one); none
        without ``leads``."""
        single = [t for t in self.types if self.slots[t] == 1]
        return [] if self.leads is None else list(combinations(single, 2))

    def _base(self, t: int) -> str:
        return _clean(self.type_names.get(t, f"type{t}"))

    @property
    def relation_names(self) -> list[str]:
        """Names of the relation features, in vector order after the slots."""
        out = []
        for a, b in self.pairs:
            na, nb = f"{self._base(a)}0", f"{self._base(b)}0"
            out += [f"{na}_minus_{nb}_{c}" for c in "xy"]
            for k in self.leads or ():
                out += [f"{na}_lead{k}_minus_{nb}_{c}" for c in "xy"]
                out += [f"{nb}_lead{k}_minus_{na}_{c}" for c in "xy"]
        return out

    @property
    def names(self) -> list[str]:
        """Feature names in vector order, e.g. ``ball0_x``."""
        out = []
        for t in self.types:
            for j in range(self.slots[t]):
                out += [f"{self._base(t)}{j}_{f}" for f in SLOT_FIELDS]
        return out + self.relation_names

    @property
    def n_slot_features(self) -> int:
        return len(SLOT_FIELDS) * sum(self.slots.values())

    @property
    def size(self) -> int:
        return self.n_slot_features + len(self.pairs) * 2 * (1 + 2 * len(self.leads or ()))

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
        first: dict[int, dict[str, Any]] = {}
        for obj in state:
            t = obj["type"]
            if t not in self.slots or used[t] >= self.slots[t]:
                continue
            i = offsets[t] + used[t] * len(SLOT_FIELDS)
            out[i:i + 5] = (obj["x_position"] / w, obj["y_position"] / h,
                            obj["x_velocity"] / w * self.velocity_gain,
                            obj["y_velocity"] / h * self.velocity_gain, 1.0)
            first.setdefault(t, obj)
            used[t] += 1
        i = self.n_slot_features
        for a, b in self.pairs:
            n = 2 * (1 + 2 * len(self.leads or ()))
            if a in first and b in first:
                out[i:i + n] = relations(first[a], first[b], self.leads or (), w, h)
            i += n
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
        lines = [f"def {name}(objects):",
                '    """Object records -> the layout\'s feature vector (float32 values, as at '
                'distillation)."""',
                f"    slots = {slots!r}  # object type -> (first feature index, slots)",
                f"    x = [0.0] * {self.size}",
                "    used = {}",
                "    firsts = {}",
                "    for obj in objects:",
                '        first, n = slots.get(obj["type"], (0, 0))',
                '        k = used.get(obj["type"], 0)',
                "        if k >= n:",
                "            continue",
                f"        i = first + {len(SLOT_FIELDS)} * k",
                f'        x[i:i + 5] = (obj["x_position"] / {w}, obj["y_position"] / {h},',
                f'                      obj["x_velocity"] / {w} * {gain!r},',
                f'                      obj["y_velocity"] / {h} * {gain!r}, 1.0)',
                '        firsts.setdefault(obj["type"], obj)',
                '        used[obj["type"]] = k + 1']
        i = self.n_slot_features
        for a, b in self.pairs:
            n = 2 * (1 + 2 * len(self.leads or ()))
            lines += [f"    if {a} in firsts and {b} in firsts:",
                      f"        x[{i}:{i + n}] = relations(firsts[{a}], firsts[{b}], "
                      f"{tuple(self.leads or ())!r}, {w}, {h})"]
            i += n
        return lines + ['    return list(array("f", x))']

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (with the feature names, for readers)."""
        return {"type_names": {str(k): v for k, v in self.type_names.items()},
                "slots": {str(k): v for k, v in self.slots.items()},
                "frame_size": list(self.frame_size), "velocity_gain": self.velocity_gain,
                "leads": None if self.leads is None else list(self.leads), "names": self.names}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FeatureLayout":
        return cls(type_names={int(k): v for k, v in d["type_names"].items()},
                   slots={int(k): int(v) for k, v in d["slots"].items()},
                   frame_size=(int(d["frame_size"][0]), int(d["frame_size"][1])),
                   velocity_gain=float(d.get("velocity_gain", 10.0)),
                   leads=None if d.get("leads") is None else tuple(int(k) for k in d["leads"]))

    @classmethod
    def for_dataset(cls, records: Sequence[dict[str, Any]], meta: dict[str, Any] | None,
                    max_slots: int | None = None, leads: tuple[int, ...] | None = None
                    ) -> "FeatureLayout":
        """Slots per type: the most objects of that type seen in one record (from the meta
        when it has them), capped at ``max_slots``; object relations with ``leads``."""
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
                   frame_size=size, leads=None if leads is None else tuple(leads))


def relations(a: dict[str, Any], b: dict[str, Any], leads: Sequence[int], w: int, h: int
              ) -> list[float]:
    """Two objects' relation features: ``a - b`` in x and y, then for every lead k,
    ``(a + k * va) - b`` and ``(b + k * vb) - a`` in x and y (in frame widths or heights).
    The exported policy module carries this same function."""
    out = [(a["x_position"] - b["x_position"]) / w, (a["y_position"] - b["y_position"]) / h]
    for k in leads:
        out += [(a["x_position"] + k * a["x_velocity"] - b["x_position"]) / w,
                (a["y_position"] + k * a["y_velocity"] - b["y_position"]) / h,
                (b["x_position"] + k * b["x_velocity"] - a["x_position"]) / w,
                (b["y_position"] + k * b["y_velocity"] - a["y_position"]) / h]
    return out


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
