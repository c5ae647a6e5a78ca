"""Distillation quality on a real dataset: the GP forest beside simple references, one run.

Same train/validation split for every row: the majority action (the floor), a scikit-learn
decision tree of depth 5 on the same features (the interpretable reference SCoBots uses),
and our forest. With --episodes the forest also plays beside the teacher on the same seeds.

    python benchmarks/bench_distill.py --dataset runs/dataset/<run> --episodes 5
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from diffses.distill import DistillConfig, distil, play_metrics, resolve_dataset, split_episodes  # noqa: E402,E501
from diffses.features import FeatureLayout  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="latest")
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--population-size", type=int, default=1000)
    parser.add_argument("--generations", type=int, default=20)
    parser.add_argument("--mode", default="auto")
    parser.add_argument("--episodes", type=int, default=0)
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bench_distill.json"))
    args = parser.parse_args()
    from sklearn.tree import DecisionTreeClassifier

    data, _ = resolve_dataset(args.dataset, args.runs_dir)
    cfg = DistillConfig(dataset=args.dataset, mode=args.mode, runs_dir=args.runs_dir,
                        population_size=args.population_size, generations=args.generations,
                        eval_episodes=args.episodes, eval_max_steps=args.max_steps)
    layout = FeatureLayout.for_dataset(data.records, data.meta, cfg.max_slots)
    split = split_episodes(data, layout, cfg.validation_fraction, cfg.seed)
    majority = np.bincount(split.a_train).argmax()
    rows = {"majority action": float((split.a_val == majority).mean())}
    t0 = time.perf_counter()
    tree = DecisionTreeClassifier(max_depth=5, random_state=0).fit(split.X_train, split.a_train)
    rows["decision tree, depth 5"] = float((tree.predict(split.X_val) == split.a_val).mean())
    tree_seconds = time.perf_counter() - t0
    policy, metrics = distil(cfg, data)
    rows["GP forest (ours)"] = metrics["validation_agreement"]
    result = {"dataset": str(data.path), "records": len(data.records),
              "actions_share": metrics["teacher_action_share"], "agreement": rows,
              "fit_seconds": {"decision tree": round(tree_seconds, 2),
                              "GP forest": metrics["fit_seconds"]},
              "tree_sizes": metrics["tree_sizes"], "mode": metrics["mode"]}
    print(f"\n{len(data.records)} records ({metrics['n_train']} train, "
          f"{metrics['n_validation']} validation), teacher action counts "
          f"{metrics['teacher_action_share']}, GP population {cfg.gp.population_size}, "
          f"{cfg.gp.generations} generations, mode {metrics['mode']}")
    print(f"{'model':<28}{'validation agreement':>22}")
    for name, value in rows.items():
        print(f"{name:<28}{value:>22.3f}")
    print(f"GP fit {metrics['fit_seconds']:.1f} s, tree sizes {metrics['tree_sizes']}")
    print(policy.describe())
    if args.episodes:
        play = play_metrics(cfg, policy, data)
        result["play"] = play
        print(f"return over {args.episodes} seeded games: symbolic "
              f"{play['symbolic']['mean']:.2f} +/- {play['symbolic']['std']:.2f}, teacher "
              f"{play['teacher']['mean']:.2f} +/- {play['teacher']['std']:.2f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
