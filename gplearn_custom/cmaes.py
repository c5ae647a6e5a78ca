"""CMA-ES on a forest's constants (the ``cma`` package): the derivative-free baseline to PPO.

The search runs in scaled coordinates ``c = c0 + scale * z`` with ``scale = max(|c0|, 0.1)``
and ``z`` starting at 0, so one ``sigma0`` suits constants of any magnitude. Each iteration
draws fresh game seeds; every candidate of the iteration plays the same games (greedy
forest), and its fitness is the mean return. The run stops when ``n_timesteps`` env steps are
spent; the result is CMA-ES's favourite mean. Games of an iteration are seeded
``s, s + 1, ...`` from one fresh draw ``s``.
"""

from __future__ import annotations

import pickle
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import cma
import numpy as np

from gplearn_custom.forest import constants, with_constants
from gplearn_custom.params import param
from see.tree import Forest, Token

#: ``score_many(forests, seeds) -> [(returns, env_steps), ...]``, one entry per forest.
ScoreMany = Callable[[list[Forest], list[int]], list[tuple[list[float], int]]]


@dataclass(frozen=True)
class CMAESConfig:
    """CMA-ES settings: an env-step budget, the initial step and games per candidate."""

    n_timesteps: int = 5000
    sigma0: float = param(0.2, "CMA-ES: initial step, relative to each constant's size")
    popsize: int | None = param(None, "CMA-ES: population (default: cma's)")
    episodes: int = param(1, "CMA-ES: games per candidate")

    def __post_init__(self) -> None:
        if self.n_timesteps < 1 or self.episodes < 1 or self.sigma0 <= 0:
            raise ValueError("CMA-ES needs n_timesteps >= 1, episodes >= 1 and sigma0 > 0")
        if self.popsize is not None and self.popsize < 2:
            raise ValueError("CMA-ES popsize must be at least 2")


@dataclass
class IterationStats:
    """One CMA-ES iteration: candidates' mean and best return, the step size, constants."""

    iteration: int
    env_steps: int
    mean_return: float
    best_return: float
    sigma: float
    seconds: float
    constants: list[float]


class ConstantCMAES:
    """Ask-and-tell CMA-ES over the constants; :meth:`step` runs one iteration."""

    def __init__(self, trees: Sequence[Sequence[Token]], score_many: ScoreMany,
                 cfg: CMAESConfig, seed: int = 0):
        self.template: Forest = [list(t) for t in trees]
        self.c0 = np.array(constants(self.template), dtype=np.float64)       # (C,)
        if self.c0.size == 0:
            raise ValueError("the forest has no constants to tune")
        self.scale = np.maximum(np.abs(self.c0), 0.1)                       # (C,)
        self.cfg, self.score_many = cfg, score_many
        options: dict[str, Any] = {"seed": seed % (2**31 - 2) + 1, "verbose": -9}
        if cfg.popsize is not None:
            options["popsize"] = cfg.popsize
        self.es = cma.CMAEvolutionStrategy(np.zeros(self.c0.size), cfg.sigma0, options)
        self.rng = np.random.default_rng(seed)
        self.env_steps = 0
        self.iterations = 0
        self.episode_returns: list[tuple[int, float]] = []   # (env steps at the end, return)

    @property
    def done(self) -> bool:
        return self.env_steps >= self.cfg.n_timesteps

    def _forest(self, z: np.ndarray) -> Forest:
        return with_constants(self.template, (self.c0 + self.scale * np.asarray(z)).tolist())

    def trees(self) -> Forest:
        """The forest at CMA-ES's current favourite (its distribution mean)."""
        return self._forest(self.es.result.xfavorite)

    def step(self) -> IterationStats:
        t0 = time.perf_counter()
        candidates = self.es.ask()
        first = int(self.rng.integers(2**31 - 1 - self.cfg.episodes))
        seeds = [first + i for i in range(self.cfg.episodes)]
        results = self.score_many([self._forest(z) for z in candidates], seeds)
        means = []
        for returns, steps in results:
            self.env_steps += steps
            for r in returns:
                self.episode_returns.append((self.env_steps, float(r)))
            means.append(float(np.mean(returns)))
        self.es.tell(candidates, [-m for m in means])
        self.iterations += 1
        return IterationStats(self.iterations, self.env_steps, float(np.mean(means)),
                              float(np.max(means)), float(self.es.sigma),
                              time.perf_counter() - t0, constants(self.trees()))

    def state_dict(self) -> dict[str, Any]:
        """Everything to continue (the CMA-ES object pickled)."""
        return {"trees": self.template, "es": pickle.dumps(self.es),
                "rng": self.rng.bit_generator.state, "env_steps": self.env_steps,
                "iterations": self.iterations, "episode_returns": list(self.episode_returns)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.es = pickle.loads(state["es"])
        self.rng.bit_generator.state = state["rng"]
        self.env_steps, self.iterations = int(state["env_steps"]), int(state["iterations"])
        self.episode_returns = [tuple(x) for x in state["episode_returns"]]
