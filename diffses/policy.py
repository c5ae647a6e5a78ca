"""Symbolic policies: a forest of expression trees, one per action, and its policy.json.

A tree is a list of prefix tokens (:mod:`see.tree`): ``{"f": "add"}`` (an operator of
``see.operators``), ``{"x": 3}`` (feature 3 of the layout), ``{"c": 0.38}`` (a constant).
Each tree's value is its action's logit: the action is the argmax, softmax gives
probabilities. ``policy.json`` holds the trees, the feature layout, the operator set, the
action meanings, readable and sympy-simplified formulas and the metrics the policy was
selected on.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from diffses.errors import UserError
from diffses.features import FeatureLayout, relations
from diffses.io import atomic_write_json, read_json
from see import operators as ops
from see.tree import Tree, check_tree, infix, logits, python_statements, simplified, softmax

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
    _compiled: Callable[[Sequence[float]], int] | None = field(default=None, init=False,
                                                              repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.trees) != len(self.action_meanings):
            raise ValueError(f"{len(self.trees)} trees for {len(self.action_meanings)} actions")
        for a, tree in enumerate(self.trees):
            try:
                check_tree(tree, self.layout.size)
            except ValueError as err:
                raise ValueError(f"tree {a}: {err}") from None

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without the compiled function (worker processes compile their own)."""
        return {**self.__dict__, "_compiled": None}

    def with_trees(self, trees: list[Tree]) -> "SymbolicPolicy":
        """The same layout, actions, game and operators with other trees (no metrics)."""
        return SymbolicPolicy(trees, self.layout, self.action_meanings, self.env_id,
                              self.function_set)

    @property
    def n_actions(self) -> int:
        return len(self.trees)

    def logits(self, X: np.ndarray) -> np.ndarray:
        """(N, F) features -> (N, A) logits."""
        return logits(self.trees, X)

    def act(self, X: np.ndarray) -> np.ndarray:
        """(N, F) features -> (N,) actions (argmax of the trees; ties go to the lowest); one
        row goes through :meth:`compiled`."""
        if len(X) == 1:
            return np.array([self.compiled()([float(v) for v in X[0]])])
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
        if not isinstance(d, dict) or "trees" not in d:
            raise UserError(f"{source} is not a policy file (a policy.json, as distill_teacher.py "
                            f"and symbolic_finetuning.py write, holds 'trees')")
        try:
            return cls(trees=[t["tokens"] for t in d["trees"]],
                       layout=FeatureLayout.from_dict(d["layout"]),
                       action_meanings=list(d["action_meanings"]), env_id=d["env_id"],
                       function_set=list(d["function_set"]), metrics=d.get("metrics", {}),
                       provenance=d.get("provenance", {}))
        except KeyError as err:
            raise UserError(f"{source} is not a valid policy file: it has no field {err}") from None
        except (TypeError, ValueError) as err:
            raise UserError(f"{source} is not a valid policy file: {err}") from None

    @classmethod
    def load(cls, path: str | Path) -> "SymbolicPolicy":
        """Read a policy.json (or the policy.json of a run folder)."""
        path = Path(path)
        if path.is_dir():
            path = path / POLICY
        return cls.from_dict(read_json(path), str(path))

    def to_python(self, name: str = "policy") -> str:
        """Source of a standalone module (plain Python, ``math`` and ``array`` only, no
        dependency on this project) defining ``name(features) -> action`` over the layout's
        vector and ``name_objects(objects) -> action`` over a list of object records (the
        dataset's schema: type, x_position, y_position, x_velocity, y_velocity), with the
        layout's normalisation inside. A subexpression used more than once is computed once."""
        layout = self.layout
        body, values = python_statements(self.trees, self.action_meanings)
        lines = [f'"""Symbolic policy for {self.env_id}: objects or features -> action index."""',
                 "from __future__ import annotations", "",
                 "import math", "from array import array", "",
                 f"ACTIONS = {self.action_meanings!r}", "",
                 "",
                 f"def {name}(features):",
                 f'    """``features``: the {layout.size} values of the layout, in order: '
                 f'{", ".join(layout.names)}."""',
                 "    x = features"]
        lines += [f"    {line}" for line in body]
        lines += ["    best, action = v0, 0"]
        for a in range(1, len(values)):
            lines += [f"    if {values[a]} > best:", f"        best, action = {values[a]}, {a}"]
        lines += ["    return action", "", "", *layout.python_source(f"{name}_features"), "", "",
                  f"def {name}_objects(objects):",
                  '    """Object records of one frame -> action index."""',
                  f"    return {name}({name}_features(objects))"]
        if layout.pairs:
            lines += ["", "", *inspect.getsource(relations).rstrip().splitlines()]
        return "\n".join(lines) + ops.PYTHON_HELPERS

    def compiled(self) -> Callable[[Sequence[float]], int]:
        """The forest as one generated Python function of a feature vector: a decision at
        batch 1 without numpy's per-call overhead (same values as :meth:`act`)."""
        if self._compiled is None:
            namespace: dict[str, Any] = {}
            exec(compile(self.to_python("_policy"), f"<policy {self.env_id}>", "exec"),
                 namespace)
            self._compiled = namespace["_policy"]
        return self._compiled
