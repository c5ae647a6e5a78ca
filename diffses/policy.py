"""Symbolic policies: a forest of expression trees, one per action, and its policy.json.

A tree is a list of prefix tokens (:mod:`see.tree`): ``{"f": "add"}`` (an operator of
``see.operators``), ``{"x": 3}`` (feature 3 of the layout), ``{"c": 0.38}`` (a constant).
Each tree's value is its action's logit: the action is the argmax, softmax gives
probabilities. ``policy.json`` holds the trees, the feature layout, the operator set, the
action meanings, readable and sympy-simplified formulas and the metrics the policy was
selected on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from diffses.errors import UserError
from diffses.features import FeatureLayout
from diffses.io import atomic_write_json, read_json
from see import operators as ops
from see.tree import Tree, check_tree, infix, logits, python_expr, simplified, softmax

POLICY = "policy.json"
FORMAT = "diffses-policy/1"


@dataclass
class SymbolicPolicy:
    """One expression tree per action over a feature layout."""

    trees: list[Tree]
    layout: FeatureLayout
    action_meanings: list[str]
    env_id: str
    function_set: list[str]
    metrics: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.trees) != len(self.action_meanings):
            raise ValueError(f"{len(self.trees)} trees for {len(self.action_meanings)} actions")
        for a, tree in enumerate(self.trees):
            try:
                check_tree(tree, self.layout.size)
            except ValueError as err:
                raise ValueError(f"tree {a}: {err}") from None

    @property
    def n_actions(self) -> int:
        return len(self.trees)

    def logits(self, X: np.ndarray) -> np.ndarray:
        """(N, F) features -> (N, A) logits."""
        return logits(self.trees, X)

    def act(self, X: np.ndarray) -> np.ndarray:
        """(N, F) features -> (N,) actions (argmax of the trees; ties go to the lowest)."""
        return np.argmax(self.logits(X), axis=1)

    def probs(self, X: np.ndarray) -> np.ndarray:
        return softmax(self.logits(X))

    def formulas(self, simplify: bool = False) -> list[str]:
        names = self.layout.names
        return [simplified(t, names) if simplify else infix(t, names) for t in self.trees]

    def describe(self) -> str:
        """One line per action: its meaning and its formula."""
        width = max(len(m) for m in self.action_meanings)
        return "\n".join(f"  {m:<{width}} = {f}"
                         for m, f in zip(self.action_meanings, self.formulas()))

    def to_dict(self) -> dict[str, Any]:
        names = self.layout.names
        return {
            "format": FORMAT,
            "env_id": self.env_id,
            "action_meanings": self.action_meanings,
            "function_set": self.function_set,
            "operators": {n: ops.get(n).doc for n in sorted({t["f"] for tree in self.trees
                                                              for t in tree if "f" in t})},
            "layout": self.layout.to_dict(),
            "trees": [{"action": a, "meaning": m, "tokens": tree, "size": len(tree),
                       "infix": infix(tree, names), "simplified": simplified(tree, names)}
                      for a, (m, tree) in enumerate(zip(self.action_meanings, self.trees))],
            "metrics": self.metrics,
            "provenance": self.provenance,
        }

    def save(self, path: str | Path) -> Path:
        """Write policy.json atomically."""
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "policy") -> "SymbolicPolicy":
        try:
            return cls(trees=[t["tokens"] for t in d["trees"]],
                       layout=FeatureLayout.from_dict(d["layout"]),
                       action_meanings=list(d["action_meanings"]), env_id=d["env_id"],
                       function_set=list(d["function_set"]), metrics=d.get("metrics", {}),
                       provenance=d.get("provenance", {}))
        except (KeyError, TypeError, ValueError) as err:
            raise UserError(f"{source} is not a valid policy file: {err}") from None

    @classmethod
    def load(cls, path: str | Path) -> "SymbolicPolicy":
        """Read a policy.json (or the policy.json of a run folder)."""
        path = Path(path)
        if path.is_dir():
            path = path / POLICY
        return cls.from_dict(read_json(path), str(path))

    def to_python(self, name: str = "policy") -> str:
        """Source of a standalone module defining ``name(features) -> action``: plain Python
        and ``math`` only, no dependency on this project."""
        lines = [f'"""Symbolic policy for {self.env_id}: features -> action index."""',
                 "import math", "",
                 "",
                 f"def {name}(features):",
                 f'    """``features``: the {self.layout.size} values of the layout, in order: '
                 f'{", ".join(self.layout.names)}."""',
                 "    x = features"]
        for a, tree in enumerate(self.trees):
            lines.append(f"    # {self.action_meanings[a]}")
            lines.append(f"    v{a} = {python_expr(tree)}")
        values = ", ".join(f"v{a}" for a in range(self.n_actions))
        lines += [f"    values = [{values}]",
                  "    return max(range(len(values)), key=lambda i: (values[i], -i))"]
        return "\n".join(lines) + ops.PYTHON_HELPERS

