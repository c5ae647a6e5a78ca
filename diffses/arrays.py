"""A dataset as compact arrays, streamed from its file: the feature matrix of a layout, the
teacher's actions and probabilities, and the episodes, without the list of record dicts.

One pass over ``dataset.json`` validates every record (the schema's validator) and gathers the
labels and the objects per type; the features of a layout come in the same pass when the
meta gives the objects per type, else in a second. The arrays are cached beside the file in
``<stem>.features.npz``, keyed by the file's size and modification time, its meta and the
validator's source, the features by the layout and the features module's source too: a stale
cache is rebuilt, and an unreadable one is reported and rebuilt, never used.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from array import array
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any, Iterable, Iterator

import numpy as np

from diffses import features, schema
from diffses.errors import UserError
from diffses.features import FeatureLayout, ObjectStats
from diffses.io import atomic_write_with, iter_json_list
from diffses.schema import Dataset, SchemaError, action_count, dataset_file, iter_dataset

#: The cache file beside ``X.json``: ``X.features.npz``.
SUFFIX = ".features.npz"
#: Records per block of the feature matrix.
BLOCK = 4096
#: The cache's format; a cache of another format is stale.
FORMAT = 1
#: What a damaged cache raises when it is read.
_UNREADABLE = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)


def cache_path(path: str | Path) -> Path:
    """``dataset.json`` -> ``dataset.features.npz``."""
    path = Path(path)
    return path.with_name(path.stem + SUFFIX)


def feature_matrix(layout: FeatureLayout, states: Iterable[list[dict[str, Any]]]
                   ) -> np.ndarray:
    """:meth:`FeatureLayout.matrix` of states that come one at a time, a block at a time."""
    blocks, block = [], []
    for state in states:
        block.append(state)
        if len(block) == BLOCK:
            blocks.append(layout.matrix(block))
            block = []
    if block or not blocks:
        blocks.append(layout.matrix(block))
    return np.concatenate(blocks) if len(blocks) > 1 else blocks[0]  # (N, F) float32


@lru_cache(maxsize=None)
def _source(module: ModuleType) -> str:
    """A digest of a module's source, so that a cache follows a change of its definitions."""
    return hashlib.sha256(Path(module.__file__).read_bytes()).hexdigest()[:16]


def _layout_key(layout: FeatureLayout) -> str:
    return json.dumps({"layout": layout.to_dict(), "features": _source(features)},
                      sort_keys=True)


class _Gather:
    """Labels and object statistics, gathered one record at a time."""

    def __init__(self, source: Path):
        self.source = source
        self.actions, self.episodes, self.probs = array("q"), array("q"), array("d")
        self.width: int | None = 0          # probabilities per record; None: not in every one
        self.objects = ObjectStats()

    def add(self, rec: dict[str, Any]) -> None:
        i = len(self.actions)
        self.actions.append(rec["teacher_action"])
        self.episodes.append(rec.get("episode", 0))
        if self.width is not None:
            probs = rec.get("teacher_probs")
            if probs is None:
                self.width, self.probs = None, array("d")
            elif i > 0 and len(probs) != self.width:
                raise SchemaError(f"{self.source}: record {i}: field 'teacher_probs': "
                                  f"{len(probs)} values where record 0 has {self.width}")
            else:
                self.width = len(probs)
                self.probs.extend(probs)
        self.objects.add(rec["state"])

    def states(self, records: Iterable[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
        """Each record's state, gathering the record on the way."""
        for rec in records:
            self.add(rec)
            yield rec["state"]

    def result(self, path: Path, meta: dict[str, Any] | None) -> "DatasetArrays":
        n = len(self.actions)
        probs = None
        if self.width is not None:
            probs = np.frombuffer(self.probs, dtype=np.float64).reshape(n, self.width)
        return DatasetArrays(path, meta, np.frombuffer(self.actions, dtype=np.int64),
                             np.frombuffer(self.episodes, dtype=np.int64), probs,
                             dict(sorted(self.objects.counts.items())), self.objects.extent)


@dataclass
class DatasetArrays:
    """A validated dataset's labels and meta; its features of any layout on request."""

    path: Path
    meta: dict[str, Any] | None
    actions: np.ndarray                 # (N,) int64 teacher actions
    episodes: np.ndarray                # (N,) int64 episode ids (0 where a record has none)
    probs: np.ndarray | None            # (N, A) float64 teacher probabilities, when all have
    counts: dict[int, int]              # object type -> most objects of it in one record
    extent: tuple[int, int]             # (1 + largest y, 1 + largest x) of any object
    _memory: list[dict[str, Any]] | None = field(default=None, repr=False)
    _key: str | None = field(default=None, repr=False)     # the file's, when read from one
    _features: tuple[FeatureLayout, np.ndarray] | None = field(default=None, repr=False)

    @property
    def n_records(self) -> int:
        return len(self.actions)

    @property
    def n_actions(self) -> int:
        """Actions in the env (from the meta; else one more than the largest action seen)."""
        return action_count(self.meta, self.actions)

    def layout(self, max_slots: int | None = None, leads: tuple[int, ...] | None = None
               ) -> FeatureLayout:
        """:meth:`FeatureLayout.for_dataset` of these records: objects per type from the meta
        when it has them (else as counted), frame size from the meta (else the extent),
        object relations with ``leads``."""
        return FeatureLayout.for_dataset([], _layout_meta(self.meta, self.counts, self.extent),
                                         max_slots, leads)

    def iter_records(self) -> Iterator[dict[str, Any]]:
        """The records one at a time: from memory, or read again from the file."""
        if self._memory is not None:
            return iter(self._memory)
        return iter_json_list(self.path, SchemaError, "record")

    def features(self, layout: FeatureLayout) -> np.ndarray:
        """The (N, F) float32 feature matrix of ``layout`` (kept for the last layout asked;
        from the cache beside the file, else read again and cached)."""
        if self._features is not None and self._features[0] == layout:
            return self._features[1]
        if self._memory is not None:
            X = feature_matrix(layout, (r["state"] for r in self._memory))
        else:
            self._check_unchanged()
            X = self._cached_features(layout)
            if X is None:
                X = feature_matrix(layout, (r["state"] for r in self.iter_records()))
                self._check_unchanged()
                self._save((layout, X))
        self._features = (layout, X)
        return X

    @classmethod
    def open(cls, path: str | Path, max_slots: int | None = None) -> "DatasetArrays":
        """Read a dataset file (or a dataset run folder's) from its cache, or else in one
        validating pass (with the features of the layout for ``max_slots`` when the meta
        gives the objects per type), and cache it."""
        path, meta = dataset_file(path)
        if not path.is_file():
            raise SchemaError(f"{path}: no such file")
        key = _file_key(path, meta)
        cached = _read_labels(path, meta, key)
        if cached is not None:
            return cached
        gather = _Gather(path)
        states = gather.states(iter_dataset(path, meta))
        layout = None
        if meta and "max_objects_per_type" in meta:
            layout = FeatureLayout.for_dataset([], meta, max_slots)
            X = feature_matrix(layout, states)
        else:
            for _ in states:
                pass
        data = gather.result(path, meta)
        data._key = key
        data._check_unchanged()
        if layout is not None:
            data._features = (layout, X)
        data._save(data._features)
        return data

    @classmethod
    def of(cls, data: "Dataset | DatasetArrays") -> "DatasetArrays":
        """The arrays of records in memory (``data`` itself when it is arrays already)."""
        if isinstance(data, DatasetArrays):
            return data
        gather = _Gather(data.path)
        for rec in data.records:
            gather.add(rec)
        out = gather.result(data.path, data.meta)
        out._memory = data.records
        return out

    def _check_unchanged(self) -> None:
        """Refuse a file that is no longer the one these labels were read from."""
        if _file_key(self.path, self.meta) != self._key:
            raise UserError(f"{self.path} changed while it was in use; run again once it is "
                            f"complete")

    def _save(self, feats: tuple[FeatureLayout, np.ndarray] | None) -> None:
        """Write the cache (the labels, and ``feats``: a layout and its features) atomically;
        a folder that cannot be written to only costs the cache."""
        members: dict[str, Any] = {
            "key": np.array(self._key), "actions": self.actions, "episodes": self.episodes,
            "summary": np.array(json.dumps({"counts": self.counts, "extent": self.extent}))}
        if self.probs is not None:
            members["probs"] = self.probs
        if feats is not None:
            members["layout"] = np.array(_layout_key(feats[0]))
            members["X"] = feats[1]
        try:
            atomic_write_with(cache_path(self.path), lambda fh: np.savez(fh, **members))
        except OSError as err:
            print(f"[dataset] cannot write the feature cache {cache_path(self.path)}: {err}",
                  flush=True)

    def _cached_features(self, layout: FeatureLayout) -> np.ndarray | None:
        """The cache's features of ``layout`` for this file, else None."""
        cache = cache_path(self.path)
        if not cache.is_file():
            return None
        try:
            with np.load(cache, allow_pickle=False) as npz:
                if str(npz["key"]) != self._key or "X" not in npz.files or \
                        str(npz["layout"]) != _layout_key(layout):
                    return None
                X = npz["X"]
            if X.dtype != np.float32 or X.shape != (self.n_records, layout.size):
                raise ValueError(f"features of shape {X.shape} ({X.dtype})")
        except _UNREADABLE as err:
            _report(cache, err)
            return None
        return X


def _layout_meta(meta: dict[str, Any] | None, counts: dict[int, int],
                 extent: tuple[int, int]) -> dict[str, Any]:
    """The meta that :meth:`FeatureLayout.for_dataset` reads, completed from the records."""
    if meta and "max_objects_per_type" in meta:
        return meta
    return dict(meta or {"frame_size": list(extent)},
                max_objects_per_type={str(t): n for t, n in counts.items()})


def _file_key(path: Path, meta: dict[str, Any] | None) -> str:
    stat = path.stat()
    return json.dumps({"format": FORMAT, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                       "meta": meta, "schema": _source(schema)}, sort_keys=True)


def _report(cache: Path, err: BaseException) -> None:
    print(f"[dataset] {cache}: unreadable feature cache ({type(err).__name__}: {err}); "
          f"rebuilding it", flush=True)


def _read_labels(path: Path, meta: dict[str, Any] | None, key: str) -> DatasetArrays | None:
    """The cached labels of ``path`` when the cache is for this very file, else None."""
    cache = cache_path(path)
    if not cache.is_file():
        return None
    try:
        with np.load(cache, allow_pickle=False) as npz:
            if str(npz["key"]) != key:
                return None
            actions, episodes = npz["actions"], npz["episodes"]
            probs = npz["probs"] if "probs" in npz.files else None
            summary = json.loads(str(npz["summary"]))
        n = len(actions)
        if n == 0 or actions.shape != (n,) or episodes.shape != (n,) or \
                actions.dtype != np.int64 or episodes.dtype != np.int64 or \
                (probs is not None and (probs.ndim != 2 or len(probs) != n or
                                        probs.dtype != np.float64)):
            raise ValueError("arrays of the wrong shape or type")
        counts = {int(t): int(c) for t, c in summary["counts"].items()}
        extent = (int(summary["extent"][0]), int(summary["extent"][1]))
    except _UNREADABLE as err:
        _report(cache, err)
        return None
    return DatasetArrays(path, meta, actions, episodes, probs, counts, extent, _key=key)
