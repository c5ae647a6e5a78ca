"""Stage II-C: Optuna search over distillation hyperparameters (trials.csv, best.yaml)."""

import sys

from diffses.cli import main
from diffses.tune import TuneConfig, run

if __name__ == "__main__":
    sys.exit(main(TuneConfig, run, prog="gplearn_optuna.py", docs="docs/distillation.md"))
