"""The results table of one game: teacher, distilled, baselines and fine-tuned policies."""

import sys

from diffses.cli import main
from diffses.results import ResultsConfig, run

if __name__ == "__main__":
    sys.exit(main(ResultsConfig, run, prog="results.py", docs="docs/evaluation.md"))
