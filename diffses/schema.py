"""The dataset schema (``sample.json``'s) and the one validator every stage uses to read it.

A dataset is a JSON list of records::

    {"state": [{"type": int, "x_velocity": float, "y_velocity": float,
                "x_position": int, "y_position": int, ...}, ...],
     "teacher_action": int, ...}

Optional record keys: ``episode``, ``step`` (int), ``reward`` (float), ``teacher_probs``
(floats, one per action). Optional object keys: ``width``, ``height``, ``confidence``
(float), ``track`` (int). Beside ``X.json`` lies ``X.meta.json`` (env id, action count and
meanings, type names, frame size, ...). A bad file gets a :class:`SchemaError` naming the
file, the record index and the field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from diffses.errors import UserError
from diffses.io import iter_json_list, read_json

DATASET = "dataset.json"
OBJECT_FIELDS: dict[str, type] = {"type": int, "x_velocity": float, "y_velocity": float,
                                  "x_position": int, "y_position": int}
OBJECT_OPTIONAL: dict[str, type] = {"width": float, "height": float, "confidence": float,
                                    "track": int}
RECORD_OPTIONAL: dict[str, type] = {"episode": int, "step": int, "reward": float}
META_FIELDS: dict[str, type] = {"env_id": str, "n_actions": int, "action_meanings": list,
                                "type_names": dict, "frame_size": list}


class SchemaError(UserError):
    """A dataset or meta file that does not follow the schema."""


def _check(value: Any, kind: type, where: str) -> None:
    """Raise ValueError(where: message) unless ``value`` is a finite ``kind``."""
    if kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and not math.isfinite(value):
            raise ValueError(f"field '{where}': {value} is not finite")
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise ValueError(f"field '{where}': expected {kind.__name__}, got "
                         f"{type(value).__name__} {value!r:.40}")


def validate_record(rec: Any, n_actions: int | None) -> None:
    """Check one record; raises ValueError naming the field."""
    if not isinstance(rec, dict):
        raise ValueError(f"expected an object, got {type(rec).__name__}")
    for key in ("state", "teacher_action"):
        if key not in rec:
            raise ValueError(f"field '{key}': missing")
    _check(rec["teacher_action"], int, "teacher_action")
    action = rec["teacher_action"]
    if action < 0 or (n_actions is not None and action >= n_actions):
        limit = f" (the env has {n_actions} actions)" if n_actions is not None else ""
        raise ValueError(f"field 'teacher_action': {action} is out of range{limit}")
    if not isinstance(rec["state"], list):
        raise ValueError(f"field 'state': expected list, got {type(rec['state']).__name__}")
    for j, obj in enumerate(rec["state"]):
        if not isinstance(obj, dict):
            raise ValueError(f"field 'state[{j}]': expected object, got {type(obj).__name__}")
        for key, kind in OBJECT_FIELDS.items():
            if key not in obj:
                raise ValueError(f"field 'state[{j}].{key}': missing")
            _check(obj[key], kind, f"state[{j}].{key}")
        if obj["type"] < 0:
            raise ValueError(f"field 'state[{j}].type': {obj['type']} is negative")
        for key, kind in OBJECT_OPTIONAL.items():
            if key in obj:
                _check(obj[key], kind, f"state[{j}].{key}")
    for key, kind in RECORD_OPTIONAL.items():
        if key in rec:
            _check(rec[key], kind, key)
    if "teacher_probs" in rec:
        probs = rec["teacher_probs"]
        if not isinstance(probs, list) or (n_actions is not None and len(probs) != n_actions):
            raise ValueError(f"field 'teacher_probs': expected a list of {n_actions} floats")
        for k, p in enumerate(probs):
            _check(p, float, f"teacher_probs[{k}]")


def validated(records: Iterable[Any], source: str | Path, n_actions: int | None = None
              ) -> Iterator[dict[str, Any]]:
    """The records, each checked as it comes; a :class:`SchemaError` names ``source``, the
    record and the field (and an empty dataset)."""
    i = -1
    for i, rec in enumerate(records):
        try:
            validate_record(rec, n_actions)
        except ValueError as err:
            raise SchemaError(f"{source}: record {i}: {err}") from None
        yield rec
    if i < 0:
        raise SchemaError(f"{source}: the dataset has no records")


def validate_meta(meta: Any, source: str | Path) -> None:
    """Check a ``*.meta.json``."""
    if not isinstance(meta, dict):
        raise SchemaError(f"{source}: expected a JSON object")
    for key, kind in META_FIELDS.items():
        if key not in meta:
            raise SchemaError(f"{source}: field '{key}': missing")
        if not isinstance(meta[key], kind):
            raise SchemaError(f"{source}: field '{key}': expected {kind.__name__}")
    if meta["n_actions"] <= 0 or len(meta["action_meanings"]) != meta["n_actions"]:
        raise SchemaError(f"{source}: field 'action_meanings': expected {meta['n_actions']} "
                          f"names")


def meta_path(path: str | Path) -> Path:
    """``dataset.json`` -> ``dataset.meta.json``."""
    path = Path(path)
    return path.with_name(path.stem + ".meta.json")


def action_count(meta: dict[str, Any] | None, actions: Iterable[int]) -> int:
    """Actions in the env: the meta's count, else one more than the largest action seen."""
    return int(meta["n_actions"]) if meta is not None else 1 + int(max(actions))


@dataclass
class Dataset:
    """Validated records in memory and their meta (None for a bare file without one). For
    small datasets; distillation streams a file instead (:mod:`diffses.arrays`)."""

    path: Path
    records: list[dict[str, Any]]
    meta: dict[str, Any] | None

    @property
    def n_actions(self) -> int:
        """Actions in the env (from the meta; else one more than the largest action seen)."""
        return action_count(self.meta, (r["teacher_action"] for r in self.records))


def dataset_file(path: str | Path) -> tuple[Path, dict[str, Any] | None]:
    """A dataset file (or the ``dataset.json`` of a dataset run folder) and its validated
    meta (None when there is none)."""
    path = Path(path)
    if path.is_dir():
        path = path / DATASET
    mpath = meta_path(path)
    if not mpath.is_file():
        return path, None
    meta = read_json(mpath, SchemaError)
    validate_meta(meta, mpath)
    return path, meta


def iter_dataset(path: Path, meta: dict[str, Any] | None) -> Iterator[dict[str, Any]]:
    """The records of a dataset file, read and validated one at a time."""
    return validated(iter_json_list(path, SchemaError, "record"), path,
                     meta["n_actions"] if meta else None)


def load_dataset(path: str | Path) -> Dataset:
    """Read and validate a dataset file, or the ``dataset.json`` of a dataset run folder, into
    memory."""
    path, meta = dataset_file(path)
    return Dataset(path, list(iter_dataset(path, meta)), meta)
