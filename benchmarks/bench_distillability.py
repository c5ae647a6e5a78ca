"""How distillable is a teacher? Held-out agreement of model families of growing size on one
dataset of its behaviour, and what its choices key on.

On the dataset's own train/validation split (by episode, as distillation splits it), fits the
majority action, a multinomial logistic regression, decision trees of depth 2 to 8, a 100-tree
random forest and (``--gp``) the distilled forest at the distillation defaults, and reports
each one's agreement with the teacher on the held-out episodes, plain and balanced over
actions (the mean of each action's recall), with its size. With ``--play N`` every tree (as
nested ``ite`` formulas, the form the decision-tree baseline plays in) and the GP forest also
play N seeded games through the dataset's detector, beside the teacher on the same games:
how large a tree must be before agreement turns into return. The depth-3 tree's splits and the
features a depth-8 tree leans on (impurity importance) say what the teacher's choices key on:
a teacher whose choices follow a short rule is distilled by small models; one whose
agreement climbs only with depth has no short symbolic form on these features.

    python benchmarks/bench_distillability.py --dataset runs/dataset/<run> [--gp] [--play 10]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from diffses.arrays import DatasetArrays  # noqa: E402
from diffses.detection import load_detector  # noqa: E402
from diffses.distill import (DistillConfig, distil, players_of, split_episodes,  # noqa: E402
                             tree_forest)
from diffses.perception import Perception  # noqa: E402
from diffses.play import (greedy_teacher, play_episodes, play_symbolic,  # noqa: E402
                          returns_summary)
from diffses.policy import SymbolicPolicy  # noqa: E402
from diffses.teacher import load_teacher  # noqa: E402
from diffses.io import atomic_write_json  # noqa: E402
from gplearn_custom.compact import balanced_agreement  # noqa: E402


def row(name: str, pred: np.ndarray, truth: np.ndarray, size: int, seconds: float
        ) -> dict[str, Any]:
    return {"model": name, "agreement": float((pred == truth).mean()),
            "balanced_agreement": balanced_agreement(pred, truth), "size": size,
            "seconds": round(seconds, 2)}


def play_all(data: DatasetArrays, policies: dict[str, SymbolicPolicy], games: int, seed: int,
             max_steps: int | None) -> dict[str, dict[str, Any]]:
    """Each policy's and the teacher's returns on the same seeded games, through the dataset's
    teacher and detector."""
    teacher_run, detector = players_of(DistillConfig(dataset=str(data.path)), data)
    perception = Perception(load_detector(detector, env_id=teacher_run.env_id))
    seeds = list(range(seed, seed + games))
    out = {name: returns_summary(play_symbolic(policy, perception, teacher_run, seeds,
                                               max_steps))
           for name, policy in policies.items()}
    out["teacher"] = returns_summary(play_episodes(
        teacher_run, seeds, greedy_teacher(load_teacher(teacher_run, "cpu")),
        perception.env_kwargs, max_steps))
    for summary in out.values():
        summary.update(seeds=seeds, max_steps=max_steps)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, help="dataset run folder or file")
    parser.add_argument("--gp", action="store_true", help="also distil the GP forest "
                                                          "(distillation defaults; minutes)")
    parser.add_argument("--play", type=int, default=0, help="seeded games each tree, the GP "
                                                            "forest and the teacher play")
    parser.add_argument("--play-seed", type=int, default=5000, help="first seed of those games")
    parser.add_argument("--max-steps", type=int, default=None, help="cap on agent steps a game")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" /
                                             "distillability.json"))
    args = parser.parse_args()
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier, export_text

    data = DatasetArrays.open(args.dataset)
    layout = data.layout()
    split = split_episodes(data, layout, DistillConfig().validation_fraction, args.seed)
    X, y, Xv, yv = split.X_train, split.a_train, split.X_val, split.a_val
    rows = [row("majority action", np.full(len(yv), np.bincount(y).argmax()), yv, 1, 0.0)]
    models: list[tuple[str, Any]] = [
        ("multinomial logistic", LogisticRegression(max_iter=2000))]
    models += [(f"decision tree, depth {d}", DecisionTreeClassifier(max_depth=d,
                                                                    random_state=args.seed))
               for d in (2, 3, 4, 6, 8, 10, 12)]
    models.append(("random forest, 100 trees", RandomForestClassifier(
        100, min_samples_leaf=2, random_state=args.seed, n_jobs=1)))
    fitted: dict[str, Any] = {}
    for name, model in models:
        t0 = time.perf_counter()
        model.fit(X, y)
        fitted[name] = model
        if hasattr(model, "tree_"):
            size = int(model.tree_.node_count)
        elif hasattr(model, "estimators_"):
            size = int(sum(e.tree_.node_count for e in model.estimators_))
        else:
            size = int(model.coef_.size + model.intercept_.size)
        rows.append(row(name, model.predict(Xv), yv, size, time.perf_counter() - t0))
    policies = {}
    if args.gp:
        t0 = time.perf_counter()
        policy, _ = distil(DistillConfig(dataset=args.dataset, seed=args.seed), data)
        rows.append(row("distilled GP forest (defaults)", policy.act(Xv), yv,
                        sum(len(t) for t in policy.trees), time.perf_counter() - t0))
        policies[rows[-1]["model"]] = policy
    if args.play:
        meta = data.meta or {}
        trees = {name: model for name, model in fitted.items() if hasattr(model, "tree_")}
        for name, model in trees.items():
            policies[name] = SymbolicPolicy(tree_forest(model, data.n_actions), layout,
                                            meta.get("action_meanings") or
                                            [str(a) for a in range(data.n_actions)],
                                            meta.get("env_id", "unknown"), ["sub", "ite"])
        played = play_all(data, policies, args.play, args.play_seed, args.max_steps)
        for r in rows:
            r.update(played.get(r["model"], {}))
        rows.append(dict(model="teacher", **played["teacher"]))
    deep = fitted["decision tree, depth 8"]
    importance = sorted(zip(deep.feature_importances_.tolist(), layout.names), reverse=True)
    shallow = export_text(fitted["decision tree, depth 3"], feature_names=layout.names)
    out = {"dataset": str(data.path), "records": data.n_records,
           "n_train": int(len(y)), "n_validation": int(len(yv)),
           "teacher_action_share": (np.bincount(data.actions, minlength=data.n_actions)
                                    / data.n_records).round(4).tolist(),
           "rows": rows, "depth8_importance": [{"feature": n, "importance": round(v, 4)}
                                               for v, n in importance[:8]],
           "depth3_tree": shallow}
    atomic_write_json(args.out, out)
    print(f"{data.path}: {data.n_records} records, {len(yv)} held out")
    print(f"{'model':<34} {'agreement':>9} {'balanced':>9} {'size':>7} {'s':>7} {'return':>15}")
    for r in rows:
        ret = f"{r['mean']:+.2f} ± {r['std']:.2f}" if "mean" in r else ""
        if "agreement" not in r:
            print(f"{r['model']:<34} {'':>9} {'':>9} {'':>7} {'':>7} {ret:>15}")
            continue
        print(f"{r['model']:<34} {r['agreement']:>9.3f} {r['balanced_agreement']:>9.3f} "
              f"{r['size']:>7} {r['seconds']:>7.1f} {ret:>15}")
    print("depth-8 tree leans on: " + ", ".join(f"{n} {v:.2f}" for v, n in importance[:5]))
    print("depth-3 tree:\n" + shallow)
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
