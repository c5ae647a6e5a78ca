"""A game seen through perception, as a feature env (:mod:`gplearn_custom.envs`) for the
engine's fitness, PPO and CMA-ES.

:class:`PerceptionEnv` plays the teacher's env pipeline (``teacher_env``) through the
detect -> track -> features path of :class:`diffses.play.SymbolicAgent`, and optionally the
teacher acting on its stacked frames. A game per ``reset(seed)``, made the way
:func:`diffses.play.play_episodes` makes it, so a seed gives the same game in both.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from diffses.detection import Detector, detector_for, load_detector
from diffses.envs import reset_info
from diffses.perception import Perception
from diffses.play import SymbolicAgent, sticky_kwargs
from diffses.policy import SymbolicPolicy
from diffses.runs import Run
from diffses.teacher import load_teacher, teacher_env


class PerceptionEnv(gym.Env):
    """A game seen through perception: observation = the layout's features (F,) float32;
    ``sticky``: the game under sticky actions with that probability (Atari)."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, teacher_run: Run, perception: Perception, policy: SymbolicPolicy,
                 teacher: Any | None = None, max_steps: int | None = None, sticky: float = 0.0):
        self.teacher_run, self.perception, self.teacher = teacher_run, perception, teacher
        self.env_kwargs = dict(perception.env_kwargs, **sticky_kwargs(teacher_run.env_id, sticky))
        self.agent = SymbolicAgent(policy, perception)
        self.max_steps = max_steps
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (policy.layout.size,),
                                                np.float32)
        self.action_space = gym.spaces.Discrete(policy.n_actions)
        self.venv: Any = None
        self._obs: np.ndarray | None = None          # the teacher's stacked frames (1, ...)
        self._features = np.zeros(policy.layout.size, np.float32)  # (F,)
        self._steps = 0

    def _observe(self, info: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
        features = self.agent.features(info)
        out: dict[str, Any] = {}
        if self.teacher is not None:
            out["teacher_action"] = int(self.teacher.predict(self._obs, deterministic=True)[0][0])
        return features, out

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self.close()
        self.venv = teacher_env(self.teacher_run, 0 if seed is None else int(seed),
                                frames=self.teacher is not None, clip_reward=False,
                                **self.env_kwargs)
        self._obs = self.venv.reset()
        self.agent.reset()
        self._steps = 0
        self._features, info = self._observe(reset_info(self.venv, 0))
        return self._features, info

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self._obs, rewards, dones, infos = self.venv.step(np.array([int(action)]))
        self._steps += 1
        game_over = bool(dones[0]) and "episode" in infos[0]
        info: dict[str, Any] = {}
        if not game_over:
            self._features, info = self._observe(reset_info(self.venv, 0) if dones[0]
                                                 else infos[0])
        truncated = not game_over and self.max_steps is not None and \
            self._steps >= self.max_steps
        return self._features, float(rewards[0]), game_over, truncated, info

    def close(self) -> None:
        if self.venv is not None:
            self.venv.close()
            self.venv = None


@functools.lru_cache(maxsize=4)
def _teacher_model(path: str, device: str) -> Any:
    return load_teacher(Run.load(path, "teacher"), device)


@functools.lru_cache(maxsize=4)
def _detector(ref: str, env_id: str, runs_dir: str, device: str) -> Detector:
    return load_detector(ref, env_id=env_id, runs_dir=runs_dir, device=device)


@dataclass(frozen=True)
class Loaded:
    """What a factory's references name, loaded (the teacher model may be None)."""

    teacher_run: Run
    detector: Detector
    teacher: Any | None = None


@dataclass(frozen=True)
class PerceptionEnvFactory:
    """Picklable recipe for :class:`PerceptionEnv`: a teacher run, a detector reference and the
    policy whose layout gives the features. ``with_teacher`` adds the teacher's actions;
    ``max_steps`` truncates each game, ``sticky`` plays it under sticky actions. ``loaded``
    holds what the references name when the caller has loaded it; it is not pickled, so a
    worker process loads it once itself."""

    teacher_run: str
    detector: str
    runs_dir: str
    policy: SymbolicPolicy
    with_teacher: bool = False
    max_steps: int | None = None
    device: str = "cpu"
    sticky: float = 0.0
    loaded: Loaded | None = field(default=None, compare=False, repr=False)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "loaded": None}

    def load(self) -> Loaded:
        """``loaded``, else the run, detector and teacher model loaded once in this process."""
        if self.loaded is not None:
            return self.loaded
        run = Run.load(self.teacher_run, "teacher")
        detector = detector_for(self.policy.layout.type_names, _detector(
            self.detector, run.env_id, self.runs_dir, self.device), "in play", self.detector)
        return Loaded(run, detector,
                      _teacher_model(str(run.path), self.device) if self.with_teacher else None)

    def __call__(self, index: int = 0) -> PerceptionEnv:
        loaded = self.load()
        teacher = loaded.teacher if self.with_teacher else None
        return PerceptionEnv(loaded.teacher_run, Perception(loaded.detector), self.policy,
                             teacher, self.max_steps, self.sticky)
