"""The env factory: ALE and Retro from one id, preprocessing, native frames, clear errors."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import retro_utils
from conftest import run_cli
from diffses.envs import (SingleGame, action_meanings, make_env, make_game, make_vec_env,
                          reset_info, resolve_env, screen)
from diffses.errors import UserError


def _play(env: gym.Env, seed: int, steps: int = 40) -> list[np.ndarray]:
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(steps):
        _, _, term, trunc, info = env.step(int(rng.integers(env.action_space.n)))
        frames.append(info["native_frame"])
        if term or trunc:
            env.reset()
    return frames


@pytest.mark.parametrize("env_id, backend, native", [
    ("ALE/Pong-v5", "ale", (210, 160, 3)),
    ("PongNoFrameskip-v4", "ale", (210, 160, 3)),
    ("Airstriker-Genesis-v0", "retro", (224, 320, 3)),
])
def test_factory_makes_env_with_teacher_obs_and_native_frame(env_id, backend, native):
    assert resolve_env(env_id).backend == backend
    env = make_env(env_id, native_frames=True)
    try:
        obs, info = env.reset(seed=0)
        assert obs.shape == (84, 84, 1) and obs.dtype == np.uint8
        assert info["native_frame"].shape == native
        np.testing.assert_array_equal(info["native_frame"], screen(env))
        assert len(action_meanings(env)) == env.action_space.n
    finally:
        env.close()


@pytest.mark.parametrize("env_id", ["ALE/Pong-v5", "Airstriker-Genesis-v0"])
def test_reset_with_seed_is_deterministic(env_id):
    env = make_env(env_id, native_frames=True)
    try:
        first = _play(env, seed=3)
        second = _play(env, seed=3)
        other = _play(env, seed=4)
    finally:
        env.close()
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(first, other))


def test_v5_ids_skip_four_frames_not_sixteen():
    env = make_env("ALE/Pong-v5", noop_max=0)
    try:
        env.reset(seed=0)
        ale = env.unwrapped.ale
        start = ale.getEpisodeFrameNumber()
        env.step(0)
        assert ale.getEpisodeFrameNumber() - start == 4
    finally:
        env.close()


def test_vec_env_stacks_four_frames():
    venv = make_vec_env("ALE/Pong-v5", n_envs=2, seed=0)
    try:
        assert venv.reset().shape == (2, 84, 84, 4)
    finally:
        venv.close()


def test_unknown_id_lists_close_matches():
    with pytest.raises(UserError, match="ALE/Pong-v5"):
        resolve_env("ALE/Pongg-v5")
    with pytest.raises(UserError, match="Airstriker-Genesis-v0"):
        resolve_env("Airstrikr-Genesis-v0")


def test_missing_rom_says_how_to_import():
    with pytest.raises(UserError, match="python -m stable_retro.import"):
        make_env("SuperMarioBros-Nes-v0")


@pytest.mark.parametrize("env_id, expected", [
    ("ALE/Pongg-v5", "Close matches: ALE/Pong-v5"),
    ("SuperMarioBros-Nes-v0", "python -m stable_retro.import"),
])
def test_cli_reports_bad_env_without_traceback(env_id, expected, tmp_path):
    proc = run_cli("train_visual_rl.py", "--env", env_id, "-n", "64", "--runs-dir", str(tmp_path))
    assert proc.returncode != 0
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "teacher").exists()


def test_retro_buttons_map_to_pad():
    env = make_env("Airstriker-Genesis-v0", frame_size=None)
    try:
        meanings = action_meanings(env)
        assert meanings[0] == "NOOP" and "LEFT+B" in meanings
        pad = env.get_wrapper_attr("action")(meanings.index("LEFT+B"))
        buttons = env.unwrapped.buttons
        assert {buttons[i] for i in np.flatnonzero(pad)} == {"LEFT", "B"}
        assert env.observation_space.shape == (224, 320, 3)
    finally:
        env.close()


def test_default_actions_for_a_game_without_a_list():
    combos = retro_utils.default_actions("SomeGame-Nes-v0", ["B", None, "SELECT", "START", "UP",
                                                             "DOWN", "LEFT", "RIGHT", "A"])
    assert combos[0] == [] and ["A"] in combos and ["LEFT", "A"] in combos


class LivesAndLevels(gym.Env):
    """A scripted game: a life is lost every 3 steps, the level changes every 4, 3 lives."""

    observation_space = gym.spaces.Box(0, 255, (4, 4, 3), np.uint8)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        self.resets = getattr(self, "resets", 0) + 1
        return np.zeros((4, 4, 3), np.uint8), self._info()

    def _info(self):
        return {"lives": 3 - self.t // 3, "level": self.t // 4}

    def step(self, action):
        self.t += 1
        info = self._info()
        return np.zeros((4, 4, 3), np.uint8), 1.0, info["lives"] == 0, False, info


def test_episodic_life_and_stage_progress():
    base = LivesAndLevels()
    env = retro_utils.EpisodicLife(retro_utils.StageProgress(base))
    _, info = env.reset(seed=0)
    assert info["stage"] == 0
    ends = []
    while base.resets < 2:
        _, _, term, _, info = env.step(0)
        assert info["stage"] == base.t // 4      # stage index carries on across lives
        if term:
            ends.append(base.t)
            env.reset()
    assert ends == [3, 6, 9]    # every lost life ends a learning episode,
    assert base.t == 0          # the game itself restarts only after the last life


@pytest.mark.parametrize("env_id", ["BreakoutNoFrameskip-v4", "ALE/Pong-v5"])
def test_fast_frame_skip_gives_the_same_steps_as_max_and_skip(env_id, monkeypatch):
    """The screen-skipping path returns byte-identical observations, rewards, ends and lives."""
    import diffses.envs as envs

    def steps(env: gym.Env) -> list:
        rng, out = np.random.default_rng(3), []
        obs, _ = env.reset(seed=5)
        out.append(obs.tobytes())
        for _ in range(1500):
            obs, reward, terminated, truncated, info = env.step(int(rng.integers(env.action_space.n)))
            out.append((obs.tobytes(), reward, terminated, truncated, info["lives"]))
            if terminated or truncated:
                obs, _ = env.reset()
                out.append(obs.tobytes())
        return out

    fast = make_env(env_id)
    assert any(isinstance(w, envs.AleSkip) for w in _wrappers(fast))
    monkeypatch.setattr(envs, "frame_skipper", lambda env, skip: envs.MaxAndSkipEnv(env, skip=skip))
    slow = make_env(env_id)
    assert not any(isinstance(w, envs.AleSkip) for w in _wrappers(slow))
    a, b = steps(fast), steps(slow)
    ends = sum(1 for s in a if isinstance(s, bytes)) - 1
    assert ends > 1 if env_id.startswith("Breakout") else any(s[1] for s in a[1:])
    assert a == b


@pytest.mark.parametrize("env_id,sticky,limit", [("BreakoutNoFrameskip-v4", 0.0, None),
                                                 ("PongNoFrameskip-v4", 0.25, None),
                                                 ("PongNoFrameskip-v4", 0.0, 300)])
def test_a_game_for_an_info_reader_is_the_teacher_envs_game(env_id, sticky, limit):
    """Without the stacked frames the game, its rewards, ends, resets and infos (native frame,
    RAM objects, lives) are the vec env's, step for step: lost lives, sticky draws and games
    cut by a step limit too."""
    kwargs = dict(clip_reward=False, native_frames=True, ground_truth=True,
                  max_episode_steps=limit, env_kwargs={"repeat_action_probability": sticky})

    def steps(venv) -> list:
        rng = np.random.default_rng(4)
        venv.reset()
        out = []
        for _ in range(1200):
            _, rewards, dones, infos = venv.step(np.array([rng.integers(4)]))
            info = reset_info(venv, 0) if dones[0] else infos[0]
            out.append((float(rewards[0]), bool(dones[0]), "episode" in infos[0],
                        infos[0].get("TimeLimit.truncated"), info.get("lives"),
                        info["native_frame"].tobytes(), info["objects"]))
        venv.close()
        return out
    game = make_game(env_id, 11, **kwargs)
    assert isinstance(game, SingleGame)
    a, b = steps(game), steps(make_vec_env(env_id, 1, 11, 4, **kwargs))
    assert sum(s[1] for s in a) > (1 if env_id.startswith("Breakout") else 0) or \
        any(s[0] for s in a)
    assert any(s[3] for s in a) == (limit is not None)
    assert a == b


def _wrappers(env: gym.Env) -> list[gym.Env]:
    out = [env]
    while hasattr(out[-1], "env"):
        out.append(out[-1].env)
    return out
