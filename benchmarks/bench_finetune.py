"""Fine-tuning on Pong: distilled vs fine-tuned return, time per generation and per PPO update,
and PPO vs CMA-ES on the constants with the same env-step budget.

Every run starts from the same distilled policy and is evaluated on the same seeded games
(``evaluate_side_by_side`` before, the same seeds after). Three runs of
``symbolic_finetuning``: ``--search evolve`` (GP with reward fitness and the PPO constants
variation), ``--search gradient --optimizer ppo`` and ``--search gradient --optimizer cmaes``
with equal ``-n``. A second table repeats PPO vs CMA-ES on the offset-catch game of
``tests/objenv.py``, whose best constants are known, from constants perturbed away.

    python benchmarks/bench_finetune.py --teacher runs/teacher/<run> --policy runs/distill/<run>

Without ``--teacher`` a 256-step Pong teacher is trained; without ``--policy`` sample.json is
distilled (both in a temporary folder). The figures measure the machinery at a small budget;
improving a Pong policy needs a trained teacher and far more env steps.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from diffses.distill import DistillConfig, distil  # noqa: E402
from diffses.finetune import FinetuneConfig, run as finetune  # noqa: E402
from diffses.io import atomic_write_json  # noqa: E402
from diffses.schema import load_dataset  # noqa: E402
from diffses.teacher import TeacherConfig  # noqa: E402
from diffses.teacher import run as train  # noqa: E402
from gplearn_custom.cmaes import CMAESConfig, ConstantCMAES  # noqa: E402
from gplearn_custom.fitness import play  # noqa: E402
from gplearn_custom.ppo import PPOConfig, train_constants  # noqa: E402


def setup(args: argparse.Namespace, runs: str) -> tuple[str, str]:
    """The teacher run folder and the policy file to fine-tune."""
    teacher = args.teacher or str(train(TeacherConfig(
        n_timesteps=256, n_envs=2, hyperparams=("n_steps:64", "batch_size:64"), runs_dir=runs,
        eval_freq=0, final_eval_episodes=0, progress=False, device="cpu")).path)
    if args.policy:
        return teacher, args.policy
    data = load_dataset(ROOT / "sample.json")
    policy, _ = distil(DistillConfig(population_size=500, generations=10, runs_dir=runs), data)
    policy.provenance = {"dataset": str(data.path), "detector": "ocatari"}
    return teacher, str(policy.save(Path(runs) / "policy.json"))


def pong(args: argparse.Namespace, runs: str) -> list[dict[str, Any]]:
    """The three fine-tuning runs on Pong, one row each."""
    teacher, policy = setup(args, runs)
    common = dict(policy=policy, teacher=teacher, detector="ocatari", runs_dir=runs,
                  max_steps=args.max_steps, eval_episodes=args.eval_episodes,
                  eval_max_steps=args.max_steps, seed=args.seed, device="cpu", progress=False,
                  n_envs=2, n_steps=64, batch_size=64, n_jobs=args.n_jobs)
    setups = [
        ("evolve (GP + PPO constants, lambda 1)",
         dict(search="evolve", population_size=args.population, generations=args.generations,
              tournament_size=2, p_gradient=0.25, n_timesteps=args.variation_steps,
              episodes=1)),
        ("gradient, PPO (lambda 1 -> 0)", dict(search="gradient", optimizer="ppo",
                                               n_timesteps=args.budget)),
        ("gradient, CMA-ES", dict(search="gradient", optimizer="cmaes",
                                  n_timesteps=args.budget, cmaes_popsize=4)),
    ]
    rows = []
    for label, extra in setups:
        t0 = time.perf_counter()
        done = finetune(FinetuneConfig(**common, **extra, name=extra["search"]))
        seconds = time.perf_counter() - t0
        metrics = json.loads((done.path / "policy.json").read_text())["metrics"]
        history = json.loads((done.path / "history.json").read_text())
        returns = history["episode_returns"] or []
        rows.append({
            "setup": label, "env_steps": metrics["env_steps"], "wall_seconds": round(seconds, 1),
            "seconds_per_generation": metrics.get("seconds_per_generation"),
            "seconds_per_update": metrics.get("seconds_per_update"),
            "seconds_per_iter": metrics.get("seconds_per_iter"),
            "return_before": metrics["before"]["symbolic"]["mean"],
            "return_after": metrics["after"]["symbolic"]["mean"],
            "return_teacher": metrics["before"]["teacher"]["mean"],
            "eval_seeds": metrics["after"]["seeds"],
            "train_return_last_half": late_return(returns, metrics["env_steps"]),
            "training_curve": returns,
            "agreement_before": metrics.get("agreement_before"),
            "agreement_after": metrics.get("agreement_after")})
    return rows


def objgame(budget: int, seed: int) -> list[dict[str, Any]]:
    """PPO vs CMA-ES on the offset-catch game from perturbed constants, same budget."""
    import objenv
    games = list(range(500, 520))

    def greedy(trees: list) -> float:
        return float(np.mean(play(trees, objenv.make_env(), games)[0]))

    start = objenv.perturbed(0.1)
    rows = [{"setup": "offset-catch: perturbed start", "env_steps": 0,
             "return_after": greedy(start)},
            {"setup": "offset-catch: best forest (known)", "env_steps": 0,
             "return_after": greedy(objenv.BEST)}]
    t0 = time.perf_counter()
    trees, history, ppo = train_constants(start, objenv.make_env, PPOConfig(
        n_timesteps=budget, n_envs=4, n_steps=50, batch_size=100, ent_coef=0.0), seed=seed)
    rows.append({"setup": "offset-catch: PPO", "env_steps": ppo.env_steps,
                 "wall_seconds": round(time.perf_counter() - t0, 2),
                 "seconds_per_update": float(np.mean([h.seconds for h in history])),
                 "return_after": greedy(trees),
                 "train_return_last_half": late_return(ppo.episode_returns, ppo.env_steps),
                 "training_curve": ppo.episode_returns})
    env = objenv.make_env()
    t0 = time.perf_counter()
    search = ConstantCMAES(start, lambda fs, seeds: [play(f, env, seeds)[:2] for f in fs],
                           CMAESConfig(n_timesteps=budget, sigma0=0.3, episodes=2), seed=seed)
    while not search.done:
        search.step()
    rows.append({"setup": "offset-catch: CMA-ES", "env_steps": search.env_steps,
                 "wall_seconds": round(time.perf_counter() - t0, 2),
                 "return_after": greedy(search.trees()),
                 "train_return_last_half": late_return(search.episode_returns,
                                                       search.env_steps),
                 "training_curve": search.episode_returns})
    return rows


def late_return(curve: list, env_steps: int) -> float | None:
    """Mean return of the training games that ended in the second half of the budget."""
    late = [r for step, r in curve if step > env_steps / 2]
    return float(np.mean(late)) if late else None


def _fmt(value: Any, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) \
        else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", help="a Pong teacher run folder")
    parser.add_argument("--policy", help="a distilled Pong policy (run folder or policy.json)")
    parser.add_argument("--budget", type=int, default=4096,
                        help="env steps for each constants optimizer on Pong")
    parser.add_argument("--variation-steps", type=int, default=256,
                        help="env steps of each PPO variation inside evolve")
    parser.add_argument("--population", type=int, default=6)
    parser.add_argument("--generations", type=int, default=3)
    parser.add_argument("--max-steps", type=int, default=300,
                        help="cap on agent steps per game (fitness, training, evaluation)")
    parser.add_argument("--eval-episodes", type=int, default=2)
    parser.add_argument("--objenv-budget", type=int, default=4000)
    parser.add_argument("--n-jobs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" /
                                             "bench_finetune.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as runs:
        rows = pong(args, runs)
    small = objgame(args.objenv_budget, args.seed)
    print(f"\nPong (ALE/Pong-v5, ocatari objects), games capped at {args.max_steps} agent steps, "
          f"evaluation seeds {rows[0]['eval_seeds']}, 1 torch thread, CPU")
    print(f"{'setup':<40}{'env steps':>10}{'s/gen':>8}{'s/update':>10}{'s/iter':>8}"
          f"{'train*':>8}{'before':>8}{'after':>8}{'teacher':>9}{'wall s':>8}")
    for r in rows:
        print(f"{r['setup']:<40}{r['env_steps']:>10}{_fmt(r['seconds_per_generation']):>8}"
              f"{_fmt(r['seconds_per_update']):>10}{_fmt(r['seconds_per_iter']):>8}"
              f"{_fmt(r['train_return_last_half']):>8}"
              f"{_fmt(r['return_before']):>8}{_fmt(r['return_after']):>8}"
              f"{_fmt(r['return_teacher']):>9}{_fmt(r['wall_seconds'], 1):>8}")
    print("* mean return of the training games that ended in the second half of the budget")
    print("\nOffset-catch game (tests/objenv.py), same budget for both optimizers, greedy return "
          "over 20 games (max 50)")
    print(f"{'setup':<40}{'env steps':>10}{'train*':>8}{'return':>8}{'wall s':>8}")
    for r in small:
        print(f"{r['setup']:<40}{r['env_steps']:>10}{_fmt(r.get('train_return_last_half')):>8}"
              f"{_fmt(r['return_after']):>8}{_fmt(r.get('wall_seconds'), 1):>8}")
    out = atomic_write_json(args.out, {"pong": rows, "offset_catch": small,
                                       "settings": vars(args)})
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
