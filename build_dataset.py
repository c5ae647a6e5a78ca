"""Stage II-B: the teacher's behaviour as tracked objects, in the sample.json schema."""

import sys

from diffses.cli import main
from diffses.dataset import DatasetConfig, run

if __name__ == "__main__":
    sys.exit(main(DatasetConfig, run, prog="build_dataset.py", docs="docs/dataset.md"))
