"""Wrappers that make stable-retro games behave like the Atari pipeline expects.

A Retro game exposes a MultiBinary button pad; the agent gets a small Discrete set of button
combinations (a per-game list, else a default built from the console's buttons). Around it:
a no-op reset, max-and-skip frames, episodic life from ``info["lives"]`` where the game has
it, stage/level tracking (the episode goes on across stages; the stage index is in ``info``),
a time limit and optional reward clipping. :func:`wrap_retro` assembles them in order.
"""

from __future__ import annotations

from typing import Any, Sequence

import gymnasium as gym
import numpy as np
from gymnasium.wrappers import TimeLimit
from stable_baselines3.common.atari_wrappers import ClipRewardEnv, MaxAndSkipEnv, WarpFrame
from stable_baselines3.common.monitor import Monitor

#: Button combinations per game; the first entry is always the no-op.
GAME_ACTIONS: dict[str, list[list[str]]] = {
    "Airstriker-Genesis-v0": [[], ["LEFT"], ["RIGHT"], ["UP"], ["DOWN"], ["B"],
                           ["LEFT", "B"], ["RIGHT", "B"], ["UP", "B"], ["DOWN", "B"]],
    "SuperMarioBros-Nes-v0": [[], ["RIGHT"], ["RIGHT", "A"], ["RIGHT", "B"], ["RIGHT", "A", "B"],
                           ["A"], ["LEFT"]],
    "SonicTheHedgehog-Genesis-v0": [[], ["LEFT"], ["RIGHT"], ["LEFT", "DOWN"], ["RIGHT", "DOWN"],
                                 ["DOWN"], ["DOWN", "B"], ["B"]],
}
#: The main action button per console, used to build the default action set.
FIRE_BUTTON: dict[str, str] = {"Genesis": "B", "Nes": "A", "Snes": "B", "Atari2600": "BUTTON",
                               "GameBoy": "A", "GbAdvance": "A", "GbColor": "A", "Sms": "B",
                               "GameGear": "B", "PCEngine": "I", "Saturn": "B", "32x": "B"}
#: RAM variables that games use for their stage or level, in order of preference.
STAGE_KEYS: tuple[str, ...] = ("level", "stage", "zone", "act", "round", "current_level")


def default_actions(game: str, buttons: Sequence[str]) -> list[list[str]]:
    """The game's action list, or no-op, 4 directions, fire, and fire with each direction."""
    if game in GAME_ACTIONS:
        return GAME_ACTIONS[game]
    system = game.removesuffix("-v0").rsplit("-", 1)[-1]
    fire = FIRE_BUTTON.get(system)
    if fire not in buttons:
        fire = next((b for b in buttons if b and b not in {"UP", "DOWN", "LEFT", "RIGHT", "START",
                                                           "SELECT", "MODE"}), None)
    dirs = [d for d in ("LEFT", "RIGHT", "UP", "DOWN") if d in buttons]
    combos: list[list[str]] = [[]] + [[d] for d in dirs]
    if fire:
        combos += [[fire]] + [[d, fire] for d in dirs]
    return combos


class DiscreteButtons(gym.ActionWrapper):
    """Map a Discrete action to a combination of pressed buttons on a MultiBinary pad."""

    def __init__(self, env: gym.Env, combos: Sequence[Sequence[str]]):
        super().__init__(env)
        buttons = list(env.unwrapped.buttons)
        unknown = sorted({b for combo in combos for b in combo} - set(buttons))
        if unknown:
            raise ValueError(f"buttons {unknown} are not on this pad {buttons}")
        self.combos = [list(c) for c in combos]
        self._arrays = []
        for combo in self.combos:
            arr = np.zeros(len(buttons), dtype=np.int8)
            for b in combo:
                arr[buttons.index(b)] = 1
            self._arrays.append(arr)
        self.action_space = gym.spaces.Discrete(len(self.combos))

    def action(self, act: int) -> np.ndarray:
        return self._arrays[int(act)].copy()

    def get_action_meanings(self) -> list[str]:
        return ["+".join(c) if c else "NOOP" for c in self.combos]


class NoopReset(gym.Wrapper):
    """After a reset, take a random number (1..noop_max) of no-op actions (action 0)."""

    def __init__(self, env: gym.Env, noop_max: int = 30):
        super().__init__(env)
        self.noop_max = noop_max

    def reset(self, **kwargs: Any):
        obs, info = self.env.reset(**kwargs)
        for _ in range(int(self.np_random.integers(1, self.noop_max + 1))):
            obs, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:
                obs, info = self.env.reset(**kwargs)
        return obs, info


class EpisodicLife(gym.Wrapper):
    """A lost life ends the learning episode; the game itself resets only when it is over
    (or when ``reset`` is given a seed, which always starts a new game).

    Lives are read from ``info["lives"]`` (Retro and ALE both report it); a game without
    that key is passed through.
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.lives: int | None = None
        self.game_over = True

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.game_over = terminated or truncated
        lives = info.get("lives")
        if lives is not None and self.lives is not None and 0 < lives < self.lives:
            terminated = True
        self.lives = lives
        return obs, reward, terminated, truncated, info

    def reset(self, **kwargs: Any):
        if self.game_over or kwargs.get("seed") is not None:
            obs, info = self.env.reset(**kwargs)
        else:
            obs, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:
                obs, info = self.env.reset(**kwargs)
        self.lives = info.get("lives")
        return obs, info


class StageProgress(gym.Wrapper):
    """Track the game's stage variable: ``info["stage"]`` counts stages reached since reset.

    The raw variable is kept as ``info["stage_value"]``; the episode is not cut at a stage.
    """

    def __init__(self, env: gym.Env, keys: Sequence[str] = STAGE_KEYS):
        super().__init__(env)
        self.keys = tuple(keys)
        self._value: Any = None
        self._stage = 0

    def _annotate(self, info: dict[str, Any]) -> dict[str, Any]:
        key = next((k for k in self.keys if k in info), None)
        if key is not None:
            value = info[key]
            if self._value is not None and value != self._value:
                self._stage += 1
            self._value = value
            info["stage_value"] = value
        info["stage"] = self._stage
        return info

    def reset(self, **kwargs: Any):
        obs, info = self.env.reset(**kwargs)
        self._value, self._stage = None, 0
        return obs, self._annotate(info)

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, self._annotate(info)


def wrap_retro(env: gym.Env, game: str, *, actions: Sequence[Sequence[str]] | None = None,
               noop_max: int = 30, frame_skip: int = 4, max_episode_steps: int | None = 4500,
               terminal_on_life_loss: bool = True, clip_reward: bool = False,
               frame_size: int | None = 84) -> gym.Env:
    """The Retro counterpart of SB3's AtariWrapper, with a Monitor for true episode returns.

    ``frame_size=None`` keeps native RGB observations (for object detection).
    """
    env = DiscreteButtons(env, actions or default_actions(game, env.unwrapped.buttons))
    env = StageProgress(env)
    if noop_max > 0:
        env = NoopReset(env, noop_max)
    if frame_skip > 1:
        env = MaxAndSkipEnv(env, skip=frame_skip)
    if max_episode_steps:
        env = TimeLimit(env, max_episode_steps)
    env = Monitor(env)
    if terminal_on_life_loss:
        env = EpisodicLife(env)
    if frame_size:
        env = WarpFrame(env, width=frame_size, height=frame_size)
    if clip_reward:
        env = ClipRewardEnv(env)
    return env
