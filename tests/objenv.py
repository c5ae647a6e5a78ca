"""A small object game for fine-tuning tests: keep the paddle a fixed offset below the ball.

Two objects in a 100 x 100 frame: a paddle (type 0) and a ball (type 1) that moves up and
down between rows 10 and 60. Actions: NOOP, UP (paddle y - 4), DOWN (paddle y + 4). Each step
pays ``max(0, 1 - |paddle_y - (ball_y + 30)| / 30)``: the best place for the paddle is 30 px
below the ball. The observation is the :class:`FeatureLayout` vector of the two objects, so
forests act on it directly; ``info["teacher_action"]`` is the action of the best forest,
:data:`BEST` (in layout units the offset is 0.3):

    UP   = 20 * ((paddle0_y - ball0_y) - 0.3)
    DOWN = 20 * ((ball0_y + 0.3) - paddle0_y)
    NOOP = 0.5
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from diffses.features import FeatureLayout
from diffses.policy import SymbolicPolicy
from gplearn_custom.forest import with_constants
from see.tree import Forest, logits

LAYOUT = FeatureLayout(type_names={0: "paddle", 1: "ball"}, slots={0: 1, 1: 1},
                       frame_size=(100, 100))
PADDLE_Y, BALL_Y = LAYOUT.names.index("paddle0_y"), LAYOUT.names.index("ball0_y")
MEANINGS = ["NOOP", "UP", "DOWN"]
OFFSET = 0.3
EPISODE_STEPS = 50

#: The best forest: NOOP, UP, DOWN logits. Constants in order: 0.5, 20, 0.3, 20, 0.3.
BEST: Forest = [
    [{"c": 0.5}],
    [{"f": "mul"}, {"c": 20.0}, {"f": "sub"}, {"f": "sub"}, {"x": PADDLE_Y}, {"x": BALL_Y},
     {"c": OFFSET}],
    [{"f": "mul"}, {"c": 20.0}, {"f": "sub"}, {"f": "add"}, {"x": BALL_Y}, {"c": OFFSET},
     {"x": PADDLE_Y}],
]


def perturbed(offset: float) -> Forest:
    """:data:`BEST` with both offsets moved to ``offset``."""
    return with_constants(BEST, [0.5, 20.0, offset, 20.0, offset])


def policy(trees: Forest = BEST) -> SymbolicPolicy:
    """A :class:`SymbolicPolicy` over this game's layout."""
    return SymbolicPolicy([list(t) for t in trees], LAYOUT, list(MEANINGS), "ObjEnv-v0",
                          ["add", "sub", "mul"])


class OffsetCatchEnv(gym.Env):
    """The game; ``reward_scale=0`` gives a game without reward (for teacher-only tests)."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, reward_scale: float = 1.0):
        self.reward_scale = reward_scale
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (LAYOUT.size,), np.float32)
        self.action_space = gym.spaces.Discrete(len(MEANINGS))
        self.paddle_y = self.ball_y = self.ball_vy = self.paddle_vy = 0.0
        self.t = 0

    def _observe(self) -> tuple[np.ndarray, dict[str, Any]]:
        state = [{"type": 0, "x_position": 90.0, "y_position": self.paddle_y,
                  "x_velocity": 0.0, "y_velocity": self.paddle_vy},
                 {"type": 1, "x_position": 50.0, "y_position": self.ball_y,
                  "x_velocity": 0.0, "y_velocity": self.ball_vy}]
        obs = LAYOUT.vector(state)
        teacher = int(np.argmax(logits(BEST, obs[None])[0]))
        return obs, {"teacher_action": teacher}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        rng = self.np_random
        self.paddle_y = float(rng.uniform(0, 100))
        self.ball_y = float(rng.uniform(10, 60))
        self.ball_vy = float(rng.choice([-1, 1]) * rng.uniform(1.0, 2.0))
        self.paddle_vy = 0.0
        self.t = 0
        return self._observe()

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self.paddle_vy = (0.0, -4.0, 4.0)[int(action)]
        self.paddle_y = float(np.clip(self.paddle_y + self.paddle_vy, 0, 100))
        self.ball_y += self.ball_vy
        if not 10 <= self.ball_y <= 60:
            self.ball_vy = -self.ball_vy
            self.ball_y = float(np.clip(self.ball_y, 10, 60))
        gap = abs(self.paddle_y - (self.ball_y + 100 * OFFSET))
        reward = self.reward_scale * max(0.0, 1.0 - gap / 30.0)
        self.t += 1
        obs, info = self._observe()
        return obs, reward, False, self.t >= EPISODE_STEPS, info


def make_env(index: int = 0) -> OffsetCatchEnv:
    """The env factory engines take (picklable: a module-level function)."""
    return OffsetCatchEnv()


def make_silent_env(index: int = 0) -> OffsetCatchEnv:
    """The game without reward."""
    return OffsetCatchEnv(reward_scale=0.0)
