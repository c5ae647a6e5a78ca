"""SPACE quality and speed: train on a game's frames, score against OCAtari on held-out frames.

Makes random-play frames with ground truth (or takes --frames), trains SPACE with the game's
config (and any trailing overrides), evaluates on the test split and measures batched detection
speed on CPU. Prints a table against the bars (Pong: F1 >= 0.9 on the ball and both paddles,
training <= 60 minutes on a 2-core CPU, detection >= 200 frames/s) and writes
benchmarks/results/bench_space_<game>.json.

    python benchmarks/bench_space.py --env ALE/Pong-v5 --config space/configs/atari_pong.yaml
    python benchmarks/bench_space.py --env ALE/SpaceInvaders-v5 \\
        --config space/configs/atari_spaceinvaders.yaml train.max_steps=3000
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from diffses.cli import parse_overrides  # noqa: E402
from diffses.frames import FramesConfig, run as save_frames  # noqa: E402
from diffses.io import atomic_write_bytes, atomic_write_json  # noqa: E402
from diffses.runs import env_slug, resolve_run  # noqa: E402
from space.data import load_frames, select_records  # noqa: E402
from space.eval_run import evaluate_task  # noqa: E402
from space.model import SpaceDetector  # noqa: E402
from space.train import FINAL, Task, train  # noqa: E402

F1_BAR, MINUTES_BAR, FPS_BAR = 0.9, 60.0, 200.0
PONG_CLASSES = ("Ball", "Player", "Enemy")


def detection_fps(path: Path, frames, threads: int, repeats: int = 3) -> float:
    """Best of ``repeats`` batched passes over ``frames`` on CPU with ``threads`` threads."""
    torch.set_num_threads(threads)
    detector = SpaceDetector.load(path, device="cpu")
    detector.detect(frames[:32])
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        detector.detect(frames)
        best = min(best, time.perf_counter() - t0)
    return len(frames) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="ALE/Pong-v5")
    parser.add_argument("--config", default=str(ROOT / "space" / "configs" / "atari_pong.yaml"))
    parser.add_argument("--frames", help="a frames run with ground truth (default: make one)")
    parser.add_argument("-n", "--n-frames", type=int, default=3000,
                        help="random-play frames to make (every 2nd agent step)")
    parser.add_argument("--runs-dir", default=str(ROOT / "runs"))
    parser.add_argument("--threads", type=int, default=1, help="torch threads for training")
    parser.add_argument("--pretrained", help="copy the trained checkpoint here")
    parser.add_argument("--out", help="result JSON (default benchmarks/results/"
                                      "bench_space_<game>.json)")
    parser.add_argument("overrides", nargs="*", help="config overrides, key=value")
    args = parser.parse_args()

    if args.frames:
        frames_run = resolve_run(args.frames, "frames", args.runs_dir, env_id=args.env)
    else:
        frames_run = save_frames(FramesConfig(policy="random", env=args.env, n_frames=args.n_frames,
                                              every=2, ground_truth=True, runs_dir=args.runs_dir,
                                              name="bench_space", progress=False))
    overrides = {"num_threads": args.threads, "device": "cpu", "train.progress": False,
                 **parse_overrides(args.overrides)}
    t0 = time.perf_counter()
    run = train(Task("train", args.config, str(frames_run.path), args.runs_dir, None, None,
                     overrides))
    train_minutes = (time.perf_counter() - t0) / 60
    result = evaluate_task(Task("eval", None, str(frames_run.path), args.runs_dir,
                                str(run.path), None, {"num_threads": args.threads,
                                                      "eval.name_types": True}))
    test = load_frames(frames_run.path, select_records(frames_run.path, result["split"]))
    checkpoint = run.path / FINAL
    fps = {f"{t}_thread{'s' if t > 1 else ''}": round(detection_fps(checkpoint, test, t), 1)
           for t in (1, 2)}
    size_mb = checkpoint.stat().st_size / 2**20
    if args.pretrained:
        atomic_write_bytes(args.pretrained, checkpoint.read_bytes())

    per_class = {c: {k: row[k] for k in ("precision", "recall", "f1", "centre_error", "support")}
                 for c, row in result["per_class"].items()}
    pong = args.env == "ALE/Pong-v5"
    bars = {"f1_min": F1_BAR, "train_minutes_max": MINUTES_BAR, "detect_fps_min": FPS_BAR}
    passed = {
        "f1": all(per_class.get(c, {}).get("f1", 0) >= F1_BAR for c in PONG_CLASSES)
        if pong else None,
        "train_minutes": train_minutes <= MINUTES_BAR,
        "detect_fps": max(fps.values()) >= FPS_BAR,
    }
    summary = {
        "env": args.env, "config": args.config, "overrides": args.overrides,
        "frames_run": str(frames_run.path), "space_run": str(run.path),
        "train_frames": len(select_records(frames_run.path, "train")),
        "eval_frames": result["frames"], "eval_split": result["split"],
        "steps": run.manifest["summary"]["steps"], "train_threads": args.threads,
        "train_minutes": round(train_minutes, 2), "per_class": per_class,
        "overall": result["overall"], "type_to_class": result["type_to_class"],
        "purity": result["purity"], "detect_fps_cpu": fps, "checkpoint_mb": round(size_mb, 3),
        "bars": bars, "passed": passed,
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}",
    }
    print(f"\nSPACE on {args.env}: {summary['steps']} steps on CPU ({args.threads} thread), "
          f"{result['frames']} {result['split']} frames, gate {result['gate_px']} px")
    print(f"{'class':<14}{'precision':>10}{'recall':>9}{'F1':>8}{'centre err px':>15}")
    for c, row in per_class.items():
        err = "-" if row["centre_error"] is None else f"{row['centre_error']:.2f}"
        print(f"{c:<14}{row['precision']:>10.3f}{row['recall']:>9.3f}{row['f1']:>8.3f}{err:>15}")
    print(f"{'training':<14}{train_minutes:>10.1f} min (bar <= {MINUTES_BAR:.0f})")
    print(f"{'detection':<14}{fps} frames/s batched on CPU (bar >= {FPS_BAR:.0f})")
    print(f"{'checkpoint':<14}{size_mb:.2f} MB; types -> classes {result['type_to_class']}, "
          f"purity {result['purity']:.3f}")
    print(f"passed: {passed}")
    game = env_slug(args.env).split("-")[1].lower() if "/" in args.env else env_slug(args.env)
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"bench_space_{game}.json")
    atomic_write_json(out, summary)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
