"""Same seed, same result: each stage run twice on this machine gives the same outputs."""

from __future__ import annotations

import json

import torch

from conftest import ROOT, tiny_teacher_config
from diffses.dataset import DatasetConfig
from diffses.dataset import run as build_dataset
from diffses.distill import DistillConfig, distil
from diffses.finetune import FinetuneConfig
from diffses.finetune import run as finetune
from diffses.schema import load_dataset
from diffses.teacher import load_teacher
from diffses.teacher import run as train_teacher
from planted import rule_dataset


def test_teacher_training_is_repeatable(tmp_path):
    runs = [train_teacher(tiny_teacher_config(tmp_path / str(i), n_timesteps=128, eval_freq=0,
                                              final_eval_episodes=0)) for i in range(2)]
    first, second = (load_teacher(r).policy.state_dict() for r in runs)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_dataset_building_is_repeatable_byte_for_byte(teacher_run, tmp_path):
    paths = [build_dataset(DatasetConfig(teacher=str(teacher_run.path), detector="ocatari",
                                         n_steps=150, runs_dir=str(tmp_path / str(i)),
                                         progress=False)).path / "dataset.json"
             for i in range(2)]
    assert paths[0].read_bytes() == paths[1].read_bytes()


def test_distillation_is_repeatable():
    data = rule_dataset("lead3", n=600, seed=4)
    cfg = DistillConfig(population_size=200, generations=4, runs_dir="unused", seed=4)
    (a, ma), (b, mb) = distil(cfg, data), distil(cfg, data)
    assert json.dumps(a.trees) == json.dumps(b.trees)
    assert ma["restarts"] == mb["restarts"]


def test_fine_tuning_by_gradient_is_repeatable(teacher_run, tmp_path):
    data = load_dataset(ROOT / "sample.json")
    policy, _ = distil(DistillConfig(population_size=100, generations=2, runs_dir="unused"),
                       data)
    policy.provenance = {"dataset": str(data.path), "detector": "ocatari",
                         "teacher_run": str(teacher_run.path)}
    path = policy.save(tmp_path / "policy.json")
    histories = []
    for i in range(2):
        done = finetune(FinetuneConfig(policy=str(path), teacher=str(teacher_run.path),
                                       detector="ocatari", runs_dir=str(tmp_path / str(i)),
                                       search="gradient", n_timesteps=64, n_envs=1, n_steps=32,
                                       batch_size=32, n_epochs=1, max_steps=40,
                                       eval_episodes=0, select_episodes=1, device="cpu",
                                       progress=False))
        history = json.loads((done.path / "history.json").read_text())["history"]
        histories.append([(h["constants"], h["env_steps"], h["pg_loss"]) for h in history])
        histories[-1].append(json.loads((done.path / "policy.json").read_text())["trees"])
    assert histories[0] == histories[1]
