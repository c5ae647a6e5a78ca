"""One environment factory for ALE and stable-retro games, chosen from the id alone.

``make_env`` returns a single headless env with the standard Atari preprocessing for the
teacher (no-op reset, max-and-skip 4, episodic life, 84x84 grey; frame stacking happens in
the vector env) and, on request, the native RGB frame of the same step in
``info["native_frame"]`` and OCAtari's RAM objects in ``info["objects"]``. ``ALE/*-v5`` ids are
made with ``frameskip=1`` so frames are skipped once, by our wrapper.
"""

from __future__ import annotations

import difflib
import functools
import os
from dataclasses import dataclass
from typing import Any, Callable

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

import ale_py  # noqa: E402
import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
from gymnasium.wrappers import TimeLimit  # noqa: E402
from stable_baselines3.common.atari_wrappers import (  # noqa: E402
    ClipRewardEnv, FireResetEnv, MaxAndSkipEnv, NoopResetEnv, WarpFrame)
from stable_baselines3.common.monitor import Monitor  # noqa: E402
from stable_baselines3.common.vec_env import (  # noqa: E402
    DummyVecEnv, SubprocVecEnv, VecEnv, VecFrameStack)

from diffses.errors import UserError  # noqa: E402
from retro_utils import EpisodicLife  # noqa: E402

ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
gym.register_envs(ale_py)

RETRO_SUFFIX = "-v0"  # stable-retro names games "Airstriker-Genesis-v0"; the suffix may be left off


@dataclass(frozen=True)
class EnvSpec:
    """What an env id names: ``backend`` is ``ale`` or ``retro``; ``game`` the game's name."""

    env_id: str
    backend: str
    game: str


@functools.lru_cache(maxsize=1)
def ale_env_ids() -> tuple[str, ...]:
    """Every registered gymnasium id served by ale-py."""
    return tuple(sorted(k for k, spec in gym.registry.items()
                        if "ale_py" in str(spec.entry_point)))


@functools.lru_cache(maxsize=1)
def retro_games() -> tuple[str, ...]:
    """Every game stable-retro has an integration for (ROM imported or not)."""
    import stable_retro
    return tuple(sorted(stable_retro.data.list_games(stable_retro.data.Integrations.ALL)))


def resolve_env(env_id: str) -> EnvSpec:
    """Tell an ALE id from a Retro id; an unknown id gets an error listing close matches,
    a Retro game whose ROM is not imported an error with the import command."""
    if env_id in ale_env_ids():
        game = gym.registry[env_id].kwargs.get("game", env_id)
        return EnvSpec(env_id, "ale", game)
    for game in (env_id, env_id + RETRO_SUFFIX):
        if game in retro_games():
            check_retro_rom(game)
            return EnvSpec(game, "retro", game)
    known = list(ale_env_ids()) + list(retro_games())
    close = difflib.get_close_matches(env_id, known, n=5, cutoff=0.6)
    hint = f" Close matches: {', '.join(close)}." if close else ""
    raise UserError(f"unknown env id '{env_id}'.{hint} ALE ids look like ALE/Pong-v5 or "
                    f"PongNoFrameskip-v4; Retro ids like Airstriker-Genesis-v0.")


def game_name(env_id: str) -> str:
    """The game an env id runs, lower case (``pong`` for ``ALE/Pong-v5``)."""
    return resolve_env(env_id).game.lower()


def same_game(a: str, b: str) -> bool:
    """Whether two env ids run the same game (``ALE/Pong-v5`` and ``PongNoFrameskip-v4`` do:
    the same ROM and frames, other frame skips and sticky actions); an id this install does
    not know only matches itself."""
    if a == b:
        return True
    try:
        return game_name(a) == game_name(b)
    except UserError:
        return False


def require_same_game(what: str, env_id: str, other_what: str, other_env_id: str) -> None:
    """Refuse two inputs (``what`` plays ``env_id``, ``other_what`` plays ``other_env_id``)
    that are not of the same game."""
    if not same_game(env_id, other_env_id):
        raise UserError(f"{what} plays {env_id}, but {other_what} plays {other_env_id}: give "
                        f"inputs of one game")


def check_retro_rom(game: str) -> None:
    """Raise a :class:`UserError` with the import command when a Retro game has no ROM."""
    import stable_retro
    try:
        stable_retro.data.get_romfile_path(game, stable_retro.data.Integrations.ALL)
    except FileNotFoundError:
        raise UserError(
            f"the ROM for Retro game '{game}' is not imported. Put your ROM file in a folder "
            f"and run: python -m stable_retro.import /path/to/roms  (stable-retro ships only "
            f"a few free ROMs, such as Airstriker-Genesis)") from None


def ocatari_game(spec: EnvSpec) -> str | None:
    """The OCAtari game name for an ALE game it knows, else None."""
    if spec.backend != "ale":
        return None
    from ocatari.core import AVAILABLE_GAMES
    wanted = spec.game.replace("_", "").lower()
    return next((g for g in AVAILABLE_GAMES if g.lower() == wanted), None)


def screen(env: gym.Env) -> np.ndarray:
    """The emulator's current native RGB frame, shape (H, W, 3) uint8."""
    base = env.unwrapped
    if hasattr(base, "ale"):
        return base.ale.getScreenRGB()
    return np.asarray(base.get_screen(), dtype=np.uint8).copy()


def action_meanings(env: gym.Env) -> list[str]:
    """Readable names of the discrete actions."""
    try:
        return list(env.get_wrapper_attr("get_action_meanings")())
    except AttributeError:
        return [str(i) for i in range(env.action_space.n)]


class RamObjects:
    """OCAtari's RAM objects read from an ALE emulator we drive ourselves."""

    def __init__(self, game: str, hud: bool = True):
        from ocatari.ram.extract_ram_info import detect_objects_ram, init_objects
        self.game, self.hud = game, hud
        self._init, self._detect = init_objects, detect_objects_ram
        self.objects: list[Any] = []

    def reset(self) -> None:
        self.objects = self._init(self.game, self.hud)

    def read(self, ale: Any) -> list[dict[str, Any]]:
        """Update from the RAM and return visible objects as dicts (top-left x, y, w, h)."""
        self._detect(self.objects, ale.getRAM(), self.game, self.hud)
        return [{"category": o.category, "x": int(o.x), "y": int(o.y), "w": int(o.w),
                 "h": int(o.h), "hud": bool(o.hud)}
                for o in self.objects if o and getattr(o, "visible", True)]


def background_colour(frame: np.ndarray) -> np.ndarray:
    """(3,) uint8: the most common colour of an RGB ``frame`` (H, W, 3), its background
    (counted on every 4th pixel in each direction)."""
    rgb = frame[::4, ::4].astype(np.int32)
    packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    colours, counts = np.unique(packed, return_counts=True)
    colour = int(colours[counts.argmax()])
    return np.array([colour >> 16, (colour >> 8) & 255, colour & 255], np.uint8)


@dataclass(frozen=True)
class VisualShift:
    """A change of the picture that leaves the game alone: ``background`` paints the frame's
    most common colour (the background) ``value`` (R, G, B); ``noise`` adds Gaussian noise of
    std ``value[0]``; ``shift`` moves the picture ``value`` = (dx, dy) pixels, repeating the
    edge. Applied to every native frame before the teacher's preprocessing and the detector."""

    kind: str
    value: tuple[float, ...]

    KINDS = ("background", "noise", "shift")

    def __post_init__(self) -> None:
        sizes = {"background": 3, "noise": 1, "shift": 2}
        if self.kind not in sizes:
            raise UserError(f"unknown visual shift '{self.kind}' (one of {', '.join(sizes)})")
        if len(self.value) != sizes[self.kind]:
            raise UserError(f"visual shift '{self.kind}' takes {sizes[self.kind]} number(s), "
                            f"got {len(self.value)}")
        if self.kind == "noise" and self.value[0] < 0:
            raise UserError(f"visual shift 'noise' takes a std >= 0, not {self.value[0]:g}")
        if self.kind == "background" and not all(0 <= v <= 255 for v in self.value):
            raise UserError("visual shift 'background' takes R,G,B values in [0, 255]")

    def __call__(self, frame: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.kind == "background":
            out = frame.copy()
            out[(frame == background_colour(frame)).all(axis=-1)] = np.array(self.value,
                                                                             dtype=np.uint8)
            return out
        if self.kind == "noise":
            noisy = frame + rng.normal(0.0, self.value[0], frame.shape)
            return np.clip(noisy, 0, 255).astype(np.uint8)
        dx, dy = (int(v) for v in self.value)
        return move(frame, dx, dy)


def move(frame: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """``frame`` (H, W, 3) moved ``dx`` pixels right and ``dy`` down, its edge repeated."""
    if dx == 0 and dy == 0:
        return frame
    h, w = frame.shape[:2]
    padded = np.pad(frame, ((max(dy, 0), max(-dy, 0)), (max(dx, 0), max(-dx, 0)), (0, 0)),
                    mode="edge")
    y0, x0 = max(-dy, 0), max(-dx, 0)
    return padded[y0:y0 + h, x0:x0 + w]


class ShiftFrames(gym.ObservationWrapper):
    """Apply a :class:`VisualShift` to an RGB env's observations (seeded with the env)."""

    def __init__(self, env: gym.Env, shift: VisualShift):
        super().__init__(env)
        self.shift = shift
        self.rng = np.random.default_rng(0)

    def reset(self, **kwargs: Any):
        if kwargs.get("seed") is not None:
            self.rng = np.random.default_rng(kwargs["seed"])
        return super().reset(**kwargs)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        self.last = self.shift(observation, self.rng)
        return self.last


class AleSkip(MaxAndSkipEnv):
    """``MaxAndSkipEnv`` for an ALE game that reads the screen only for the two pooled frames.

    The frames before them go straight to the emulator (same calls, same order, so the same
    observations, rewards and sticky-action draws); reading a screen costs about as much as
    emulating a frame, so this saves a third of the env's time at skip 4.
    """

    def step(self, action: int):
        base = self.env.unwrapped
        ale, code, reward = base.ale, base._action_set[action], 0.0
        for _ in range(self._skip - 2):
            reward += ale.act(code, 1.0)
            terminated, truncated = ale.game_over(with_truncation=False), ale.game_truncated()
            if terminated or truncated:
                return self._obs_buffer.max(axis=0), reward, terminated, truncated, base._get_info()
        for i in range(2):
            obs, r, terminated, truncated, info = self.env.step(action)
            self._obs_buffer[i] = obs
            reward += float(r)
            if terminated or truncated:
                break
        return self._obs_buffer.max(axis=0), reward, terminated, truncated, info


def frame_skipper(env: gym.Env, skip: int) -> gym.Env:
    """Max-and-skip ``skip`` frames; ALE games with plain discrete actions take the fast path."""
    base = env.unwrapped
    fast = (isinstance(base, ale_py.AtariEnv) and base._frameskip == 1 and not base.continuous
            and base._obs_type == "rgb" and not base.sound_obs and skip >= 2)
    return AleSkip(env, skip=skip) if fast else MaxAndSkipEnv(env, skip=skip)


class FrameInfo(gym.Wrapper):
    """Add the native RGB frame (and optionally OCAtari RAM objects) of each step to ``info``."""

    def __init__(self, env: gym.Env, native_frames: bool = True, ocatari: str | None = None):
        super().__init__(env)
        self.native_frames = native_frames
        self.ram_objects = RamObjects(ocatari) if ocatari else None
        self.shifted = _find(env, ShiftFrames)   # the picture the agents see, when changed

    def _annotate(self, info: dict[str, Any]) -> dict[str, Any]:
        if self.native_frames:
            info["native_frame"] = (screen(self.env) if self.shifted is None
                                    else self.shifted.last.copy())
        if self.ram_objects is not None:
            info["objects"] = self.ram_objects.read(self.env.unwrapped.ale)
        return info

    def reset(self, **kwargs: Any):
        obs, info = self.env.reset(**kwargs)
        if self.ram_objects is not None:
            self.ram_objects.reset()
        return obs, self._annotate(info)

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, self._annotate(info)


def _find(env: gym.Env, kind: type) -> Any:
    """The first wrapper of ``kind`` in ``env``'s chain, or None."""
    while env is not None:
        if isinstance(env, kind):
            return env
        env = getattr(env, "env", None)
    return None


def make_env(env_id: str, *, frame_size: int | None = 84, frame_skip: int = 4,
             noop_max: int = 30, terminal_on_life_loss: bool = True,
             clip_reward: bool | None = None, max_episode_steps: int | None = None,
             native_frames: bool = False, ground_truth: bool = False,
             env_kwargs: dict[str, Any] | None = None,
             visual_shift: VisualShift | None = None) -> gym.Env:
    """A single headless env for ``env_id`` with the teacher's preprocessing.

    ``clip_reward`` defaults to on for ALE (the zoo setting) and off for Retro.
    ``frame_size=None`` keeps native RGB observations. ``ground_truth`` adds OCAtari objects.
    ``visual_shift`` changes every ALE frame before anything sees it (RAM objects stay true).
    ``env_kwargs`` go to the game itself (e.g. ALE's ``mode`` and ``difficulty``).
    """
    spec = resolve_env(env_id)
    env_kwargs = dict(env_kwargs or {})
    if spec.backend == "ale":
        oc_game = ocatari_game(spec) if ground_truth else None
        if ground_truth and oc_game is None:
            raise UserError(f"OCAtari has no ground truth for {env_id}")
        env_kwargs.setdefault("render_mode", "rgb_array")
        env = gym.make(spec.env_id, frameskip=1, max_episode_steps=None, **env_kwargs)
        env = ShiftFrames(env, visual_shift) if visual_shift is not None else env
        env = NoopResetEnv(env, noop_max=noop_max) if noop_max > 0 else env
        env = frame_skipper(env, frame_skip) if frame_skip > 1 else env
        env = TimeLimit(env, max_episode_steps) if max_episode_steps else env
        env = Monitor(env)
        env = EpisodicLife(env) if terminal_on_life_loss else env
        if "FIRE" in env.unwrapped.get_action_meanings():
            env = FireResetEnv(env)
        env = WarpFrame(env, width=frame_size, height=frame_size) if frame_size else env
        env = ClipRewardEnv(env) if clip_reward is None or clip_reward else env
    else:
        if ground_truth:
            raise UserError(f"OCAtari ground truth exists only for Atari games, not {env_id}")
        if visual_shift is not None:
            raise UserError(f"visual shifts are made for Atari games, not {env_id}")
        import stable_retro

        import retro_utils
        env_kwargs.setdefault("render_mode", "rgb_array")
        actions = env_kwargs.pop("actions", None)
        base = stable_retro.make(spec.game, inttype=stable_retro.data.Integrations.ALL,
                                 **env_kwargs)
        env = retro_utils.wrap_retro(
            base, spec.game, actions=actions, noop_max=noop_max, frame_skip=frame_skip,
            max_episode_steps=4500 if max_episode_steps is None else max_episode_steps,
            terminal_on_life_loss=terminal_on_life_loss, clip_reward=bool(clip_reward),
            frame_size=frame_size)
        oc_game = None
    if native_frames or oc_game:
        env = FrameInfo(env, native_frames=native_frames, ocatari=oc_game)
    return env


def make_vec_env(env_id: str, n_envs: int = 1, seed: int = 0, frame_stack: int = 4,
                 subprocess: bool | None = None, **env_kwargs: Any) -> VecEnv:
    """``n_envs`` copies of :func:`make_env`, seeded ``seed + i``, with frame stacking.

    Retro allows one emulator per process, so Retro envs always run in subprocesses.
    """
    spec = resolve_env(env_id)
    if spec.backend == "retro":
        subprocess = True
    fns: list[Callable[[], gym.Env]] = [functools.partial(make_env, spec.env_id, **env_kwargs)
                                        for _ in range(n_envs)]
    venv: VecEnv = SubprocVecEnv(fns, start_method="spawn") if subprocess else DummyVecEnv(fns)
    venv.seed(seed)
    if frame_stack > 1:
        venv = VecFrameStack(venv, frame_stack)
    return venv


class SingleGame:
    """One game stepped like a one-env ``DummyVecEnv`` (batch of 1, reset at every ``done``,
    seeded at its first reset), for players that act on ``info`` rather than the observation:
    no frame stack and no copy of each step's info, so the same game runs faster."""

    num_envs = 1

    def __init__(self, env: gym.Env, seed: int):
        self.env, self._seed = env, seed
        self.envs = [env]   # as a vec env lists its envs
        self.reset_infos: list[dict[str, Any]] = [{}]

    @property
    def unwrapped(self) -> "SingleGame":
        return self

    def reset(self) -> np.ndarray:
        obs, self.reset_infos[0] = self.env.reset(seed=self._seed)
        self._seed = None
        return obs[None]

    def step(self, actions: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        obs, reward, terminated, truncated, info = self.env.step(int(actions[0]))
        done = terminated or truncated
        info["TimeLimit.truncated"] = truncated and not terminated
        if done:
            info["terminal_observation"] = obs
            obs, self.reset_infos[0] = self.env.reset()
        return obs[None], np.array([reward], np.float32), np.array([done]), [info]

    def close(self) -> None:
        self.env.close()


def make_game(env_id: str, seed: int, **env_kwargs: Any) -> SingleGame | VecEnv:
    """One game of ``env_id`` for a player that reads ``info`` (a symbolic policy): the same
    game, rewards and infos as :func:`make_vec_env` gives for ``seed``, without the stacked
    frames it does not read (:class:`SingleGame`; Retro keeps its own process)."""
    if resolve_env(env_id).backend == "retro":
        return make_vec_env(env_id, 1, seed, 1, **env_kwargs)
    return SingleGame(make_env(env_id, **dict(env_kwargs, frame_size=None)), seed)


def reset_info(venv: VecEnv, index: int) -> dict[str, Any]:
    """The info of env ``index``'s latest reset (wrappers such as frame stacking hide it)."""
    return venv.unwrapped.reset_infos[index]


def env_info(env_id: str) -> dict[str, Any]:
    """Facts later stages need: canonical id, backend, action count and meanings, frame size."""
    spec = resolve_env(env_id)
    env = make_env(env_id, frame_size=None, native_frames=False)
    try:
        obs, _ = env.reset(seed=0)
        out = {"env_id": spec.env_id, "backend": spec.backend, "game": spec.game,
               "n_actions": int(env.action_space.n), "action_meanings": action_meanings(env),
               "frame_shape": list(screen(env).shape)}
        if spec.backend == "ale":
            ale = env.unwrapped.ale
            out.update(modes=[int(m) for m in ale.getAvailableModes()],
                       difficulties=[int(d) for d in ale.getAvailableDifficulties()])
        return out
    finally:
        env.close()
