"""Planted-rule datasets: the teacher's action is the argmax of known feature expressions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from diffses.schema import Dataset

META = {"env_id": "Planted-v0", "n_actions": 3, "action_meanings": ["UP", "DOWN", "NOOP"],
        "type_names": {"0": "player", "1": "ball"}, "frame_size": [210, 160]}


def planted_records(n: int = 1500, seed: int = 0, two_actions: bool = False) -> list[dict]:
    """Player and ball at random heights. Logits (in layout units, y / 210):
    UP = player_y - ball_y, DOWN = ball_y - player_y, NOOP = 0.3; the teacher's probabilities
    are their softmax and its action their argmax. ``two_actions`` keeps UP and DOWN only."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        py, by = (int(v) for v in rng.integers(20, 190, size=2))
        logits = np.array([(py - by) / 210, (by - py) / 210, 0.3])
        if two_actions:
            logits = logits[:2]
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        records.append({
            "state": [
                {"type": 0, "x_velocity": 0.0, "y_velocity": float(rng.normal(0, 2)),
                 "x_position": 140, "y_position": py},
                {"type": 1, "x_velocity": float(rng.normal(0, 3)),
                 "y_velocity": float(rng.normal(0, 2)), "x_position": int(rng.integers(10, 150)),
                 "y_position": by}],
            "teacher_action": int(np.argmax(logits)), "episode": i // 100, "step": i % 100,
            "teacher_probs": [float(p) for p in probs]})
    return records


def planted_dataset(n: int = 1500, seed: int = 0, two_actions: bool = False,
                    probs: bool = True) -> Dataset:
    records = planted_records(n, seed, two_actions)
    if not probs:
        for r in records:
            del r["teacher_probs"]
    meta = dict(META)
    if two_actions:
        meta.update(n_actions=2, action_meanings=["UP", "DOWN"])
    return Dataset(Path("planted.json"), records, meta)


def write_planted(folder: Path, **kwargs) -> Path:
    """Write a planted dataset and its meta into ``folder``; returns the dataset path."""
    data = planted_dataset(**kwargs)
    path = folder / "planted.json"
    path.write_text(json.dumps(data.records))
    (folder / "planted.meta.json").write_text(json.dumps(data.meta))
    return path
