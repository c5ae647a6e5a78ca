"""Playing a symbolic policy: the game without the teacher's frames beside the teacher's env.

A symbolic player reads only ``info`` (native frame, RAM objects); the teacher's env also warps
and stacks frames and copies every step's info. Both ways play the same seeded games, game by
game in turn (after one short untimed game each), in one run, on one thread; the returns and
game lengths must be identical, the speed is the figure (agent steps per second, and their
ratio).

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
    names = {True: "teacher env", False: "game for an info reader"}
    rows = {name: {"returns": [], "lengths": [], "seconds": 0.0} for name in names.values()}

    def play(seeds: list[int], frames: bool, max_steps: int, lengths: list[int]) -> list[float]:
        return play_episodes(teacher_run, seeds, lambda: SymbolicAgent(policy, perception),
                             perception.env_kwargs, max_steps, args.sticky, lengths,
                             frames=frames)
    for frames in names:
        play([args.seed], frames, 100, [])          # warm-up: loading, first calls
    for seed in range(args.seed, args.seed + args.games):
        for frames, name in names.items():
            t0 = time.perf_counter()
            rows[name]["returns"] += play([seed], frames, args.max_steps, rows[name]["lengths"])
            rows[name]["seconds"] += time.perf_counter() - t0
    for row in rows.values():
        row["steps_per_second"] = round(sum(row["lengths"]) / row["seconds"], 1)
        row["seconds"] = round(row["seconds"], 2)
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
