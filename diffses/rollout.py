"""Step a one-env VecEnv with a policy, yielding what each agent step saw.

Shared by every stage that plays: frames for the detector, datasets of teacher behaviour,
evaluation of symbolic policies. Episode boundaries follow the Monitor (a real game over),
not lost lives.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
from stable_baselines3.common.vec_env import VecEnv

from diffses.envs import reset_info


@dataclass
class Transition:
    """One agent step: what the policy saw, what it did, and what came of it."""

    obs: np.ndarray          # the policy's observation, batch of 1
    info: dict[str, Any]     # env info of the observed state (native frame, objects, lives)
    episode: int             # index of the game, from 0
    step: int                # agent step within the game, from 0
    action: int              # the action taken on this observation
    reward: float            # the reward that action earned
    game_over: bool          # the game ended after this action (not just a life)


def rollout(venv: VecEnv, policy: Callable[[np.ndarray, dict[str, Any]], int]
            ) -> Iterator[Transition]:
    """Play forever (the caller stops); ``policy(obs, info)`` returns an action index."""
    obs = venv.reset()
    info = reset_info(venv, 0)
    episode, step = 0, 0
    while True:
        action = int(policy(obs, info))
        next_obs, rewards, dones, infos = venv.step(np.array([action]))
        game_over = bool(dones[0]) and "episode" in infos[0]
        yield Transition(obs, info, episode, step, action, float(rewards[0]), game_over)
        obs, info, step = next_obs, infos[0], step + 1
        if dones[0]:
            info = reset_info(venv, 0)
        if game_over:
            episode, step = episode + 1, 0


def games(make_venv: Callable[[int], VecEnv],
          make_actor: Callable[[int], Callable[[np.ndarray, dict[str, Any]], int]],
          first: int = 0) -> Iterator[Transition]:
    """Game after game from game ``first`` on (the caller stops), game k in its own env
    ``make_venv(k)`` played by ``make_actor(k)``: seeding both by k lets a long run resume at
    any game boundary exactly."""
    k = first
    while True:
        actor = make_actor(k)
        venv = make_venv(k)
        try:
            for t in rollout(venv, actor):
                yield dataclasses.replace(t, episode=k)
                if t.game_over:
                    break
        finally:
            venv.close()
        k += 1
