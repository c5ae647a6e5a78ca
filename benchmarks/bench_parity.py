"""Perception parity: what a learned detector costs a policy, and where the points go.

Plays each policy on the same seeded games through OCAtari's RAM objects and through the
learned detector with its errors repaired from the RAM truth one kind at a time (false
positives, types, boxes, misses; see ``diffses.parity``), and reports each row's return with
the detector's recall, false positives and centre error along the games it played.

    python benchmarks/bench_parity.py --policy docs/policies/pong_tracking.json
    python benchmarks/bench_parity.py --teacher pretrained/breakout_teacher \\
        --detector pretrained/space_breakout.pt --policy pretrained/policies/breakout.json \\
        --max-steps 2000
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from diffses.cli import parse_overrides  # noqa: E402
from diffses.detection import detector_for, load_detector  # noqa: E402
from diffses.io import atomic_write_json  # noqa: E402
from diffses.parity import STEPS, RepairedDetector  # noqa: E402
from diffses.perception import Perception  # noqa: E402
from diffses.play import play_symbolic  # noqa: E402
from diffses.policy import SymbolicPolicy  # noqa: E402
from diffses.runs import Run  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default=str(ROOT / "pretrained" / "pong_teacher"))
    parser.add_argument("--detector", default=str(ROOT / "pretrained" / "space_pong.pt"))
    parser.add_argument("--policy", nargs="+",
                        default=[str(ROOT / "docs" / "policies" / "pong_tracking.json")])
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=5000, help="first evaluation game")
    parser.add_argument("--max-steps", type=int, default=3000, help="cap on agent steps")
    parser.add_argument("--sticky", type=float, default=0.0,
                        help="repeat-action probability of every game (0: as they are)")
    parser.add_argument("--gate", type=float, default=6.0, help="matching gate in pixels")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="detection settings of the learned detector, e.g. "
                             "detect.track_threshold=0.1 detect.coast=2")
    parser.add_argument("--steps", nargs="+", default=list(STEPS), choices=STEPS)
    parser.add_argument("--out", help="result JSON (default benchmarks/results/"
                                      "bench_parity_<game>.json)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    teacher_run = Run.load(args.teacher)
    seeds = list(range(args.seed, args.seed + args.episodes))
    settings = parse_overrides(args.set)
    learned = load_detector(args.detector, env_id=teacher_run.env_id, device="cpu",
                            overrides=settings)
    truth = load_detector("ocatari", env_id=teacher_run.env_id)
    result = {"env": teacher_run.env_id, "teacher": args.teacher, "detector": args.detector,
              "settings": settings,
              "seeds": seeds, "max_steps": args.max_steps, "sticky": args.sticky,
              "gate_px": args.gate,
              "machine": f"{platform.processor() or platform.machine()}, "
                         f"torch {torch.__version__}, one thread", "policies": {}}
    for path in args.policy:
        policy = SymbolicPolicy.load(path)
        seen = detector_for(policy.layout.type_names, learned, path, args.detector)
        rows = {}
        t0 = time.perf_counter()
        rows["ocatari"] = {"returns": play_symbolic(policy, Perception(truth), teacher_run,
                                                    seeds, args.max_steps, args.sticky)}
        for step in args.steps:
            repaired = RepairedDetector(seen, truth, step, args.gate)
            rows[step] = {"returns": play_symbolic(policy, Perception(repaired), teacher_run,
                                                   seeds, args.max_steps, args.sticky),
                          "detections": repaired.summary()}
        print(f"\n{path} on {teacher_run.env_id}, games {seeds[0]}-{seeds[-1]}, "
              f"cap {args.max_steps} steps, sticky {args.sticky:g} "
              f"({time.perf_counter() - t0:.0f} s)")
        print(f"{'perception':<34}{'return':>18}{'lost':>8}  detections along its games")
        base = float(np.mean(rows["ocatari"]["returns"]))
        for name, row in rows.items():
            r = row["returns"]
            row.update(mean=float(np.mean(r)), std=float(np.std(r)))
            seen_by = "; ".join(
                f"{c} recall {d['recall']:.3f} fp {d['false_positives']} err "
                f"{d['centre_error']:.2f}" if d["recall"] is not None else f"{c} fp "
                f"{d['false_positives']}" for c, d in row.get("detections", {}).items())
            label = "ocatari (RAM)" if name == "ocatari" else f"learned, {name}"
            print(f"{label:<34}{row['mean']:>+10.2f} ± {row['std']:<5.2f}"
                  f"{base - row['mean']:>+8.2f}  {seen_by}")
        result["policies"][path] = rows
    game = teacher_run.env_id.split("/")[-1].split("NoFrameskip")[0].split("-")[0].lower()
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"bench_parity_{game}.json")
    atomic_write_json(out, result)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
