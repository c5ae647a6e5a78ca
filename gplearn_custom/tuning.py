"""The constants variation (``p_gradient``): tune a forest's constants, structure fixed.

``optimizer="ppo"`` trains the constants by PPO with the soft expert term
(:mod:`gplearn_custom.ppo`); ``"cmaes"`` searches them with CMA-ES (:mod:`gplearn_custom.cmaes`).
Both spend at most their config's ``n_timesteps`` env steps (PPO rounds up to whole rollouts).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from gplearn_custom.cmaes import CMAESConfig, ConstantCMAES
from gplearn_custom.envs import EnvFactory
from gplearn_custom.fitness import play
from gplearn_custom.forest import constants
from gplearn_custom.ppo import PPOConfig, one_thread, train_constants
from see.tree import Forest, Token

OPTIMIZERS = ("ppo", "cmaes")


@dataclass(frozen=True)
class ConstantTuner:
    """Picklable: worker processes run it. ``max_episode_steps`` caps CMA-ES's games."""

    make_env: EnvFactory
    optimizer: str = "ppo"
    ppo: PPOConfig = field(default_factory=PPOConfig)
    cmaes: CMAESConfig = field(default_factory=CMAESConfig)
    device: str = "cpu"
    max_episode_steps: int | None = None

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")

    def __call__(self, forest: Sequence[Sequence[Token]], seed: int
                 ) -> tuple[Forest, dict[str, Any]]:
        """The tuned forest and what the tuning did (env steps, last return, agreement)."""
        forest = [list(t) for t in forest]
        if not constants(forest):
            return forest, {"env_steps": 0}
        with one_thread():
            if self.optimizer == "ppo":
                trees, history, ppo = train_constants(forest, self.make_env, self.ppo, seed,
                                                      self.device)
                returns = [h.mean_return for h in history if h.mean_return is not None]
                agreement = [h.agreement for h in history if h.agreement is not None]
                return trees, {"env_steps": ppo.env_steps, "updates": len(history),
                               "last_return": returns[-1] if returns else None,
                               "last_agreement": agreement[-1] if agreement else None}
            env = self.make_env(0)
            try:
                def score_many(forests: list[Forest], seeds: list[int]
                               ) -> list[tuple[list[float], int]]:
                    return [play(f, env, seeds, self.max_episode_steps)[:2] for f in forests]

                search = ConstantCMAES(forest, score_many, self.cmaes, seed)
                last = None
                while not search.done:
                    last = search.step()
            finally:
                env.close()
            return search.trees(), {"env_steps": search.env_steps,
                                    "iterations": search.iterations,
                                    "last_return": None if last is None else
                                    last.mean_return}
