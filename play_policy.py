"""Play a symbolic policy on seeded games; --video records the first one."""

import sys

from diffses.cli import main
from diffses.video import PlayConfig, run

if __name__ == "__main__":
    sys.exit(main(PlayConfig, run, prog="play_policy.py", docs="docs/evaluation.md"))
