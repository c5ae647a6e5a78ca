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


def _deadzone(py: np.ndarray, px: np.ndarray, by: np.ndarray, bx: np.ndarray,
              bvx: np.ndarray) -> np.ndarray:
    """UP when the ball is more than 8 px above the player, DOWN when below, else NOOP."""
    return np.where(by < py - 8, 0, np.where(by > py + 8, 1, 2))


def _intercept(py: np.ndarray, px: np.ndarray, by: np.ndarray, bx: np.ndarray,
               bvx: np.ndarray) -> np.ndarray:
    """RIGHT when the ball will be right of the paddle in 6 steps, else LEFT."""
    return np.where(bx + 6 * bvx > px, 1, 0)


def _lead3(py: np.ndarray, px: np.ndarray, by: np.ndarray, bx: np.ndarray,
           bvx: np.ndarray) -> np.ndarray:
    """Chase the ball's position 4 steps ahead with a 6 px dead zone: NOOP, LEFT or RIGHT."""
    target = bx + 4 * bvx
    return np.where(target < px - 6, 1, np.where(target > px + 6, 2, 0))


#: The 18 joystick actions of ALE games in their order (Boxing's action set).
JOYSTICK = ["NOOP", "FIRE", "UP", "RIGHT", "LEFT", "DOWN", "UPRIGHT", "UPLEFT", "DOWNRIGHT",
            "DOWNLEFT", "UPFIRE", "RIGHTFIRE", "LEFTFIRE", "DOWNFIRE", "UPRIGHTFIRE",
            "UPLEFTFIRE", "DOWNRIGHTFIRE", "DOWNLEFTFIRE"]


def _boxer(py: np.ndarray, px: np.ndarray, by: np.ndarray, bx: np.ndarray,
           bvx: np.ndarray) -> np.ndarray:
    """Step toward the other object on each axis beyond 8 px, and punch (FIRE) within 24 px:
    one of the 18 joystick actions, as a Boxing player might."""
    names = [("UP" if dy < 0 else "DOWN" if dy > 0 else "") +
             ("LEFT" if dx < 0 else "RIGHT" if dx > 0 else "") + ("FIRE" if fire else "")
             for dx, dy, fire in zip(np.sign(np.where(abs(bx - px) > 8, bx - px, 0)),
                                     np.sign(np.where(abs(by - py) > 8, by - py, 0)),
                                     (abs(bx - px) < 24) & (abs(by - py) < 24))]
    return np.array([JOYSTICK.index(n or "NOOP") for n in names])


#: name -> (rule over pixel positions and velocities, action meanings)
RULES = {"deadzone": (_deadzone, ["UP", "DOWN", "NOOP"]),
         "intercept": (_intercept, ["LEFT", "RIGHT"]),
         "lead3": (_lead3, ["NOOP", "LEFT", "RIGHT"]),
         "boxer18": (_boxer, JOYSTICK)}


def rule_dataset(rule: str, n: int = 1500, seed: int = 0) -> Dataset:
    """A dataset of actions only (no teacher probabilities) from a rule of :data:`RULES`:
    a player and a ball placed near each other at random, 100 steps an episode."""
    fn, meanings = RULES[rule]
    rng = np.random.default_rng(seed)
    px, py = rng.uniform(20, 140, n), rng.uniform(20, 190, n)
    bx = np.clip(px + rng.normal(0, 25, n), 0, 159)
    by = np.clip(py + rng.normal(0, 25, n), 0, 209)
    bvx, bvy = rng.uniform(-4, 4, n), rng.uniform(-4, 4, n)
    actions = fn(py, px, by, bx, bvx)
    records = [{"state": [
        {"type": 0, "x_position": float(px[i]), "y_position": float(py[i]),
         "x_velocity": 0.0, "y_velocity": 0.0},
        {"type": 1, "x_position": float(bx[i]), "y_position": float(by[i]),
         "x_velocity": float(bvx[i]), "y_velocity": float(bvy[i])}],
        "teacher_action": int(actions[i]), "episode": i // 100, "step": i % 100}
        for i in range(n)]
    meta = dict(META, n_actions=len(meanings), action_meanings=meanings,
                env_id=f"Planted-{rule}")
    return Dataset(Path(f"{rule}.json"), records, meta)
