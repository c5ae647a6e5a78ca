"""results.py: the decision-tree baseline as a forest, and the whole table on tiny budgets."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from sklearn.tree import DecisionTreeClassifier

from conftest import ROOT, run_cli
from diffses.figures import FiguresConfig
from diffses.figures import run as make_figures
from diffses.arrays import DatasetArrays
from diffses.detection import load_detector
from diffses.distill import tree_forest
from diffses.errors import UserError
from diffses.features import FeatureLayout
from diffses.finetune import search_seconds
from diffses.policy import SymbolicPolicy
from diffses.pretrained import ShipPolicyConfig, _select_return, ship_policy
from diffses.results import FINETUNES, ROUTES, ResultsConfig, Table, finetune_budget, run
from diffses.runs import Run, earlier_run
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


def tracking_policy(env_id: str, path: Path) -> Path:
    """A hand-written Pong policy on OCAtari objects: UP/DOWN by the ball's height over the
    player's."""
    detector = load_detector("ocatari", env_id=env_id)
    layout = FeatureLayout(detector.type_names, {t: 1 for t in detector.type_names}, (210, 160))
    ball, player = layout.names.index("ball0_y"), layout.names.index("player0_y")
    up = [{"f": "sub"}, {"x": player}, {"x": ball}]
    down = [{"f": "sub"}, {"x": ball}, {"x": player}]
    meanings = ["NOOP", "FIRE", "RIGHT", "LEFT", "RIGHTFIRE", "LEFTFIRE"]
    trees = [[{"c": 0.0}], [{"c": -1.0}], up, down, [{"c": -1.0}], [{"c": -1.0}]]
    SymbolicPolicy(trees, layout, meanings, env_id, ["sub"]).save(path)
    return path


def test_results_table_end_to_end(teacher_run, tmp_path):
    start = tracking_policy(teacher_run.env_id, tmp_path / "pong_tracking.json")
    cfg = ResultsConfig(teacher=str(teacher_run.path), detectors=("ocatari",), seeds=(0,),
                        eval_episodes=2, eval_max_steps=30, dataset_episodes=1,
                        population_size=30, generations=2, restarts=1, finetune_steps=64,
                        finetune_max_steps=20, evolve_population=2, evolve_generations=2,
                        select_episodes=1, tune_trials=1, tune_episodes=1,
                        start=(str(start),), finetunes=("ppo", "reward-only"),
                        runs_dir=str(tmp_path))
    done = run(cfg)
    result = json.loads((done.path / "results.json").read_text())
    methods = [row["method"] for row in result["rows"]]
    labels = [FINETUNES[key][0] for key in cfg.finetunes]
    tuned = [f"fine-tuned: {label}" for label in labels]
    from_start = [f"fine-tuned from pong_tracking: {label}" for label in labels]
    assert methods == ["teacher (pixel PPO)", "distilled forest (gplearn)",
                       "decision tree, same size (VIPER-style)", *tuned,
                       "given: pong_tracking", *from_start, "distilled, Optuna best of 1 (return)"]
    given = json.loads((Path(result["rows"][3 + len(labels)]["runs"][0])).read_text())
    assert given["trees"][2]["infix"] == "player0_y - ball0_y"
    assert result["eval_seeds"] == [5000, 5001]
    for row in result["rows"]:
        assert len(row["returns"]) == 2 and np.isclose(row["mean"], np.mean(row["returns"]))
    table = (done.path / "results.md").read_text()
    assert all(m in table for m in methods)
    by_method = {row["method"]: row for row in result["rows"]}
    guided, unguided = (json.loads((Path(by_method[m]["runs"][0]) / "history.json").read_text())
                        ["history"] for m in tuned[:2])
    assert all(h["expert_loss"] is not None for h in guided)
    assert all(h["expert_loss"] is None and h["agreement"] is None for h in unguided)
    figures = make_figures(FiguresConfig(teachers=(str(teacher_run.path),),
                                         results=(str(done.path),), transfer=(),
                                         runs_dir=str(tmp_path)))
    names = {p.name for p in figures.path.iterdir()}
    assert {"results_returns_pong.png", "results_returns_pong.svg",
            "formula_sizes_pong.png", "finetune_curves_pong.png"} <= names


def test_dagger_rows_refit_the_forest_and_the_tree_on_their_own_games(short_games_teacher,
                                                                     tmp_path):
    cfg = ResultsConfig(teacher=str(short_games_teacher.path), detectors=("ocatari",),
                        seeds=(0,), eval_episodes=1, eval_max_steps=30, dataset_episodes=1,
                        population_size=30, generations=2, restarts=1, finetunes=(),
                        tune_trials=0, dagger=1, dagger_episodes=1, routes=("tree", "gp"),
                        loop_rounds=1, loop_episodes=1, loop_select=1, leaves=4,
                        loop_population=30, loop_generations=2, loop_collect_sticky=0.25,
                        runs_dir=str(tmp_path))
    done = run(cfg)
    rows = {r["method"]: r for r in json.loads((done.path / "results.json").read_text())["rows"]}
    tree_route = f"{ROUTES['tree'][0]}, ≤ 4 leaves (1 rounds, labelled games sticky 0.25)"
    gp_route = f"{ROUTES['gp'][0]} (1 rounds, labelled games sticky 0.25)"
    assert list(rows) == ["teacher (pixel PPO)", "distilled forest (gplearn, DAgger 1)",
                          "decision tree, same size (VIPER-style, DAgger 1)", tree_route,
                          gp_route]
    for row in rows.values():   # every row also plays the games under sticky actions
        assert len(row["sticky_returns"]) == 1 and row["sticky_mean"] is not None
    tree = SymbolicPolicy.load(Path(rows[tree_route]["runs"][0]) / "policy.json")
    assert tree.metrics["mode"] == "tree" and tree.metrics["nodes"] <= 7
    assert rows[tree_route]["nodes"] == tree.metrics["nodes"]
    assert any("_minus_" in name for name in tree.layout.names)  # object relations offered
    assert [len(r["select_returns"]) for r in tree.metrics["dagger"]] == [2, 2]  # plain, sticky
    labelled = json.loads((Path(tree.metrics["dagger"][0]["games"]) / "manifest.json").read_text())
    assert labelled["config"]["sticky"] == 0.25   # the student's labelled games are sticky
    shipped = ship_policy(ShipPolicyConfig(results=str(done.path), method=tree_route,
                                           out=str(tmp_path / "shipped" / "breakout.json"),
                                           teacher=str(short_games_teacher.path),
                                           runs_dir=str(tmp_path)))
    manifest = json.loads((tmp_path / "shipped" / "breakout.manifest.json").read_text())
    assert manifest["eval"]["returns"] == rows[tree_route]["returns"] and manifest["seed"] == 0
    assert manifest["method"] == tree_route and manifest["nodes"] == tree.metrics["nodes"]
    assert SymbolicPolicy.load(shipped).trees == tree.trees
    with pytest.raises(UserError, match="names 2 rows"):
        ship_policy(ShipPolicyConfig(results=str(done.path), method="VIPER loop", out=str(
            tmp_path / "x.json"), teacher=str(short_games_teacher.path), runs_dir=str(tmp_path)))
    figures = make_figures(FiguresConfig(teachers=(), results=(str(done.path / "results.json"),),
                                         transfer=(), runs_dir=str(tmp_path)))
    assert (figures.path / "results_returns_breakout.png").is_file()
    records = DatasetArrays.open(done.manifest["datasets"]["ocatari"]).n_records
    forest = SymbolicPolicy.load(Path(rows["distilled forest (gplearn, DAgger 1)"]["runs"][0])
                                 / "policy.json")
    assert [r["round"] for r in forest.metrics["dagger"]] == [0, 1]
    trees = done.path / "trees" / "ocatari_s0"
    assert sorted(p.parent.name for p in trees.glob("dagger_*/policy.json")) == \
        ["dagger_0", "dagger_1"]
    grown = DatasetArrays.open(trees / "dataset.json")
    assert grown.meta["teacher_episodes"] == [0] and grown.n_records > records
    for method, row in rows.items():
        if method != "teacher (pixel PPO)":
            assert row["env_steps"] > records


def distilled(steps: dict[str, Any], runs_dir: Path) -> bool:
    """Whether a results run's steps hold its distilled forest."""
    return any("distilled forest" in key for key in steps)


def killed_results_run(teacher: Path, runs_dir: Path, *extra: str,
                       env: dict[str, str] | None = None,
                       ready: Callable[[dict[str, Any], Path], bool] = distilled
                       ) -> dict[str, Any]:
    """Start a small one-seed ``results.py`` run, SIGKILL it once ``ready(steps, runs_dir)``
    (default: its distilled forest is in steps.json) and return those steps."""
    args = [sys.executable, str(ROOT / "results.py"), "--teacher", str(teacher),
            "--detectors", "ocatari", "--seeds", "0", "--eval-episodes", "2",
            "--eval-max-steps", "30", "--dataset-episodes", "1", "--population-size", "30",
            "--generations", "2", "--restarts", "1", "--finetunes", "cmaes",
            "--finetune-steps", "64", "--finetune-max-steps", "20", "--select-episodes", "1",
            "--tune-trials", "0", "--runs-dir", str(runs_dir), *extra]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=env)
    deadline, steps = time.monotonic() + 240, {}
    while not ready(steps, runs_dir):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.1)
        for path in runs_dir.glob("results/*/steps.json"):
            steps = json.loads(path.read_text())
    proc.kill()
    proc.wait()
    return steps


def test_a_killed_results_run_resumes_keeping_its_finished_steps(teacher_run, tmp_path):
    steps = killed_results_run(teacher_run.path, tmp_path)
    folder = next(tmp_path.glob("results/*"))
    with pytest.raises(UserError, match=r"the run's seeds are \(0,\)"):
        run(ResultsConfig(resume=str(folder), resume_seeds=(7,), runs_dir=str(tmp_path)))
    done = run(ResultsConfig(resume=str(folder), resume_seeds=(0,), runs_dir=str(tmp_path)))
    assert done.manifest["resumed_with_seeds"] == [0]
    assert done.path == folder and done.manifest["status"] == "complete"
    assert len(list(tmp_path.glob("distill/*"))) == len(list(tmp_path.glob("dataset/*"))) == 1
    rows = {r["method"]: r for r in json.loads((folder / "results.json").read_text())["rows"]}
    assert list(rows) == ["teacher (pixel PPO)", "distilled forest (gplearn)",
                          "decision tree, same size (VIPER-style)",
                          "fine-tuned: CMA-ES on constants"]
    assert rows["teacher (pixel PPO)"]["returns"] == steps["teacher"]["returns"]
    assert rows["distilled forest (gplearn)"]["runs"] == [next(
        v["run_path"] for k, v in steps.items() if "distilled forest" in k)]
    proc = run_cli("results.py", "--resume", str(folder), "--runs-dir", str(tmp_path))
    assert proc.returncode == 2 and "is complete; nothing to resume" in proc.stderr


def searching(steps: dict[str, Any], runs_dir: Path) -> bool:
    """Whether a results run's structure search has checkpointed a generation."""
    return any(len(json.loads(p.read_text())["history"]) >= 2
               for p in runs_dir.glob("finetune/*/checkpoint.json"))


def test_a_results_run_killed_mid_search_continues_that_search(teacher_run, tmp_path):
    generations = 12
    killed = killed_results_run(teacher_run.path, tmp_path, "--finetunes",
                                "structure-tied-length", "--evolve-population", "2",
                                "--evolve-generations", str(generations), "--p-gradient", "0",
                                ready=searching)
    assert not any("structure search" in key for key in killed)
    [search] = tmp_path.glob("finetune/*")
    before = json.loads((search / "checkpoint.json").read_text())["history"]
    assert 2 <= len(before) < generations
    spent = search_seconds(search)
    assert spent == pytest.approx(sum(h["seconds"] for h in before)) and spent > 0
    done = run(ResultsConfig(resume=str(next(tmp_path.glob("results/*"))),
                             runs_dir=str(tmp_path)))
    assert list(tmp_path.glob("finetune/*")) == [search]
    history = json.loads((search / "history.json").read_text())["history"]
    assert len(history) == generations and history[:len(before)] == before
    rows = {r["method"]: r for r in json.loads((done.path / "results.json").read_text())["rows"]}
    [row] = [r for m, r in rows.items() if "structure search" in m]
    assert row["runs"] == [str(search)] and row["env_steps"] == history[-1]["env_steps"]
    assert row["seconds"] >= round(spent, 1)


def test_only_a_run_of_the_same_options_since_then_is_taken_up(tmp_path):
    defaults = {"seed": 0, "policy": None, "resume": None, "runs_dir": "runs", "sticky": 0.0}
    config = dict(defaults, policy="p.json", runs_dir=str(tmp_path), gone=1)
    first = Run.create(tmp_path, "finetune", "PongNoFrameskip-v4", "a", 0, config)
    other = Run.create(tmp_path, "finetune", "PongNoFrameskip-v4", "b", 1, dict(config, seed=1))
    since = first.manifest["created"]
    moved = dict(config, runs_dir="elsewhere")
    assert earlier_run(tmp_path, "finetune", moved, since, ("runs_dir",)).path == first.path
    assert earlier_run(tmp_path, "finetune", moved, since) is None
    assert earlier_run(tmp_path, "finetune", config, "9999") is None
    first.finish()                                      # a finished run is taken up as it is
    assert earlier_run(tmp_path, "finetune", config, since).path == first.path
    first.manifest["status"] = "failed"
    first.save()
    assert earlier_run(tmp_path, "finetune", config, since) is None
    assert earlier_run(tmp_path, "finetune", dict(config, seed=1), since).path == other.path
    now = {k: v for k, v in dict(config, seed=1).items() if k != "gone"}
    assert earlier_run(tmp_path, "finetune", now, since) is None
    assert earlier_run(tmp_path, "finetune", now, since, (), defaults).path == other.path
    assert earlier_run(tmp_path, "finetune", dict(now, sticky=0.25), since, (), defaults) is None


def test_a_resumed_step_whose_run_folder_is_gone_is_done_again(tmp_path):
    table = Table(ResultsConfig(), teacher_run=None, folder=tmp_path)
    calls = []

    def step() -> dict:
        calls.append(1)
        folder = tmp_path / f"run{len(calls)}"
        folder.mkdir()
        return {"path": str(folder)}
    assert table.once("dataset", step) == {"path": str(tmp_path / "run1")}
    assert Table(ResultsConfig(), None, tmp_path).once("dataset", step)["path"].endswith("run1")
    (tmp_path / "run1").rmdir()
    assert Table(ResultsConfig(), None, tmp_path).once("dataset", step)["path"].endswith("run2")
    assert len(calls) == 2


def test_results_cli_refuses_a_missing_detector_and_bad_starts(teacher_run, tmp_path):
    proc = run_cli("results.py", "--teacher", str(teacher_run.path), "--detectors",
                   str(tmp_path / "nope.pt"), "--runs-dir", str(tmp_path))
    assert proc.returncode == 2 and "nope.pt does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr
    with pytest.raises(UserError, match="unknown --finetunes sgd"):
        ResultsConfig(finetunes=("sgd",))
    with pytest.raises(UserError, match="is not a policy.json file"):
        ResultsConfig(start=(str(tmp_path),))
    with pytest.raises(UserError, match="plays BreakoutNoFrameskip-v4"):
        run(ResultsConfig(teacher=str(teacher_run.path), detectors=("ocatari",),
                          start=(str(ROOT / "docs/policies/breakout_tracking.json"),),
                          runs_dir=str(tmp_path)))
    assert not (tmp_path / "results").exists()


def test_a_shipped_seed_is_chosen_by_its_fresh_games_when_its_rounds_were_replayed():
    policy = SymbolicPolicy.load(ROOT / "pretrained" / "policies" / "pong.json")
    rounds = [{"round": 0, "select_return": -3.0}, {"round": 1, "select_return": 9.5}]
    policy.metrics = {"dagger": rounds, "dagger_kept": 1}
    assert _select_return(policy) == 9.5
    policy.metrics["dagger_reselect"] = [{"fresh_return": 4.25}, {"fresh_return": 6.5}]
    assert _select_return(policy) == 6.5
    policy.metrics = {}
    assert _select_return(policy) == float("-inf")


def test_evolve_rows_carry_their_restarts_and_tied_rows_no_constants_variation():
    cfg = ResultsConfig(teacher="unused", p_gradient=0.3, search_restarts=3,
                        evolve_population=10, evolve_generations=2)
    tied = finetune_budget(cfg, FINETUNES["structure-tied"][1])
    free = finetune_budget(cfg, FINETUNES["structure"][1])
    assert tied["search_restarts"] == free["search_restarts"] == 3
    assert tied["p_gradient"] == 0 and tied["p_crossover"] == 0.8
    assert free["p_gradient"] == 0.3 and free["p_crossover"] == 0.5
    assert "search_restarts" not in finetune_budget(cfg, FINETUNES["cmaes"][1])
    with pytest.raises(UserError, match="--search-restarts"):
        ResultsConfig(teacher="unused", search_restarts=0)
