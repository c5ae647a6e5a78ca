"""Dataset building speed: records per second with each detector, beside the bare rollout.

Same teacher, same seed and number of steps for every row, one run. The bare rollout (teacher
acting, no detection or tracking) is the reference: the ratio is what perception costs.

    python benchmarks/bench_dataset.py --teacher runs/teacher/<run> [--space runs/space/<run>]

Without ``--teacher`` a 256-step Pong teacher is trained first (speed does not depend on
how well it plays).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from diffses.dataset import DatasetConfig, run  # noqa: E402
from diffses.rollout import rollout  # noqa: E402
from diffses.runs import Run  # noqa: E402
from diffses.teacher import TeacherConfig, load_teacher, teacher_env  # noqa: E402
from diffses.teacher import run as train  # noqa: E402


def bare_rollout(teacher: Run, steps: int) -> float:
    """Records/s of the teacher acting with native frames and nothing else."""
    model = load_teacher(teacher, "cpu")
    venv = teacher_env(teacher, 0, native_frames=True, clip_reward=False)
    t0 = time.perf_counter()
    for i, _ in enumerate(rollout(venv, lambda obs, info: int(model.predict(obs)[0][0]))):
        if i + 1 >= steps:
            break
    seconds = time.perf_counter() - t0
    venv.close()
    return steps / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher")
    parser.add_argument("--space", help="a SPACE run folder to measure beside ocatari")
    parser.add_argument("-n", "--n-steps", type=int, default=2000)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bench_dataset.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as runs:
        teacher = Run.load(args.teacher) if args.teacher else train(TeacherConfig(
            n_timesteps=256, n_envs=2, hyperparams=("n_steps:64", "batch_size:64"), runs_dir=runs,
            eval_freq=0, final_eval_episodes=0, progress=False, device="cpu"))
        rows = {"bare rollout (no perception)": bare_rollout(teacher, args.n_steps)}
        detectors = ["ocatari"] + ([args.space] if args.space else [])
        for det in detectors:
            result = run(DatasetConfig(teacher=str(teacher.path), detector=det,
                                       n_steps=args.n_steps, runs_dir=runs, progress=False,
                                       device="cpu"))
            rows[f"build_dataset, detector {Path(det).name}"] = \
                result.manifest["summary"]["records_per_second"]
    base = rows["bare rollout (no perception)"]
    print(f"\nteacher {teacher.env_id}, {args.n_steps} agent steps, CPU")
    print(f"{'setup':<48}{'records/s':>12}{'vs bare':>10}")
    for name, rate in rows.items():
        print(f"{name:<48}{rate:>12.1f}{rate / base:>10.2f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"env": teacher.env_id, "steps": args.n_steps,
                                          "records_per_second": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
