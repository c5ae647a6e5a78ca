"""Stage I teacher: a tiny real PPO run, its files, reload, resume after SIGKILL, bad input."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from conftest import ROOT, TINY_PPO, run_cli, tiny_teacher_config
from diffses.cli import parse, parse_overrides
from diffses.errors import UserError
from diffses.hyperparams import LinearSchedule, load_hyperparams, \
    split_hyperparams
from diffses.pretrained import training_command
from diffses.runs import Run, resolve_run
from diffses.teacher import TeacherConfig, latest_checkpoint, load_teacher, run, teacher_env


def test_tiny_run_writes_model_manifest_and_tensorboard(teacher_run):
    path = teacher_run.path
    assert (path / "model.zip").is_file() and (path / "best_model.zip").is_file()
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["stage"] == "teacher"
    assert manifest["summary"]["timesteps"] == 256
    assert np.isfinite(manifest["summary"]["final_eval_mean"])
    assert set(manifest["outputs"]) >= {"model.zip", "best_model.zip"}
    assert manifest["hyperparams"]["n_steps"] == 64
    assert list((path / "tb").rglob("events.out.tfevents.*"))
    assert latest_checkpoint(path).name == "ckpt_000000000256.zip"


def test_model_reloads_and_acts(teacher_run):
    model = load_teacher(teacher_run)
    assert model.num_timesteps == 256
    venv = teacher_env(teacher_run, seed=1)
    try:
        obs = venv.reset()
        assert obs.shape == (1, 84, 84, 4)
        for _ in range(5):
            action, _ = model.predict(obs)
            assert 0 <= int(action[0]) < venv.action_space.n
            obs, _, _, _ = venv.step(action)
    finally:
        venv.close()


def test_latest_resolves_to_newest_complete_run(teacher_run):
    runs_dir = teacher_run.path.parent.parent
    assert resolve_run("latest", "teacher", runs_dir).path == teacher_run.path
    assert resolve_run("latest", "teacher", runs_dir, env_id="ALE/Pong-v5").path == \
        teacher_run.path
    with pytest.raises(UserError, match="no complete 'teacher' run"):
        resolve_run("latest", "teacher", runs_dir, env_id="ALE/Breakout-v5")
    with pytest.raises(UserError, match="'teacher' run, expected a 'frames' run"):
        Run.load(teacher_run.path, "frames")


def test_killed_run_resumes_to_requested_total(tmp_path):
    total = 2048  # a multiple of one rollout (2 envs x 64 steps)
    args = ["--env", "ALE/Pong-v5", "-n", str(total), "--n-envs", "2", "--hyperparams",
            *TINY_PPO, "--runs-dir", str(tmp_path), "--checkpoint-freq", "256",
            "--eval-freq", "0", "--final-eval-episodes", "1", "--eval-max-steps", "50",
            "--device", "cpu", "--no-progress"]
    proc = subprocess.Popen([sys.executable, str(ROOT / "train_visual_rl.py"), *args],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    ckpts: list = []
    while time.time() < deadline and not ckpts:
        ckpts = list(tmp_path.glob("teacher/*/checkpoints/ckpt_*.zip"))
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert ckpts, "no checkpoint appeared"
    run_dir = ckpts[0].parent.parent
    killed_at = int(latest_checkpoint(run_dir).stem.split("_")[1])
    assert killed_at < total
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "running"
    assert not (run_dir / "model.zip").exists()

    done = run_cli("train_visual_rl.py", "--resume", str(run_dir), "--runs-dir", str(tmp_path),
                   "--no-progress", "--device", "cpu")
    assert done.returncode == 0, done.stderr
    assert f"training {killed_at} -> {total}" in done.stdout
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["summary"]["timesteps"] == total
    assert len(list(tmp_path.glob("teacher/*"))) == 1  # continued in place, no new run
    model = load_teacher(Run.load(run_dir))
    assert model.num_timesteps == total
    # schedules ran over the whole requested total: progress ends at exactly 0, not above it
    assert model._current_progress_remaining == pytest.approx(0.0, abs=1e-9)
    # every call is on record, so the shipped command reproduces the two calls
    first, second = manifest["segments"]
    assert (first["from"], first["total"], "to" in first) == (0, total, False)
    assert (second["from"], second["to"], second["total"]) == (killed_at, total, total)
    more = run_cli("train_visual_rl.py", "--resume", str(run_dir), "--runs-dir", str(tmp_path),
                   "-n", str(total + 128), "--no-progress", "--device", "cpu")
    assert more.returncode == 0, more.stderr
    assert training_command(Run.load(run_dir)) == (
        f"train_visual_rl.py --env ALE/Pong-v5 -n {total} --seed 0 --preset atari-cpu "
        f"--n-envs 2 --hyperparams {' '.join(TINY_PPO)} && "
        f"train_visual_rl.py --resume RUN -n {total} && "
        f"train_visual_rl.py --resume RUN -n {total + 128}")


def test_hyperparams_lookup_and_overrides():
    atari = load_hyperparams("ALE/Pong-v5", "ale", preset="atari")[1]
    assert (atari["n_envs"], atari["n_steps"], atari["n_epochs"], atari["batch_size"]) == \
        (8, 128, 4, 256)
    assert atari["learning_rate"] == "lin_2.5e-4" and atari["clip_range"] == "lin_0.1"
    retro = load_hyperparams("Airstriker-Genesis-v0", "retro")[1]
    assert retro["env_kwargs"]["clip_reward"] is False
    extras, ppo = split_hyperparams(load_hyperparams(
        "ALE/Pong-v5", "ale", parse_overrides(["n_steps:64", "ent_coef:0.0"]), preset="atari")[1])
    assert ppo["n_steps"] == 64 and ppo["ent_coef"] == 0.0 and extras["n_timesteps"] == 10**7
    assert isinstance(ppo["learning_rate"], LinearSchedule)
    assert ppo["learning_rate"](0.5) == pytest.approx(1.25e-4)
    assert parse_overrides(["n_steps=64", "learning_rate:lin_1e-4", "env_kwargs.x", "cuda:0",
                            "policy_kwargs=dict(a=1)"]) == \
        {"n_steps": 64, "learning_rate": "lin_1e-4", "env_kwargs.x": "cuda:0",
         "policy_kwargs": "dict(a=1)"}
    for bad, message in ((["n_steps"], "has no value: write n_steps=VALUE"),
                         (["=64"], "not of the form key=value"),
                         (["n steps=4"], "not of the form key=value"),
                         (["clip_range=[1"], "cannot read the value")):
        with pytest.raises(UserError, match=re.escape(message)):
            parse_overrides(bad)
    with pytest.raises(UserError, match="unknown PPO hyperparameter 'n_step'"):
        split_hyperparams({"n_step": 3})


def test_cli_flags_parse_into_the_config():
    cfg = parse(TeacherConfig, ["--env", "Airstriker-Genesis-v0", "-n", "1000", "--seed", "7",
                                "--hyperparams", "n_steps:64", "ent_coef:0.1", "--no-progress"])
    assert cfg.env == "Airstriker-Genesis-v0" and cfg.n_timesteps == 1000 and cfg.seed == 7
    assert cfg.hyperparams == ("n_steps:64", "ent_coef:0.1") and cfg.progress is False


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_missing_cuda_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="CUDA is not available"):
        run(tiny_teacher_config(tmp_path, device="cuda"))
    proc = run_cli("train_visual_rl.py", "-n", "64", "--device", "cuda", "--runs-dir",
                   str(tmp_path))
    assert proc.returncode == 2 and "CUDA is not available" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_resume_of_missing_run_is_a_clear_error(tmp_path):
    proc = run_cli("train_visual_rl.py", "--resume", str(tmp_path / "nope"), "--runs-dir",
                   str(tmp_path))
    assert proc.returncode == 2 and "does not exist" in proc.stderr


@pytest.mark.parametrize("overrides, message", [
    (["learning_rate=abc"], "hyperparameter learning_rate must be a number or lin_<number>, "
                            "not 'abc'"),
    (["n_steps=1.5"], "hyperparameter n_steps must be an integer, not 1.5"),
    (["clip_range=lin_x"], "hyperparameter clip_range must be a number or lin_<number>"),
    (["normalize_advantage=3"], "hyperparameter normalize_advantage must be true or false"),
    (["gamma=[1]"], "hyperparameter gamma must be a number, not [1]"),
])
def test_bad_hyperparameter_values_are_refused_before_training(tmp_path, overrides, message):
    with pytest.raises(UserError, match=re.escape(message)):
        run(tiny_teacher_config(tmp_path, hyperparams=tuple(overrides)))
    assert not (tmp_path / "teacher").exists()


def test_runs_dir_that_is_a_file_is_a_clear_error(tmp_path):
    path = tmp_path / "afile"
    path.write_text("x")
    for args in (["-n", "64"], ["--resume", "latest"]):
        proc = run_cli("train_visual_rl.py", *args, "--runs-dir", str(path))
        assert proc.returncode == 2 and f"--runs-dir {path}: {path} is a file" in proc.stderr
        assert "Traceback" not in proc.stderr
    assert path.read_text() == "x"
