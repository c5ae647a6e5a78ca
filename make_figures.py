"""Regenerate the README's figures from run folders."""

import sys

from diffses.cli import main
from diffses.figures import FiguresConfig, run

if __name__ == "__main__":
    sys.exit(main(FiguresConfig, run, prog="make_figures.py", docs="docs/evaluation.md"))
