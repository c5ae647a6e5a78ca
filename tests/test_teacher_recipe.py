"""The CPU teacher recipe and shipped teachers: the preset's extractor, a short run that
learns, and a shipped teacher taken by every stage that takes a teacher."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.torch_layers import NatureCNN
from stable_baselines3.common.vec_env import VecFrameStack

from conftest import ROOT, run_cli
from diffses.dataset import DatasetConfig
from diffses.dataset import run as build_dataset
from diffses.detection import load_detector
from diffses.distill import DistillConfig
from diffses.distill import run as distill
from diffses.envs import same_game
from diffses.errors import UserError
from diffses.finetune import FinetuneConfig
from diffses.finetune import run as finetune
from diffses.frames import FramesConfig
from diffses.frames import run as save_frames
from diffses.hyperparams import load_hyperparams, split_hyperparams
from diffses.networks import SmallCNN, resolve_policy_kwargs
from diffses.play import greedy_teacher, play_episodes
from diffses.pretrained import ShipTeacherConfig
from diffses.pretrained import run as ship
from diffses.runs import Run, resolve_run
from diffses.teacher import load_teacher
from pixelcatch import PixelCatch

SHIPPED_PONG = ROOT / "pretrained" / "pong_teacher"


def test_cpu_preset_is_chosen_on_cpu_and_builds_the_small_cnn(teacher_run):
    assert teacher_run.manifest["preset"] == "atari-cpu"
    assert isinstance(load_teacher(teacher_run).policy.features_extractor, SmallCNN)
    key, zoo = load_hyperparams("ALE/Pong-v5", "ale", preset="atari")
    assert key == "atari" and "policy_kwargs" not in zoo
    assert load_hyperparams("ALE/Pong-v5", "ale", device="cuda")[0] == "atari"
    assert load_hyperparams("Airstriker-Genesis-v0", "retro")[0] == "retro"
    with pytest.raises(UserError, match="unknown hyperparameter preset 'fast'"):
        load_hyperparams("ALE/Pong-v5", "ale", preset="fast")
    with pytest.raises(UserError, match="unknown features_extractor_class 'TinyCNN'"):
        resolve_policy_kwargs({"features_extractor_class": "TinyCNN"})
    assert resolve_policy_kwargs({"features_extractor_class": "NatureCNN"})[
        "features_extractor_class"] is NatureCNN


def test_small_cnn_computes_the_plain_convolutions_and_their_gradients():
    """Channels-last inside SmallCNN changes the speed, not the numbers."""
    space = gym.spaces.Box(0, 1, (4, 84, 84), dtype=np.float32)
    net = SmallCNN(space)
    frames = torch.rand(32, 4, 84, 84)
    ours = net(frames)
    plain = net.linear(net.cnn(frames.contiguous()))
    assert ours.shape == (32, 256) and torch.allclose(ours, plain, atol=1e-5)
    grads = []
    for out in (ours, plain):
        net.zero_grad()
        out.square().sum().backward(retain_graph=True)
        grads.append(net.cnn[0].weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-4)


def test_cpu_preset_learns_a_pixel_game():
    """The shipped preset, unchanged, learns to catch a falling ball from pixels."""
    extras, kwargs = split_hyperparams(load_hyperparams("PongNoFrameskip-v4", "ale")[1])
    stack = extras["frame_stack"]
    venv = VecFrameStack(make_vec_env(PixelCatch, n_envs=extras["n_envs"], seed=0), stack)
    evaluation = VecFrameStack(make_vec_env(PixelCatch, n_envs=1, seed=123), stack)
    model = PPO(extras["policy"], venv, seed=0, device="cpu", **kwargs)
    before, _ = evaluate_policy(model, evaluation, n_eval_episodes=20)
    model.learn(12_288)
    after, _ = evaluate_policy(model, evaluation, n_eval_episodes=20)
    assert before < 2.0 and after >= 6.0, (before, after)  # 8 is every ball caught


def test_a_detector_serves_every_id_of_its_game():
    assert same_game("ALE/Pong-v5", "PongNoFrameskip-v4")
    assert not same_game("ALE/Pong-v5", "ALE/Breakout-v5")
    space = ROOT / "pretrained" / "space_pong.pt"
    assert load_detector(space, env_id="PongNoFrameskip-v4", device="cpu").type_names
    with pytest.raises(UserError, match="was trained on ALE/Pong-v5, not ALE/Breakout-v5"):
        load_detector(space, env_id="ALE/Breakout-v5", device="cpu")


@pytest.fixture(scope="module")
def shipped(teacher_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrained") / "tiny_teacher"
    ship(ShipTeacherConfig(out=str(out), teacher=str(teacher_run.path), episodes=2, seed=7,
                           max_steps=60, runs_dir=str(teacher_run.path.parent.parent)))
    return out


def test_shipped_teacher_is_policy_only_and_names_no_machine_path(shipped, teacher_run):
    text = (shipped / "manifest.json").read_text()
    manifest = json.loads(text)
    assert str(teacher_run.path.parent.parent) not in text
    assert manifest["env_id"] == "ALE/Pong-v5" and manifest["status"] == "complete"
    assert manifest["command"].startswith("train_visual_rl.py --env ALE/Pong-v5 -n 256")
    assert manifest["summary"]["eval"]["seeds"] == [7, 8]
    assert (shipped / "model.zip").stat().st_size < (teacher_run.path / "model.zip").stat().st_size
    model, original = load_teacher(Run.load(shipped)), load_teacher(teacher_run)
    obs = np.random.default_rng(0).integers(0, 255, (4, 84, 84, 4), dtype=np.uint8)
    assert np.array_equal(model.predict(obs, deterministic=True)[0],
                          original.predict(obs, deterministic=True)[0])
    assert resolve_run(shipped / "model.zip", "teacher").path == shipped
    again = run_cli("ship_teacher.py", "--teacher", str(teacher_run.path), "--out", str(shipped))
    assert again.returncode == 2 and "--overwrite" in again.stderr


def test_every_stage_takes_the_shipped_teacher(shipped, tmp_path):
    runs = str(tmp_path)
    frames = save_frames(FramesConfig(teacher=str(shipped / "model.zip"), n_frames=20,
                                      runs_dir=runs, progress=False, device="cpu"))
    assert frames.manifest["env_id"] == "ALE/Pong-v5"
    data = build_dataset(DatasetConfig(teacher=str(shipped), detector="ocatari", n_steps=120,
                                       runs_dir=runs, progress=False, device="cpu"))
    policy = distill(DistillConfig(dataset=str(data.path), population_size=60, generations=2,
                                   eval_episodes=1, eval_max_steps=30, runs_dir=runs))
    assert policy.manifest["summary"]["play"]["teacher"] is not None
    tuned = finetune(FinetuneConfig(policy=str(policy.path), teacher=str(shipped),
                                    detector="ocatari", runs_dir=runs, search="gradient",
                                    optimizer="cmaes", n_timesteps=40, cmaes_popsize=2,
                                    max_steps=20, eval_episodes=0, device="cpu",
                                    progress=False))
    assert tuned.manifest["status"] == "complete"


def test_shipped_pong_teacher_wins_a_seeded_game():
    run_ = resolve_run(SHIPPED_PONG, "teacher")
    assert run_.manifest["summary"]["eval"]["mean"] >= 18
    model = load_teacher(run_)
    returns = play_episodes(run_, [12345], greedy_teacher(model), {})
    assert returns[0] >= 15
