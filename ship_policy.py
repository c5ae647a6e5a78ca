"""Ship the best policy of a results row to pretrained/policies/: ``python ship_policy.py --help``."""

import sys

from diffses.cli import main
from diffses.pretrained import ShipPolicyConfig, ship_policy

if __name__ == "__main__":
    sys.exit(main(ShipPolicyConfig, ship_policy, prog="ship_policy.py", docs="docs/evaluation.md"))
