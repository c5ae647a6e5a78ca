"""Stage II-C: distil the teacher's dataset into one symbolic expression per action."""

import sys

from diffses.cli import main
from diffses.distill import DistillConfig, run

if __name__ == "__main__":
    sys.exit(main(DistillConfig, run, prog="distill_teacher.py", docs="docs/distillation.md"))
