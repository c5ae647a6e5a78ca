"""Export a trained teacher run to pretrained/: ``python ship_teacher.py --help``."""

import sys

from diffses.cli import main
from diffses.pretrained import ShipTeacherConfig, run

if __name__ == "__main__":
    sys.exit(main(ShipTeacherConfig, run, prog="ship_teacher.py", docs="docs/teacher.md"))
