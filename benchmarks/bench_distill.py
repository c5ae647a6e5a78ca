"""Distillation beside its baselines, on the same split, in one run.

For each dataset (the planted rules of tests/planted.py, scored on held-out episodes drawn
with another seed, and optionally a real dataset, scored on its validation episodes):

- our forest at the default settings (logistic-scaled one-vs-rest GP, polished and pruned);
- where there are more actions than the forest's search budget (``forest_budget`` trees),
  the same with every tree given the full population (``forest_budget=0``): the cost of the
  action count, in the same run;
- plain gplearn one-vs-rest (``SymbolicClassifier`` per action, raw outputs as logits, the
  same population and as many generations as our restarts run in all; no scaling, polishing
  or pruning);
- a decision tree with about as many nodes as our forest (the VIPER-style baseline);
- the majority action.

Columns: agreement with the teacher, size in nodes, fit time, records per second. With
--episodes and a real dataset, our forest also plays beside the teacher on the same seeds.

    python benchmarks/bench_distill.py                       # planted rules
    python benchmarks/bench_distill.py --dataset sample.json --episodes 5
    python benchmarks/bench_distill.py --rules lead3 boxer18 --seeds 0   # time vs actions
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from diffses.arrays import DatasetArrays  # noqa: E402
from diffses.distill import DistillConfig, decision_tree_policy, distil, play_metrics, resolve_dataset, split_episodes  # noqa: E402,E501
from diffses.schema import Dataset  # noqa: E402
from planted import RULES, rule_dataset  # noqa: E402
from see.tree import from_gplearn, logits  # noqa: E402


def plain_gplearn(cfg: DistillConfig, X: np.ndarray, actions: np.ndarray, n_actions: int
                  ) -> list[list[dict]]:
    """One gplearn SymbolicClassifier per action, its raw program as the logit; as many
    generations as our restarts run in all."""
    from gplearn.genetic import SymbolicClassifier
    trees = []
    for a in range(n_actions):
        y = (actions == a).astype(int)
        if y.min() == y.max():
            trees.append([{"c": 0.0 if y[0] else -1e6}])
            continue
        params = dict(cfg.gplearn_params(cfg.seed + a),
                      generations=cfg.gp.generations * cfg.restarts)
        est = SymbolicClassifier(**params)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            est.fit(X, y)
        trees.append(from_gplearn(est._program.program))
    return trees


def score(name: str, predict, size: int, seconds: float, X: np.ndarray, actions: np.ndarray,
          n_records: int) -> dict:
    return {"model": name, "agreement": round(float((predict(X) == actions).mean()), 4),
            "nodes": int(size), "fit_seconds": round(seconds, 2),
            "records_per_s": round(n_records / seconds, 1) if seconds > 0.05 else None}


def compare(data: Dataset | DatasetArrays, held_out: Dataset | None, cfg: DistillConfig
            ) -> dict:
    """All rows on one dataset; scored on ``held_out`` when given, else on validation."""
    t0 = time.perf_counter()
    policy, metrics = distil(cfg, data)
    ours_s = time.perf_counter() - t0
    split = split_episodes(data, policy.layout, cfg.validation_fraction, cfg.seed)
    if held_out is not None:
        X_eval = policy.layout.matrix([r["state"] for r in held_out.records])
        a_eval = np.array([r["teacher_action"] for r in held_out.records])
    else:
        X_eval, a_eval = split.X_val, split.a_val
    n = len(split.a_train)
    rows = [score("ours (default)", policy.act, sum(metrics["tree_sizes"]), ours_s,
                  X_eval, a_eval, n)]
    if data.n_actions > cfg.forest_budget:
        t0 = time.perf_counter()
        full, full_metrics = distil(replace(cfg, forest_budget=0.0), data)
        rows.append(score("ours, full population per tree", full.act,
                          sum(full_metrics["tree_sizes"]), time.perf_counter() - t0,
                          X_eval, a_eval, n))
    t0 = time.perf_counter()
    plain = plain_gplearn(cfg, split.X_train, split.a_train, data.n_actions)
    rows.append(score("plain gplearn one-vs-rest",
                      lambda X: np.argmax(logits(plain, X), axis=1),
                      sum(len(t) for t in plain), time.perf_counter() - t0, X_eval, a_eval, n))
    t0 = time.perf_counter()
    dt, dt_nodes = decision_tree_policy(policy, split, 0)
    rows.append(score("decision tree, same size", dt.act, dt_nodes, time.perf_counter() - t0,
                      X_eval, a_eval, n))
    majority = int(np.bincount(split.a_train).argmax())
    rows.append(score("majority action", lambda X: np.full(len(X), majority), 1, 0.0,
                      X_eval, a_eval, n))
    return {"records": DatasetArrays.of(data).n_records, "n_actions": data.n_actions,
            "rows": rows, "tree_sizes": metrics["tree_sizes"], "formulas": policy.describe(),
            "policy": policy}


def show(title: str, result: dict) -> None:
    print(f"\n{title}: {result['records']} records, {result['n_actions']} actions")
    print(f"{'model':<30}{'agreement':>10}{'nodes':>7}{'fit s':>8}{'records/s':>11}")
    for row in result["rows"]:
        rate = "-" if row["records_per_s"] is None else f"{row['records_per_s']:.1f}"
        print(f"{row['model']:<30}{row['agreement']:>10.3f}{row['nodes']:>7}"
              f"{row['fit_seconds']:>8.1f}{rate:>11}")
    print(f"ours: tree sizes {result['tree_sizes']}\n{result['formulas']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", nargs="*", default=list(RULES), choices=tuple(RULES))
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--records", type=int, default=1500)
    parser.add_argument("--dataset", help="a real dataset too (run folder, 'latest' or file)")
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--episodes", type=int, default=0,
                        help="with --dataset: seeded games of our forest and the teacher")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bench_distill.json"))
    args = parser.parse_args()
    out: dict = {"planted": {}, "dataset": None}
    for rule in args.rules:
        for seed in args.seeds:
            cfg = DistillConfig(runs_dir=args.runs_dir, seed=seed)
            result = compare(rule_dataset(rule, args.records, seed),
                             rule_dataset(rule, args.records, seed + 100), cfg)
            show(f"planted rule '{rule}', seed {seed}, held-out episodes of seed {seed + 100}",
                 result)
            result.pop("policy")
            out["planted"][f"{rule}/{seed}"] = result
    if args.dataset:
        data, _ = resolve_dataset(args.dataset, args.runs_dir)
        cfg = DistillConfig(dataset=args.dataset, runs_dir=args.runs_dir,
                            eval_episodes=args.episodes)
        result = compare(data, None, cfg)
        show(f"dataset {data.path} (validation episodes)", result)
        if args.episodes:
            play = play_metrics(cfg, result["policy"], data)
            result["play"] = play
            print(f"return over {args.episodes} seeded games: ours "
                  f"{play['symbolic']['mean']:.2f} +/- {play['symbolic']['std']:.2f}, teacher "
                  f"{play['teacher']['mean']:.2f} +/- {play['teacher']['std']:.2f}")
        result.pop("policy")
        out["dataset"] = dict(result, path=str(data.path))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
