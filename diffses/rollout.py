"""Step a one-env VecEnv with a policy, yielding what each agent step saw.

Shared by every stage that plays: frames for the detector, datasets of teacher behaviour,
evaluation of symbolic policies. Episode boundaries follow the Monitor (a real game over),
not lost lives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
from stable_baselines3.common.vec_env import VecEnv

from diffses.envs import reset_info


@dataclass
class Transition:
    """The observation at one agent step and the action the policy took on it."""

    obs: np.ndarray          # the policy's observation, batch of 1
    info: dict[str, Any]     # env info of this step (native frame, objects, lives, ...)
    episode: int             # index of the game, from 0
    step: int                # agent step within the game, from 0
    reward: float            # reward received on arriving at this step
    action: int              # the action taken here


def rollout(venv: VecEnv, policy: Callable[[np.ndarray, dict[str, Any]], int]
            ) -> Iterator[Transition]:
    """Play forever (the caller stops); ``policy(obs, info)`` returns an action index."""
    obs = venv.reset()
    info = reset_info(venv, 0)
    episode, step, reward = 0, 0, 0.0
    while True:
        action = int(policy(obs, info))
        yield Transition(obs, info, episode, step, reward, action)
        obs, rewards, dones, infos = venv.step(np.array([action]))
        reward, step, info = float(rewards[0]), step + 1, infos[0]
        if dones[0]:
            if "episode" in info:
                episode, step = episode + 1, 0
            info = reset_info(venv, 0)
