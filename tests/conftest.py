"""Shared fixtures: a tiny real teacher run, trained once per test session, and a small
Pong frames run with the tiny SPACE settings that train on it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from diffses.teacher import TeacherConfig, run as train_teacher  # noqa: E402

#: Smallest PPO settings that still run full rollouts and updates: 2 envs x 64 steps.
TINY_PPO = ("n_steps:64", "batch_size:64", "n_epochs:1")
SPACE_PONG_CONFIG = ROOT / "space" / "configs" / "atari_pong.yaml"
#: a SPACE model small enough for tests: 32x32 inputs, a 4x4 grid of 8 px cells
TINY_SPACE = {"data.image_size": [32, 32], "model.grid": [4, 4], "model.feat_channels": 16,
              "model.glimpse_hidden": 32, "model.z_what": 4, "model.bg_decode_size": [8, 8],
              "model.bg_channels": 8, "train.batch_size": 4, "train.log_every": 2,
              "train.image_every": 4, "train.progress": False, "detect.type_frames": 16,
              "detect.types": 2, "device": "cpu", "num_threads": 1}


def tiny_teacher_config(runs_dir: Path, **overrides) -> TeacherConfig:
    """A 256-step Pong teacher config with short evaluations."""
    values = dict(env="ALE/Pong-v5", n_timesteps=256, n_envs=2, hyperparams=TINY_PPO,
                  runs_dir=str(runs_dir), checkpoint_freq=128, eval_freq=128,
                  eval_episodes=1, final_eval_episodes=1, eval_max_steps=100, progress=False,
                  device="cpu")
    values.update(overrides)
    return TeacherConfig(**values)


@pytest.fixture(scope="session")
def teacher_run(tmp_path_factory):
    """A finished 256-step Pong teacher run."""
    runs = tmp_path_factory.mktemp("runs")
    return train_teacher(tiny_teacher_config(runs))


@pytest.fixture(scope="session")
def short_games_teacher(tmp_path_factory):
    """A finished 128-step Breakout teacher: its games last a few hundred steps, where a
    Pong game lasts a thousand, for tests that need several whole games."""
    runs = tmp_path_factory.mktemp("runs")
    return train_teacher(tiny_teacher_config(runs, env="BreakoutNoFrameskip-v4",
                                             n_timesteps=128, eval_freq=0,
                                             final_eval_episodes=0))


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread (and do not fight other work for cores)."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def pong_frames(tmp_path_factory):
    """A finished save_frames run: 60 random-play Pong frames with OCAtari ground truth."""
    from diffses.frames import FramesConfig, run as save_frames
    runs = tmp_path_factory.mktemp("runs")
    cfg = FramesConfig(policy="random", env="ALE/Pong-v5", n_frames=60, every=2,
                       ground_truth=True, runs_dir=str(runs), progress=False, seed=3)
    return save_frames(cfg)


def run_cli(script: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run one of the top-level scripts as a user would, capturing its output."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, str(ROOT / script), *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, env=env)


def kill_when(script: str, args: list[str], marker: Path, pattern: str,
              timeout: float = 120) -> None:
    """Run a top-level script and SIGKILL it as soon as a file matching ``pattern`` appears
    under ``marker`` (e.g. a run's progress file)."""
    import signal
    import time
    proc = subprocess.Popen([sys.executable, str(ROOT / script), *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    deadline = time.time() + timeout
    while not list(marker.glob(pattern)):
        assert proc.poll() is None and time.time() < deadline, f"{script} ended before {pattern}"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
