"""Feature environments: what reward fitness, PPO and CMA-ES play in.

A feature env is a ``gymnasium.Env`` with a ``Discrete`` action space whose observation is
a feature vector (F,) and whose ``info`` may hold ``teacher_action``: the teacher's action on
the same observation (-1 or absent: unknown). ``terminated`` means the game is over;
``truncated`` that a step cap was reached. Engines receive an env *factory*
``make_env(index) -> env``: a picklable callable, so worker processes build their own envs.
The pipeline's env, a game seen through perception, is :mod:`diffses.perception_env`.
"""

from __future__ import annotations

from typing import Callable

import gymnasium as gym

EnvFactory = Callable[[int], gym.Env]
