"""results.py: the decision-tree baseline as a forest, and the whole table on tiny budgets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from sklearn.tree import DecisionTreeClassifier

from conftest import run_cli
from diffses.figures import FiguresConfig
from diffses.figures import run as make_figures
from diffses.distill import tree_forest
from diffses.results import FINETUNES, ResultsConfig, run
from planted import rule_dataset
from see.tree import logits


def test_decision_tree_forest_acts_like_the_tree():
    data = rule_dataset("lead3", 600, 0)
    X = np.array([[o[k] for o in r["state"] for k in ("x_position", "y_position",
                                                      "x_velocity")] for r in data.records])
    y = np.array([r["teacher_action"] for r in data.records])
    model = DecisionTreeClassifier(max_leaf_nodes=12, random_state=0).fit(X, y)
    forest = tree_forest(model, 3)
    assert (np.argmax(logits(forest, X), axis=1) == model.predict(X)).all()


def test_results_table_end_to_end(teacher_run, tmp_path):
    cfg = ResultsConfig(teacher=str(teacher_run.path), detectors=("ocatari",), seeds=(0,),
                        eval_episodes=2, eval_max_steps=30, dataset_episodes=1,
                        population_size=30, generations=2, restarts=1, finetune_steps=64,
                        finetune_max_steps=20, evolve_population=2, evolve_generations=2,
                        select_episodes=1, tune_trials=1, tune_episodes=1,
                        runs_dir=str(tmp_path))
    done = run(cfg)
    result = json.loads((done.path / "results.json").read_text())
    methods = [row["method"] for row in result["rows"]]
    assert methods[0] == "teacher (pixel PPO)" and len(methods) == 3 + len(FINETUNES) + 1
    assert set(FINETUNES) <= set(methods)
    assert result["eval_seeds"] == [5000, 5001]
    for row in result["rows"]:
        assert len(row["returns"]) == 2 and np.isclose(row["mean"], np.mean(row["returns"]))
    table = (done.path / "results.md").read_text()
    assert all(m in table for m in methods)
    by_method = {row["method"]: row for row in result["rows"]}
    guided, unguided = (json.loads((Path(by_method[m]["runs"][0]) / "history.json").read_text())
                        ["history"] for m in list(FINETUNES)[:2])
    assert all(h["expert_loss"] is not None for h in guided)
    assert all(h["expert_loss"] is None and h["agreement"] is None for h in unguided)
    figures = make_figures(FiguresConfig(teachers=(str(teacher_run.path),), results=str(done.path),
                                         transfer=None, runs_dir=str(tmp_path)))
    names = {p.name for p in figures.path.iterdir()}
    assert {"results_returns.png", "results_returns.svg",
            "formula_sizes.png", "finetune_curves.png"} <= names


def test_results_cli_refuses_a_missing_detector(teacher_run, tmp_path):
    proc = run_cli("results.py", "--teacher", str(teacher_run.path), "--detectors",
                   str(tmp_path / "nope.pt"), "--runs-dir", str(tmp_path))
    assert proc.returncode == 2 and "nope.pt does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr
