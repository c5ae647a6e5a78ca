"""Stage I: train a pixel PPO teacher. ``python train_visual_rl.py --help`` lists the flags."""

import sys

from diffses.cli import main
from diffses.teacher import TeacherConfig, run

if __name__ == "__main__":
    sys.exit(main(TeacherConfig, run, prog="train_visual_rl.py", docs="docs/teacher.md"))
