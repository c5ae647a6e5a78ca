"""SPACE, the unsupervised object detector: train it on a frames run, or score it.

    python space/main.py --task train --config space/configs/atari_pong.yaml --frames latest
    python space/main.py --task train --config space/configs/atari_pong.yaml --frames RUN \\
        train.max_steps=2000 device=cuda:0
    python space/main.py --task train --checkpoint RUN resume=true      # continue a stopped run
    python space/main.py --task eval --checkpoint RUN --frames RUN eval.split=validation
    python space/main.py --task fast --checkpoint RUN        # a small, fast student of RUN

Trailing ``key=value`` items override the config (dotted keys, values read as yaml; the
original SPACE's ``key value`` pairs are read too). With
``resume=true`` the run's stored config is used (overrides still apply) and training goes on
from its newest checkpoint (``--checkpoint``, default the newest SPACE run).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)

from diffses.cli import guarded, parse_overrides  # noqa: E402
from diffses.errors import UserError  # noqa: E402
from space.train import Task  # noqa: E402


def parse(argv: list[str] | None = None) -> Task:
    """The command line as a :class:`Task`."""
    parser = argparse.ArgumentParser(prog="space/main.py", description=__doc__,
                                     epilog="docs: docs/space.md",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=("train", "eval", "fast"), required=True,
                        help="train SPACE, score it, or train its fast student")
    parser.add_argument("--config", help="yaml config (space/configs/*.yaml); for eval only "
                                         "its detect and eval sections are used")
    parser.add_argument("--frames", help="save_frames run folder, or 'latest'")
    parser.add_argument("--runs-dir", default="runs", help="root of the run folders "
                                                           "(default: runs)")
    parser.add_argument("--checkpoint", help="SPACE run folder, 'latest' or a checkpoint file "
                                             "(eval), or the run to resume (train)")
    parser.add_argument("--out", help="eval: write eval.json and the PNG here instead of the "
                                      "SPACE run folder")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, e.g. train.max_steps=2000 resume=true")
    args = parser.parse_args(argv)
    for flag in ("config", "frames", "runs_dir", "checkpoint", "out"):
        if getattr(args, flag) == "":
            raise UserError(f"--{flag.replace('_', '-')} is empty; give a path")
    return Task(task=args.task, config=args.config, frames=args.frames, runs_dir=args.runs_dir,
                checkpoint=args.checkpoint, out=args.out,
                overrides=parse_overrides(args.overrides))


def dispatch(task: Task) -> None:
    """Train, evaluate or train the fast student."""
    if task.task == "train":
        from space.train import train
        train(task)
    elif task.task == "fast":
        from space.train import fast_task
        fast_task(task)
    else:
        from space.eval_run import evaluate_task
        evaluate_task(task)


def main(argv: list[str] | None = None) -> int:
    """Run the task; a user mistake prints one line and exits with code 2."""
    return guarded(lambda: dispatch(parse(argv)))


if __name__ == "__main__":
    sys.exit(main())
