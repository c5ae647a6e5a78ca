"""Playing a symbolic policy: the game without the teacher's frames beside the teacher's env.

A symbolic player reads only ``info`` (native frame, RAM objects); the teacher's env also warps
and stacks frames and copies every step's info. Both ways play the same seeded games, in turn,
in one run, on one thread; the returns and game lengths must be identical, the speed is the
figure (agent steps per second, and their ratio).

    python benchmarks/bench_play.py                                  # the shipped Pong policy
    python benchmarks/bench_play.py --policy runs/finetune/<run> --games 6 --max-steps 3000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from diffses.io import atomic_write_json  # noqa: E402
from diffses.perception import Perception  # noqa: E402
from diffses.play import SymbolicAgent, load_player, play_episodes  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default=str(ROOT / "pretrained/policies/pong.json"))
    parser.add_argument("--games", type=int, default=4)
    parser.add_argument("--seed", type=int, default=5000)
    parser.add_argument("--max-steps", type=int, default=2000)
    parser.add_argument("--sticky", type=float, default=0.0)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/bench_play.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    policy, teacher_run, detector = load_player(args.policy, str(ROOT / "runs"))
    perception = Perception(detector)
    rows = {}
    for frames in (True, False):
        lengths: list[int] = []
        t0 = time.perf_counter()
        returns = play_episodes(teacher_run, range(args.seed, args.seed + args.games),
                                lambda: SymbolicAgent(policy, perception),
                                perception.env_kwargs, args.max_steps, args.sticky, lengths,
                                frames=frames)
        seconds = time.perf_counter() - t0
        rows["teacher env" if frames else "game for an info reader"] = {
            "returns": returns, "lengths": lengths, "seconds": round(seconds, 2),
            "steps_per_second": round(sum(lengths) / seconds, 1)}
    env, game = rows["teacher env"], rows["game for an info reader"]
    same = env["returns"] == game["returns"] and env["lengths"] == game["lengths"]
    result = {"policy": args.policy, "games": args.games, "seed": args.seed,
              "max_steps": args.max_steps, "sticky": args.sticky, "rows": rows,
              "identical_games": same,
              "speedup": round(game["steps_per_second"] / env["steps_per_second"], 2)}
    for name, row in rows.items():
        print(f"{name:<24} {row['steps_per_second']:8.1f} agent steps/s  returns {row['returns']}")
    print(f"identical games: {same}; speed-up {result['speedup']}x")
    atomic_write_json(Path(args.out), result)
    if not same:
        raise SystemExit("the two ways played different games")


if __name__ == "__main__":
    main()
