"""A pixel game that PPO learns in a few thousand steps: catch a falling ball.

84 x 84 grey frames: a 3 x 3 grid of 28 px cells. A ball falls one row per step down a random
lane, and a paddle in the bottom row moves one lane per action (NOOP, LEFT, RIGHT). A catch
pays +1, a miss -1; a game is 8 balls. Moving at random catches about a third of them; a
player that watches the ball catches every one.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

LANES, CELL, BALLS = 3, 28, 8


class PixelCatch(gym.Env):
    """Catch the falling ball; observations (84, 84, 1) uint8."""

    metadata = {"render_modes": []}

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(0, 255, (LANES * CELL, LANES * CELL, 1),
                                                np.uint8)
        self.action_space = gym.spaces.Discrete(3)
        self.ball = self.row = self.paddle = self.left = 0

    def _frame(self) -> np.ndarray:
        frame = np.zeros(self.observation_space.shape, np.uint8)
        frame[self.row * CELL:(self.row + 1) * CELL, self.ball * CELL:(self.ball + 1) * CELL] = 255
        frame[-CELL:, self.paddle * CELL:(self.paddle + 1) * CELL] = 128
        return frame

    def _drop(self) -> None:
        self.ball, self.row = int(self.np_random.integers(LANES)), 0

    def reset(self, *, seed: int | None = None, options: Any = None):
        super().reset(seed=seed)
        self.paddle, self.left = LANES // 2, BALLS
        self._drop()
        return self._frame(), {}

    def step(self, action: int):
        self.paddle = int(np.clip(self.paddle + (0, -1, 1)[int(action)], 0, LANES - 1))
        self.row += 1
        reward = 0.0
        if self.row == LANES - 1:
            reward = 1.0 if self.paddle == self.ball else -1.0
            self.left -= 1
            self._drop()
        return self._frame(), reward, self.left == 0, False, {}
