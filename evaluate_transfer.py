"""Transfer without training: teacher and symbolic policies on their game and on variants."""

import sys

from diffses.cli import main
from diffses.transfer import TransferConfig, run

if __name__ == "__main__":
    sys.exit(main(TransferConfig, run, prog="evaluate_transfer.py", docs="docs/evaluation.md"))
