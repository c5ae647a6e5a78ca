"""Print one pipeline pass as a table: ``python report.py --finetune latest``."""

import sys

from diffses.cli import main
from diffses.report import ReportConfig, run

if __name__ == "__main__":
    sys.exit(main(ReportConfig, run, prog="report.py", docs="docs/evaluation.md"))
