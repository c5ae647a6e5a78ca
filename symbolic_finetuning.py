"""Stage III: fine-tune a distilled symbolic policy with reward and teacher guidance."""

import sys

from diffses.cli import main
from diffses.finetune import FinetuneConfig, run

if __name__ == "__main__":
    sys.exit(main(FinetuneConfig, run, prog="symbolic_finetuning.py", docs="docs/finetuning.md"))
