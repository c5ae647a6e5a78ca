"""Fitness of a forest: imitation of the teacher on a dataset, return in the env, or both.

Higher is better. ``imitation`` is minus the cross-entropy of the forest's softmax to the
teacher's actions on a dataset; ``reward`` is the mean return of the greedy forest (argmax of
the trees) over ``episodes`` games seeded ``seed, seed + 1, ...`` (the same games for every
forest); ``mixed`` is ``reward - imitation_weight * cross-entropy``. A ``length_bonus`` W
adds W x the share of ``max_steps`` the games lasted to the reward fitness: kept below the
smallest step of the mean return it only breaks ties, where every forest loses alike (in Pong,
21-0) and the one that keeps the ball in play longest is closest to returning it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import gymnasium as gym
import numpy as np

from gplearn_custom.envs import EnvFactory
from gplearn_custom.forest import cross_entropy
from see.tree import Token, logits

KINDS = ("imitation", "reward", "mixed")


@dataclass(frozen=True)
class FitnessSpec:
    """What a fitness evaluation needs; picklable, so worker processes rebuild from it."""

    kind: str = "reward"
    make_env: EnvFactory | None = None
    episodes: int = 3
    seed: int = 0
    max_steps: int | None = None
    X: np.ndarray | None = None          # (N, F) dataset features, for imitation
    actions: np.ndarray | None = None    # (N,) teacher actions
    imitation_weight: float = 1.0
    length_bonus: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"fitness must be one of {KINDS}, got {self.kind!r}")
        if self.kind != "imitation" and self.make_env is None:
            raise ValueError(f"{self.kind} fitness needs an env")
        if self.kind != "reward" and (self.X is None or self.actions is None):
            raise ValueError(f"{self.kind} fitness needs a dataset of teacher actions")
        if self.episodes < 1:
            raise ValueError("episodes must be at least 1")
        if self.length_bonus < 0 or (self.length_bonus > 0 and self.max_steps is None):
            raise ValueError("a length bonus is >= 0 and needs max_steps, the cap it is a "
                             "share of")


@dataclass
class Score:
    """One evaluation. ``agreement`` is on the dataset; ``online_agreement`` is with the
    teacher's actions during play, where the env gives them."""

    fitness: float
    mean_return: float | None = None
    returns: list[float] | None = None
    cross_entropy: float | None = None
    agreement: float | None = None
    online_agreement: float | None = None
    env_steps: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Score":
        return cls(**d)


def play(forest: Sequence[Sequence[Token]], env: gym.Env, seeds: Sequence[int],
         max_steps: int | None = None) -> tuple[list[float], int, float | None]:
    """The greedy forest plays one game per seed: returns, env steps, teacher agreement."""
    returns, steps, agree, known = [], 0, 0, 0
    for seed in seeds:
        obs, info = env.reset(seed=int(seed))
        total, t = 0.0, 0
        while True:
            action = int(np.argmax(logits(forest, np.asarray(obs)[None])[0]))
            teacher = info.get("teacher_action", -1)
            if teacher >= 0:
                known += 1
                agree += int(teacher == action)
            obs, reward, terminated, truncated, info = env.step(action)
            total += float(reward)
            t += 1
            if terminated or truncated or (max_steps is not None and t >= max_steps):
                break
        returns.append(total)
        steps += t
    return returns, steps, agree / known if known else None


class Evaluator:
    """Scores forests under one :class:`FitnessSpec`, building its env once, on first use."""

    def __init__(self, spec: FitnessSpec):
        self.spec = spec
        self._env: gym.Env | None = None

    @property
    def env(self) -> gym.Env:
        if self._env is None:
            self._env = self.spec.make_env(0)
        return self._env

    def __call__(self, forest: Sequence[Sequence[Token]], seed: int | None = None) -> Score:
        """Score ``forest``; ``seed`` replaces the spec's first game seed."""
        spec = self.spec
        score = Score(fitness=0.0)
        if spec.kind != "imitation":
            first = spec.seed if seed is None else seed
            seeds = [first + i for i in range(spec.episodes)]
            returns, steps, online = play(forest, self.env, seeds, spec.max_steps)
            score.returns, score.env_steps, score.online_agreement = returns, steps, online
            score.mean_return = float(np.mean(returns))
        if spec.X is not None and spec.actions is not None:
            values = logits(forest, spec.X)
            score.cross_entropy = cross_entropy(values, spec.actions)
            score.agreement = float((values.argmax(axis=1) == spec.actions).mean())
        if spec.kind == "imitation":
            score.fitness = -score.cross_entropy
        elif spec.kind == "reward":
            score.fitness = score.mean_return
        else:
            score.fitness = score.mean_return - spec.imitation_weight * score.cross_entropy
        if spec.length_bonus and spec.kind != "imitation":
            score.fitness += spec.length_bonus * score.env_steps / (spec.episodes *
                                                                    spec.max_steps)
        return score

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None
