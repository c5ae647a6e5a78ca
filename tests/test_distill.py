"""Distillation: planted rules are recovered, sample.json distils, policies round-trip."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import yaml

from conftest import ROOT, run_cli
from diffses.cli import from_yaml
from diffses.detection import OcatariDetector
from diffses.distill import DistillConfig, distil
from diffses.errors import UserError
from diffses.features import FeatureLayout
from diffses.perception import Perception
from diffses.play import evaluate_side_by_side
from diffses.policy import SymbolicPolicy
from diffses.schema import load_dataset
from planted import planted_dataset, rule_dataset, write_planted
from see.tree import evaluate, infix

SMALL = dict(population_size=500, generations=10, restarts=1, runs_dir="unused")


def test_planted_logits_are_recovered_exactly_at_the_defaults():
    """The teacher's logits are UP = y_p - y_b, DOWN = y_b - y_p, NOOP = 0.3 (y / 210)."""
    policy, metrics = distil(DistillConfig(mode="regressor", seed=1, runs_dir="unused"),
                             planted_dataset(seed=1))
    assert metrics["mode"] == "regressor"
    assert metrics["n_validation"] == 300  # 3 of 15 episodes held out
    held = planted_dataset(seed=101)
    X = policy.layout.matrix([r["state"] for r in held.records])
    actions = np.array([r["teacher_action"] for r in held.records])
    assert (policy.act(X) == actions).mean() >= 0.98
    assert max(metrics["tree_sizes"]) <= 15, policy.describe()
    d = X[:, policy.layout.names.index("player0_y")] - X[:, policy.layout.names.index("ball0_y")]
    planted = np.column_stack([d, -d, np.full_like(d, 0.3)])
    found = policy.logits(X)
    centred = [v - v.mean(axis=1, keepdims=True) for v in (found, planted)]
    assert np.abs(centred[0] - centred[1]).max() < 0.05, policy.describe()


def test_a_policy_that_has_played_is_sent_to_worker_processes():
    """A policy that acted at batch 1 holds its compiled function; it still pickles (as a
    fitness pool sends it to workers) and acts the same after."""
    import pickle
    layout = FeatureLayout({0: "player", 1: "ball"}, {0: 1, 1: 1}, (210, 160))
    y_p, y_b = layout.names.index("player0_y"), layout.names.index("ball0_y")
    policy = SymbolicPolicy([[{"f": "sub"}, {"x": y_p}, {"x": y_b}],
                             [{"f": "sub"}, {"x": y_b}, {"x": y_p}]], layout, ["UP", "DOWN"],
                            "ALE/Pong-v5", ["sub"])
    X = np.random.default_rng(0).random((20, layout.size))
    acted = [int(policy.act(x[None])[0]) for x in X]
    copy = pickle.loads(pickle.dumps(policy))
    assert [int(copy.act(x[None])[0]) for x in X] == acted == list(policy.act(X))
    assert set(acted) == {0, 1}


def test_planted_rule_is_recovered_from_actions_alone():
    data = planted_dataset(two_actions=True, probs=False)
    policy, metrics = distil(DistillConfig(**SMALL), data)
    assert metrics["mode"] == "classifier"
    assert metrics["validation_agreement"] >= 0.95
    confusion = np.array(metrics["validation_confusion"])
    assert confusion.sum() == metrics["n_validation"] and confusion.trace() >= 0.95 * 300


@pytest.mark.parametrize("rule, seed", [("deadzone", 1), ("intercept", 2), ("lead3", 3)])
def test_planted_rule_from_actions_alone_is_recovered_exactly_at_the_defaults(rule, seed):
    """Default settings but one restart, actions only; scored on episodes drawn with
    another seed."""
    policy, metrics = distil(DistillConfig(runs_dir="unused", seed=seed, restarts=1),
                             rule_dataset(rule, seed=seed))
    held = rule_dataset(rule, seed=seed + 100)
    X = policy.layout.matrix([r["state"] for r in held.records])
    actions = np.array([r["teacher_action"] for r in held.records])
    assert (policy.act(X) == actions).mean() >= 0.98, policy.describe()
    assert max(metrics["tree_sizes"]) <= 15, policy.describe()
    assert metrics["mode"] == "classifier"


def test_restarts_keep_the_best_validation_agreement():
    cfg = DistillConfig(mode="regressor", population_size=60, generations=2, restarts=3,
                        runs_dir="unused")
    _, metrics = distil(cfg, planted_dataset(n=600))
    scores = [r["validation_agreement"] for r in metrics["restarts"]]
    assert len(scores) == 3 and metrics["validation_agreement"] == max(scores)


def test_sample_json_distils_end_to_end_through_the_cli(tmp_path):
    proc = run_cli("distill_teacher.py", "--dataset", str(ROOT / "sample.json"),
                   "--population-size", "200", "--generations", "3", "--runs-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "validation agreement" in proc.stdout and "NOOP" in proc.stdout
    path = next(tmp_path.glob("distill/*/policy.json"))
    doc = json.loads(path.read_text())
    assert doc["env_id"] == "PongNoFrameskip-v4" and len(doc["trees"]) == 6
    assert {"tokens", "infix", "simplified", "size"} <= set(doc["trees"][0])
    assert doc["layout"]["names"][0].endswith("0_x")
    manifest = json.loads((path.parent / "manifest.json").read_text())
    assert manifest["status"] == "complete" and "dataset" in manifest["inputs"]


def test_policy_round_trip_and_exported_python_act_identically(tmp_path):
    data = planted_dataset(n=600)
    policy, _ = distil(DistillConfig(mode="regressor", population_size=200, generations=4,
                                     runs_dir="unused"), data)
    policy.save(tmp_path / "policy.json")
    again = SymbolicPolicy.load(tmp_path)
    X = policy.layout.matrix([r["state"] for r in data.records])
    np.testing.assert_array_equal(again.act(X), policy.act(X))
    assert again.formulas() == policy.formulas()
    (tmp_path / "exported.py").write_text(policy.to_python("act"))
    spec = importlib.util.spec_from_file_location("exported", tmp_path / "exported.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    exported = np.array([module.act(list(map(float, row))) for row in X])
    np.testing.assert_array_equal(exported, policy.act(X))
    from_objects = np.array([module.act_objects(r["state"]) for r in data.records])
    np.testing.assert_array_equal(from_objects, policy.act(X))
    np.testing.assert_array_equal([policy.act(row[None])[0] for row in X], policy.act(X))


def test_exported_python_computes_a_repeated_subexpression_once():
    layout = FeatureLayout({0: "player", 1: "ball"}, {0: 1, 1: 1}, (210, 160))
    gap = [{"f": "sub"}, {"x": 1}, {"x": 6}]
    trees = [[{"f": "mul"}, {"c": 3.0}, *gap], [{"f": "neg"}, *gap], [{"c": 0.1}]]
    source = SymbolicPolicy(trees, layout, ["UP", "DOWN", "NOOP"], "Planted-v0",
                            ["sub", "mul", "neg"]).to_python()
    assert source.count("x[1] - x[6]") == 1 and "s0 = " in source
    namespace: dict = {}
    exec(source, namespace)
    ball_below = [{"type": 0, "x_position": 140, "y_position": 50, "x_velocity": 0,
                   "y_velocity": 0},
                  {"type": 1, "x_position": 80, "y_position": 150, "x_velocity": 1,
                   "y_velocity": 2}]
    assert namespace["policy_objects"](ball_below) == 1          # DOWN: -(y_p - y_b) > 0.1
    assert namespace["policy_objects"](ball_below[:1]) == 0      # no ball: y_p - 0 > 0


def test_trees_evaluate_like_their_formulas():
    layout = FeatureLayout({0: "ball"}, {0: 1}, (210, 160))
    tree = [{"f": "sub"}, {"x": 1}, {"f": "mul"}, {"c": -0.5}, {"x": 0}]
    X = np.array([[0.2, 0.7, 0, 0, 1], [0.4, 0.1, 0, 0, 1]])
    np.testing.assert_allclose(evaluate(tree, X), [0.7 + 0.1, 0.1 + 0.2])
    assert infix(tree, layout.names) == "ball0_y - ((-0.5) * ball0_x)"
    with pytest.raises(ValueError, match="tree 0"):
        SymbolicPolicy([[{"f": "sub"}, {"x": 1}]], layout, ["A"], "x", [])


def test_config_file_is_read_and_flags_win(tmp_path):
    cfg_file = tmp_path / "best.yaml"
    cfg_file.write_text(yaml.safe_dump({"population_size": 321, "generations": 2,
                                        "function_set": ["add", "sub", "gt"]}))
    cfg = from_yaml(DistillConfig, cfg_file, generations=4)
    assert (cfg.gp.population_size, cfg.gp.generations, cfg.gp.function_set) == \
        (321, 4, ("add", "sub", "gt"))
    path = write_planted(tmp_path, n=300)
    proc = run_cli("distill_teacher.py", "--dataset", str(path), "--config", str(cfg_file),
                   "--generations", "1", "--runs-dir", str(tmp_path / "runs"))
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads(next(tmp_path.glob("runs/distill/*/manifest.json")).read_text())
    assert manifest["config"]["population_size"] == 321
    assert manifest["config"]["generations"] == 1


@pytest.mark.parametrize("kwargs, message", [
    (dict(p_crossover=0.9, p_subtree_mutation=0.2), "sum to <= 1"),
    (dict(tournament_size=5000), "tournament_size"),
    (dict(const_range=(3.0, -3.0)), "const_range"),
    (dict(function_set=("add", "sbu")), "did you mean 'sub'"),
    (dict(validation_fraction=1.0), "validation_fraction"),
    (dict(dagger_reselect=-1), "--dagger-reselect"),
    (dict(dagger_reselect_games=0), "--dagger-reselect-games"),
])
def test_bad_config_values_are_clear_errors(kwargs, message):
    with pytest.raises(UserError, match=message):
        DistillConfig(**kwargs)


def test_bad_config_file_and_dataset_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("populaton_size: 10\n")
    proc = run_cli("distill_teacher.py", "--dataset", str(ROOT / "sample.json"), "--config",
                   str(bad))
    assert proc.returncode == 2 and "unknown option(s) populaton_size" in proc.stderr
    broken = tmp_path / "broken.json"
    broken.write_text('[{"state": [], "teacher_action": 1.5}]')
    proc = run_cli("distill_teacher.py", "--dataset", str(broken), "--runs-dir", str(tmp_path))
    assert proc.returncode == 2 and "record 0: field 'teacher_action'" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "distill").exists()


def test_policy_plays_beside_the_teacher_on_the_same_seeds(teacher_run):
    data = load_dataset(ROOT / "sample.json")
    policy, _ = distil(DistillConfig(population_size=100, generations=2, runs_dir="unused"),
                       data)
    perception = Perception(OcatariDetector("ALE/Pong-v5"))
    result = evaluate_side_by_side(policy, perception, teacher_run, episodes=2, seed=7,
                                   max_steps=60)
    assert result["seeds"] == [7, 8]
    for who in ("symbolic", "teacher"):
        assert len(result[who]["returns"]) == 2
        assert all(np.isfinite(result[who]["returns"]))


def test_dagger_rounds_add_the_teachers_labels_on_the_forests_games(teacher_run, tmp_path):
    from diffses.dataset import DatasetConfig, run as build
    from diffses.distill import SELECT_SEED, run as distil_run
    built = build(DatasetConfig(teacher=str(teacher_run.path), n_steps=150, seed=3,
                                runs_dir=str(tmp_path), progress=False, device="cpu"))
    done = distil_run(DistillConfig(dataset=str(built.path), population_size=30, generations=2,
                                    restarts=1, dagger=1, dagger_episodes=1, dagger_select=2,
                                    dagger_max_steps=40, runs_dir=str(tmp_path)))
    policy = SymbolicPolicy.load(done.path / "policy.json")
    rounds = policy.metrics["dagger"]
    assert [r["round"] for r in rounds] == [0, 1] and rounds[0]["records"] == 150
    assert all(len(r["select_returns"]) == 4 and 0 < r["select_steps"] <= 160 for r in rounds)
    games = load_dataset(rounds[0]["games"])
    assert games.meta["student"] == str(done.path / "dagger_0" / "policy.json")
    assert 0 < len(games.records) <= 40 and rounds[1]["records"] == 150 + len(games.records)
    assert "games" not in rounds[1]  # the last round is only played on the selection games
    merged = load_dataset(done.path / "dataset.json")
    assert len(merged.records) == rounds[1]["records"]
    assert policy.provenance["dataset"] == str(done.path / "dataset.json")
    best = max(range(2), key=lambda k: (rounds[k]["select_return"],
                                        rounds[k]["validation_agreement"], k))
    assert policy.metrics["dagger_kept"] == best
    kept = SymbolicPolicy.load(done.path / f"dagger_{best}" / "policy.json")
    assert kept.trees == policy.trees
    assert SELECT_SEED > 5009  # selection games lie apart from the evaluation games


def test_reselect_keeps_the_best_of_the_top_rounds_on_fresh_games(teacher_run, tmp_path):
    from diffses.dataset import DatasetConfig, run as build
    from diffses.distill import RESELECT_SEED, SELECT_SEED, run as distil_run
    built = build(DatasetConfig(teacher=str(teacher_run.path), n_steps=150, seed=3,
                                runs_dir=str(tmp_path), progress=False, device="cpu"))
    done = distil_run(DistillConfig(dataset=str(built.path), learner="tree", leaves=4,
                                    dagger=1, dagger_episodes=1, dagger_select=1,
                                    dagger_restarts=2, dagger_reselect=3,
                                    dagger_reselect_games=1, dagger_max_steps=40,
                                    runs_dir=str(tmp_path)))
    policy = SymbolicPolicy.load(done.path / "policy.json")
    loops = policy.metrics["dagger_loops"]
    ranked = sorted(((e["select_return"], e["validation_agreement"], e["round"], r)
                     for r, rounds in enumerate(loops) for e in rounds), reverse=True)
    records = policy.metrics["dagger_reselect"]
    assert [(e["loop"], e["round"]) for e in records] == [(r, k) for _, _, k, r in ranked[:3]]
    assert all(len(e["fresh_returns"]) == 2 for e in records)  # as they are and sticky
    best = max(records, key=lambda e: e["fresh_return"])
    assert (policy.metrics["dagger_loop_kept"], policy.metrics["dagger_kept"]) == \
        (best["loop"], best["round"])
    kept = SymbolicPolicy.load(done.path / f"loop_{best['loop']}" / f"dagger_{best['round']}"
                               / "policy.json")
    assert kept.trees == policy.trees and policy.metrics["dagger"] == loops[best["loop"]]
    assert RESELECT_SEED >= SELECT_SEED + 100  # fresh games are not the selection games
