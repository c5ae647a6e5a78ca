"""symbolic_finetuning.py on real Pong: a tiny teacher, the ocatari detector, a policy distilled
from sample.json; end to end through the CLI, resume after SIGKILL, and bad input."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from conftest import ROOT, run_cli, tiny_teacher_config
from diffses.detection import OcatariDetector
from diffses.distill import DistillConfig, distil
from diffses.finetune import FinetuneConfig, run, search_seconds, teacher_features
from diffses.perception import Perception
from diffses.perception_env import PerceptionEnvFactory
from diffses.play import SymbolicAgent, play_episodes, play_symbolic
from diffses.policy import SymbolicPolicy
from diffses.runs import Run
from diffses.schema import load_dataset
from diffses.teacher import run as train_teacher
from gplearn_custom import forest as fo
from gplearn_custom.fitness import Evaluator, FitnessSpec

TINY = ("--n-envs", "1", "--n-steps", "32", "--batch-size", "32", "--n-epochs", "1",
        "--max-steps", "40", "--eval-episodes", "1", "--eval-max-steps", "40",
        "--device", "cpu", "--no-progress")


@pytest.fixture(scope="module")
def small_teacher(tmp_path_factory):
    """A finished Pong teacher of one PPO update (128 steps), no evaluations: fine-tuning
    needs its env pipeline and a model that acts, not skill."""
    return train_teacher(tiny_teacher_config(tmp_path_factory.mktemp("runs"), n_timesteps=128,
                                             eval_freq=0, final_eval_episodes=0))


@pytest.fixture(scope="module")
def pong_policy(tmp_path_factory):
    """A Pong policy distilled from sample.json (its provenance names sample.json)."""
    data = load_dataset(ROOT / "sample.json")
    policy, _ = distil(DistillConfig(population_size=200, generations=3, runs_dir="unused"),
                       data)
    policy.provenance = {"dataset": str(data.path), "detector": "ocatari",
                         "teacher_run": "/nonexistent/teacher"}
    return policy.save(tmp_path_factory.mktemp("policy") / "policy.json")


def test_fitness_games_are_the_evaluation_games(small_teacher, pong_policy):
    policy = SymbolicPolicy.load(pong_policy)
    factory = PerceptionEnvFactory(str(small_teacher.path), "ocatari", "unused", policy,
                                   max_steps=150)
    score = Evaluator(FitnessSpec("reward", factory, episodes=2, seed=7, max_steps=150))(
        policy.trees)
    perception = Perception(OcatariDetector("ALE/Pong-v5"))
    played = play_episodes(small_teacher, [7, 8], lambda: SymbolicAgent(policy, perception),
                           perception.env_kwargs, max_steps=150)
    assert score.returns == played and score.env_steps == 300


def test_sticky_fitness_games_are_the_sticky_evaluation_games(small_teacher, pong_policy):
    policy = SymbolicPolicy.load(pong_policy)
    factory = PerceptionEnvFactory(str(small_teacher.path), "ocatari", "unused", policy,
                                   max_steps=150, sticky=0.5)
    env = factory()
    env.reset(seed=7)
    assert env.venv.envs[0].unwrapped.ale.getFloat("repeat_action_probability") == 0.5
    env.close()
    score = Evaluator(FitnessSpec("reward", factory, episodes=2, seed=7, max_steps=150))(
        policy.trees)
    perception = Perception(OcatariDetector("ALE/Pong-v5"))
    played = play_episodes(small_teacher, [7, 8], lambda: SymbolicAgent(policy, perception),
                           perception.env_kwargs, max_steps=150, sticky=0.5)
    assert score.returns == played


def test_cli_evolves_on_pong_end_to_end(small_teacher, pong_policy, tmp_path):
    proc = run_cli("symbolic_finetuning.py", "--policy", str(pong_policy), "--teacher",
                   str(small_teacher.path), "--detector", "ocatari", "--runs-dir", str(tmp_path),
                   "--search", "evolve", "--population-size", "4", "--generations", "2",
                   "--tournament-size", "2", "--p-crossover", "0.3", "--p-gradient", "0.5",
                   "-n", "32", "--episodes", "1", *TINY)
    assert proc.returncode == 0, proc.stderr
    assert "before" in proc.stdout and "after" in proc.stdout and "NOOP" in proc.stdout
    folder = next(tmp_path.glob("finetune/*"))
    tuned = SymbolicPolicy.load(folder)
    metrics = tuned.metrics
    assert tuned.env_id == "PongNoFrameskip-v4" and tuned.n_actions == 6
    assert metrics["before"]["seeds"] == metrics["after"]["seeds"] == [0]
    assert np.isfinite(metrics["before"]["teacher"]["mean"])
    assert 0 <= metrics["agreement_after"] <= 1 and metrics["generations"] == 2
    history = json.loads((folder / "history.json").read_text())["history"]
    assert [h["generation"] for h in history] == [0, 1] and history[1]["tuned"] >= 1
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["stage"] == "finetune"
    assert {"policy", "teacher", "dataset"} <= set(manifest["inputs"])
    assert {"policy.json", "policy.py", "history.json"} <= set(manifest["outputs"])
    assert (folder / "checkpoint.json").is_file()
    assert list((folder / "tb").glob("events.out.tfevents.*"))


def test_tied_moves_play_opposite_moves_from_one_expression(small_teacher, pong_policy,
                                                            tmp_path):
    common = ("--policy", str(pong_policy), "--teacher", str(small_teacher.path), "--detector",
              "ocatari", "--runs-dir", str(tmp_path), "--search", "evolve", "--tie-moves")
    refused = run_cli("symbolic_finetuning.py", *common, *TINY)
    assert refused.returncode == 2 and "--p-gradient 0" in refused.stderr
    assert "Traceback" not in refused.stderr
    proc = run_cli("symbolic_finetuning.py", *common, "--p-gradient", "0", "--population-size",
                   "6", "--generations", "2", "--tournament-size", "2", "--init-random", "0.5",
                   "--episodes", "1", "--select-episodes", "0", *TINY)
    assert proc.returncode == 0, proc.stderr
    folder = next(tmp_path.glob("finetune/*"))
    trees = dict(zip(SymbolicPolicy.load(folder).action_meanings,
                     SymbolicPolicy.load(folder).trees))
    assert trees["LEFT"] == [{"f": "neg"}, *trees["RIGHT"]]
    history = json.loads((folder / "history.json").read_text())["history"]
    for record in history:
        assert record["best_trees"][3] == [{"f": "neg"}, *record["best_trees"][2]]
    assert len(json.loads((folder / "checkpoint.json").read_text())["population"][0]["trees"]) \
        == 3


def test_restarted_searches_are_seeded_apart_and_all_their_candidates_compete(
        small_teacher, pong_policy, tmp_path):
    proc = run_cli("symbolic_finetuning.py", "--policy", str(pong_policy), "--teacher",
                   str(small_teacher.path), "--detector", "ocatari", "--runs-dir", str(tmp_path),
                   "--search", "evolve", "--search-restarts", "2", "--p-gradient", "0",
                   "--population-size", "4", "--generations", "2", "--tournament-size", "2",
                   "--init-random", "0.5", "--fresh-games", "--episodes", "1",
                   "--select-episodes", "1", "--select-sticky", "0.25", *TINY)
    assert proc.returncode == 0, proc.stderr
    folder = next(tmp_path.glob("finetune/*"))
    metrics = SymbolicPolicy.load(folder).metrics
    labels = [c["candidate"] for c in metrics["selection"]["candidates"]]
    assert metrics["selection"]["sticky"] == 0.25
    start = SymbolicPolicy.load(pong_policy)
    perception = Perception(OcatariDetector(start.env_id))
    assert metrics["selection"]["candidates"][0]["returns"] == [
        *play_symbolic(start, perception, small_teacher, [2000], 40),
        *play_symbolic(start, perception, small_teacher, [2000], 40, 0.25)]
    assert labels[0] == "start" and {label.split(":")[0] for label in labels[1:]} == \
        {"search 0", "search 1"}
    assert len(metrics["searches"]) == 2
    assert metrics["env_steps"] == sum(s["env_steps"] for s in metrics["searches"])
    history = json.loads((folder / "history.json").read_text())["history"]
    assert [(h["search"], h["generation"]) for h in history] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    first = json.loads((folder / "checkpoint.json").read_text())
    second = json.loads((folder / "checkpoint_1.json").read_text())
    assert first["rng"] != second["rng"]
    assert (folder / "tb" / "search_1").is_dir()


def test_gradient_search_resumes_after_sigkill(small_teacher, pong_policy, tmp_path):
    args = [sys.executable, str(ROOT / "symbolic_finetuning.py"), "--policy", str(pong_policy),
            "--teacher", str(small_teacher.path), "--detector", "ocatari",
            "--runs-dir", str(tmp_path), "--search", "gradient", "-n", "192", *TINY]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob("finetune/*/checkpoint.pt")):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    folder = next(tmp_path.glob("finetune/*"))
    assert Run.load(folder).manifest["status"] == "running"
    recorded = torch.load(folder / "checkpoint.pt", weights_only=False)["history"]
    assert search_seconds(folder) == pytest.approx(sum(h["seconds"] for h in recorded))
    assert search_seconds(folder) > 0
    done = run(FinetuneConfig(resume=str(folder), runs_dir=str(tmp_path), device="cpu",
                              progress=False))
    assert done.path == folder and done.manifest["status"] == "complete"
    history = json.loads((folder / "history.json").read_text())["history"]
    assert [h["update"] for h in history] == [1, 2, 3, 4, 5, 6]
    assert history[-1]["env_steps"] == 192 and history[0]["agreement"] is not None
    tuned = SymbolicPolicy.load(folder)
    selection = tuned.metrics["selection"]
    table = {c["candidate"]: c["mean"] for c in selection["candidates"]}
    assert set(table) == {"start", "update 6 (last)"} and selection["seeds"] == [2000, 2001, 2002]
    if selection["chosen"] == "start":      # the start wins ties: never a worse policy back
        assert table["start"] >= table["update 6 (last)"]
        assert tuned.trees == SymbolicPolicy.load(pong_policy).trees
    else:
        assert table["update 6 (last)"] > table["start"]
        assert fo.constants(tuned.trees) == pytest.approx(history[-1]["constants"])


def test_gradient_search_with_cmaes(small_teacher, pong_policy, tmp_path):
    cfg = FinetuneConfig(policy=str(pong_policy), teacher=str(small_teacher.path),
                         detector="ocatari", runs_dir=str(tmp_path), search="gradient",
                         optimizer="cmaes", n_timesteps=60, cmaes_popsize=2, max_steps=20,
                         eval_episodes=0, select_episodes=0, device="cpu", progress=False)
    done = run(cfg)
    history = json.loads((done.path / "history.json").read_text())["history"]
    assert len(history) == 2 and history[-1]["env_steps"] == 80
    before = fo.constants(SymbolicPolicy.load(pong_policy).trees)
    tuned = SymbolicPolicy.load(done.path)
    assert fo.constants(tuned.trees) != before      # unchecked: the search's last constants
    assert tuned.metrics["selection"] == {"chosen": "iter 2 (last)", "checked": False}


def test_bad_input_exits_2_with_a_clear_message(small_teacher, pong_policy, tmp_path):
    missing = run_cli("symbolic_finetuning.py", "--policy", str(tmp_path / "nope"),
                      "--teacher", str(small_teacher.path), "--runs-dir", str(tmp_path))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    assert "Traceback" not in missing.stderr
    doc = json.loads(pong_policy.read_text())
    doc["env_id"] = "ALE/Breakout-v5"
    other = tmp_path / "breakout.json"
    other.write_text(json.dumps(doc))
    mismatch = run_cli("symbolic_finetuning.py", "--policy", str(other), "--teacher",
                       str(small_teacher.path), "--runs-dir", str(tmp_path))
    assert mismatch.returncode == 2 and "Traceback" not in mismatch.stderr
    assert "plays ALE/Breakout-v5" in mismatch.stderr
    assert "plays ALE/Pong-v5" in mismatch.stderr
    assert not (tmp_path / "finetune").exists()


def test_the_terminals_offered_are_the_features_the_teachers_actions_depend_on():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 12))
    actions = np.where(X[:, 7] > X[:, 2], 2, np.where(X[:, 7] < X[:, 2] - 1, 1, 0))
    assert teacher_features(X, actions, 2, seed=0) == [2, 7]
    assert len(teacher_features(X, actions, 5, seed=0)) == 5


def test_copies_of_one_quantity_count_once_among_the_terminals():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 12))
    copies = [7, 8, 9, 10]
    for c in copies[1:]:
        X[:, c] = X[:, 7] + 0.02 * rng.normal(size=3000)
    actions = (X[:, 7] + 0.1 * X[:, 4] > 0).astype(int)
    alone = teacher_features(X, actions, 2, seed=0)
    assert not set(alone) & set(copies)   # the copies share, and hide, their importance
    grouped = teacher_features(X, actions, 2, seed=0, correlation=0.7)
    assert 4 in grouped and len(set(grouped) & set(copies)) == 1
