"""Same seed, same result: each stage run twice on this machine gives the same outputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from conftest import ROOT, SPACE_PONG_CONFIG, TINY_SPACE, tiny_teacher_config
from diffses.dataset import DatasetConfig
from diffses.dataset import run as build_dataset
from diffses.distill import DistillConfig, distil
from diffses.finetune import FinetuneConfig
from diffses.finetune import run as finetune
from diffses.frames import FramesConfig, read_index
from diffses.frames import run as save_frames
from diffses.schema import load_dataset
from diffses.teacher import load_teacher
from diffses.teacher import run as train_teacher
from planted import rule_dataset
from space.data import load_frames, select_records
from space.model import SpaceDetector, read_checkpoint
from space.train import Task
from space.train import train as train_space

#: Fine-tuning settings small enough to run twice: 32-step PPO updates, 40-step games.
TINY_FINETUNE = dict(detector="ocatari", n_envs=1, n_steps=32, batch_size=32, n_epochs=1,
                     max_steps=40, eval_episodes=0, select_episodes=1, device="cpu",
                     progress=False)


@pytest.fixture(scope="module")
def sample_policy(teacher_run, tmp_path_factory) -> Path:
    """A Pong policy distilled from sample.json, naming the session's teacher run."""
    data = load_dataset(ROOT / "sample.json")
    policy, _ = distil(DistillConfig(population_size=100, generations=2, runs_dir="unused"),
                       data)
    policy.provenance = {"dataset": str(data.path), "detector": "ocatari",
                         "teacher_run": str(teacher_run.path)}
    return policy.save(tmp_path_factory.mktemp("policy") / "policy.json")


def fine_tuned(done_path: Path) -> tuple[str, list[dict[str, Any]]]:
    """A fine-tuning run's policy trees and metrics, and its history without timings."""
    policy = json.loads((done_path / "policy.json").read_text())
    history = json.loads((done_path / "history.json").read_text())
    for record in history["history"]:
        record.pop("seconds")
    metrics = {k: v for k, v in policy["metrics"].items() if not k.startswith("seconds")}
    return json.dumps([policy["trees"], metrics, history]), history["history"]


def test_teacher_training_is_repeatable(tmp_path):
    runs = [train_teacher(tiny_teacher_config(tmp_path / str(i), n_timesteps=128, eval_freq=0,
                                              final_eval_episodes=0)) for i in range(2)]
    first, second = (load_teacher(r).policy.state_dict() for r in runs)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_frames_are_repeatable_byte_for_byte(teacher_run, tmp_path):
    runs = [save_frames(FramesConfig(teacher=str(teacher_run.path), n_frames=24, every=2,
                                     ground_truth=True, runs_dir=str(tmp_path / str(i)),
                                     progress=False, device="cpu")) for i in range(2)]
    first, second = (sorted(p.relative_to(r.path) for p in r.path.glob("*/*.png"))
                     for r in runs)
    assert len(first) == 24 and first == second
    for name in first:
        assert (runs[0].path / name).read_bytes() == (runs[1].path / name).read_bytes(), name
    assert (runs[0].path / "frames.jsonl").read_bytes() == (
        runs[1].path / "frames.jsonl").read_bytes()
    a, b = (r.manifest for r in runs)
    assert a["outputs"] == b["outputs"] and a["summary"] == b["summary"]
    assert a["frame_shape"] == b["frame_shape"]
    assert all(rec["objects"] for rec in read_index(runs[0].path))


def test_space_training_is_repeatable(pong_frames, one_thread, tmp_path):
    runs = [train_space(Task("train", str(SPACE_PONG_CONFIG), str(pong_frames.path),
                             str(tmp_path / str(i)), None, None,
                             {**TINY_SPACE, "train.max_steps": 4, "detect.threshold": 0.0}))
            for i in range(2)]
    first, second = (read_checkpoint(r.path / "checkpoint.pt") for r in runs)
    assert first["model"].keys() == second["model"].keys()
    assert all(torch.equal(first["model"][k], second["model"][k]) for k in first["model"])
    assert first["types"] == second["types"]
    frames = load_frames(pong_frames.path, select_records(pong_frames.path, "test"))
    found = [SpaceDetector.load(r.path / "checkpoint.pt", device="cpu").detect(frames)
             for r in runs]
    assert sum(map(len, found[0])) > 0 and found[0] == found[1]
    for a, b in zip(*found):
        for da, db in zip(a, b):
            np.testing.assert_array_equal(da.z_what, db.z_what)


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


def test_fine_tuning_by_gradient_is_repeatable(teacher_run, sample_policy, tmp_path):
    (first, history), (second, _) = (fine_tuned(finetune(FinetuneConfig(
        policy=str(sample_policy), teacher=str(teacher_run.path), runs_dir=str(tmp_path / str(i)),
        search="gradient", n_timesteps=64, **TINY_FINETUNE)).path) for i in range(2))
    assert first == second
    assert len(history) == 2


def test_fine_tuning_by_evolution_is_repeatable(teacher_run, sample_policy, tmp_path):
    (first, history), (second, _) = (fine_tuned(finetune(FinetuneConfig(
        policy=str(sample_policy), teacher=str(teacher_run.path), runs_dir=str(tmp_path / str(i)),
        search="evolve", population_size=4, generations=2, tournament_size=2, p_crossover=0.3,
        p_gradient=0.5, n_timesteps=32, episodes=1, **TINY_FINETUNE)).path) for i in range(2))
    assert first == second
    assert [h["generation"] for h in history] == [0, 1] and history[1]["tuned"] >= 1
