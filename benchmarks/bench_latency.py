"""Decision latency at batch 1, one thread: the symbolic forest beside the teacher's CNN.

Same real Pong frames for every row (the shipped teacher playing), one run:

- the teacher's forward (SB3 ``predict`` on one stacked 84x84 observation);
- the forest through numpy (``np.argmax`` of the trees' values on one row) and compiled
  (``SymbolicPolicy.compiled``: one generated Python function, what ``act`` uses at batch 1);
- the whole perceive-and-act step of each agent from the native frame: the teacher's
  preprocessing (grey, resize, frame stack) and CNN; the symbolic agent's SPACE detection,
  tracking, features and forest, and the same through SPACE's fast student (``--fast``, a
  checkpoint made by ``space/main.py --task fast``).

    python benchmarks/bench_latency.py                   # distils sample.json first
    python benchmarks/bench_latency.py --policy runs/distill/<run>
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from diffses.detection import load_detector  # noqa: E402
from diffses.distill import DistillConfig, distil, resolve_dataset  # noqa: E402
from diffses.errors import UserError  # noqa: E402
from diffses.perception import Perception  # noqa: E402
from diffses.play import greedy_teacher  # noqa: E402
from diffses.policy import SymbolicPolicy  # noqa: E402
from diffses.rollout import rollout  # noqa: E402
from diffses.runs import Run  # noqa: E402
from diffses.teacher import load_teacher, teacher_env  # noqa: E402


def per_call(fn: Callable[[int], object], n: int, repeats: int = 5) -> float:
    """Median over ``repeats`` of the mean seconds of ``fn(i)`` over ``n`` calls."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(n):
            fn(i)
        times.append((time.perf_counter() - t0) / n)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default=str(ROOT / "pretrained" / "pong_teacher"))
    parser.add_argument("--detector", default=str(ROOT / "pretrained" / "space_pong.pt"))
    parser.add_argument("--fast", default=str(ROOT / "pretrained" / "space_pong_fast.pt"),
                        help="a checkpoint with SPACE's fast student (skipped if missing)")
    parser.add_argument("--policy", help="policy.json or its run folder (default: distil "
                                         "sample.json at the default settings)")
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bench_latency.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    run = Run.load(args.teacher)
    model = load_teacher(run)
    if args.policy:
        policy = SymbolicPolicy.load(args.policy)
    else:
        data, _ = resolve_dataset(str(ROOT / "sample.json"), "runs")
        policy, _ = distil(DistillConfig(runs_dir="runs"), data)
    venv = teacher_env(run, 0, native_frames=True)
    observations, frames = [], []
    for i, step in enumerate(rollout(venv, greedy_teacher(model)())):
        observations.append(step.obs)
        frames.append(step.info["native_frame"])
        if i + 1 >= args.frames:
            break
    venv.close()
    n = len(frames)
    detector = load_detector(args.detector, env_id=run.env_id, device="cpu",
                             overrides={"detect.fast": False})
    perception = Perception(detector)
    states = perception.observe(np.stack(frames), [{}] * n, [True] + [False] * (n - 1))
    X = policy.layout.matrix(states)
    rows_1 = [X[i:i + 1] for i in range(n)]
    lists = [list(map(float, X[i])) for i in range(n)]
    compiled = policy.compiled()
    stack = np.zeros((84, 84, 4), dtype=np.uint8)

    def teacher_step(i: int) -> int:
        grey = cv2.cvtColor(frames[i], cv2.COLOR_RGB2GRAY)
        stack[:, :, :-1] = stack[:, :, 1:]
        stack[:, :, -1] = cv2.resize(grey, (84, 84), interpolation=cv2.INTER_AREA)
        return int(model.predict(stack[None], deterministic=True)[0][0])

    def symbolic_step(agent: Perception) -> Callable[[int], int]:
        def step(i: int) -> int:
            state = agent.observe(frames[i][None], [{}], [i == 0])[0]
            return compiled(list(map(float, policy.layout.vector(state))))
        return step

    timings = {
        "teacher CNN forward (predict)": per_call(
            lambda i: model.predict(observations[i], deterministic=True), n),
        "forest, numpy": per_call(lambda i: np.argmax(policy.logits(rows_1[i]), axis=1), n),
        "forest, compiled": per_call(lambda i: compiled(lists[i]), n, repeats=20),
        "teacher step: preprocess + CNN": per_call(teacher_step, n),
        "symbolic step: SPACE + tracking + features + forest": per_call(
            symbolic_step(Perception(detector)), n),
    }
    if Path(args.fast).is_file():
        fast = load_detector(args.fast, env_id=run.env_id, device="cpu")
        timings["symbolic step: fast student + tracking + features + forest"] = per_call(
            symbolic_step(Perception(fast)), n)
        try:
            projected = load_detector(args.fast, env_id=run.env_id, device="cpu",
                                      overrides={"detect.palette": True})
        except UserError as err:
            print(f"[bench] no palette row: {err}")
        else:
            timings["symbolic step: palette + fast student + tracking + features + forest"] = \
                per_call(symbolic_step(Perception(projected)), n)
    cnn = timings["teacher CNN forward (predict)"]
    print(f"\n{run.env_id}, {n} frames, batch 1, one thread; forest of {policy.n_actions} "
          f"trees, {sum(len(t) for t in policy.trees)} nodes")
    print(f"{'path':<70}{'µs per decision':>16}{'CNN / this':>12}")
    for name, seconds in timings.items():
        print(f"{name:<70}{seconds * 1e6:>16.2f}{cnn / seconds:>12.1f}")
    step_ratio = timings["teacher step: preprocess + CNN"] / \
        timings["symbolic step: SPACE + tracking + features + forest"]
    print(f"whole step, teacher / symbolic: {step_ratio:.2f}")
    result = {"env": run.env_id, "frames": n, "nodes": sum(len(t) for t in policy.trees),
              "microseconds": {k: round(v * 1e6, 3) for k, v in timings.items()},
              "cnn_over_compiled_forest": round(cnn / timings["forest, compiled"], 1),
              "teacher_step_over_symbolic_step": round(step_ratio, 3)}
    fast_key = "symbolic step: fast student + tracking + features + forest"
    if fast_key in timings:
        fast_ratio = timings["teacher step: preprocess + CNN"] / timings[fast_key]
        print(f"whole step, teacher / symbolic through the fast student: {fast_ratio:.2f}")
        result["teacher_step_over_fast_step"] = round(fast_ratio, 3)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
