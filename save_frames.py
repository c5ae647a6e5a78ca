"""Stage I: save native RGB frames of teacher (or random) play for the object detector."""

import sys

from diffses.cli import main
from diffses.frames import FramesConfig, run

if __name__ == "__main__":
    sys.exit(main(FramesConfig, run, prog="save_frames.py", docs="docs/space.md"))
