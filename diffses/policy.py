"""Symbolic policies: a forest of expression trees, one per action, and its policy.json.

A tree is a list of prefix tokens: ``{"f": "add"}`` (an operator of ``see.operators``),
``{"x": 3}`` (feature 3 of the layout), ``{"c": 0.38}`` (a constant). Each tree's value is
its action's logit: the action is the argmax, softmax gives probabilities. ``policy.json``
holds the trees, the feature layout, the operator set, the action meanings, readable and
sympy-simplified formulas and the metrics the policy was selected on.
"""

from __future__ import annotations

import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import sympy

from diffses.errors import UserError
from diffses.features import FeatureLayout
from diffses.io import atomic_write_json, read_json
from see import operators as ops

Token = dict[str, Any]
POLICY = "policy.json"
FORMAT = "diffses-policy/1"


def check_tree(tokens: Sequence[Token], n_features: int) -> None:
    """Raise ValueError unless ``tokens`` is one complete prefix expression."""
    need = 1
    for i, tok in enumerate(tokens):
        if need == 0:
            raise ValueError(f"token {i}: the expression ended before it")
        if "f" in tok:
            need += ops.get(tok["f"]).arity - 1
        elif "x" in tok:
            if not isinstance(tok["x"], int) or not 0 <= tok["x"] < n_features:
                raise ValueError(f"token {i}: feature {tok['x']!r} is not in 0..{n_features - 1}")
            need -= 1
        elif "c" in tok:
            if not isinstance(tok["c"], (int, float)) or not np.isfinite(tok["c"]):
                raise ValueError(f"token {i}: constant {tok['c']!r} is not a finite number")
            need -= 1
        else:
            raise ValueError(f"token {i}: {tok!r} is none of f, x, c")
    if need != 0 or not tokens:
        raise ValueError("the expression is incomplete")


def _fold(tokens: Sequence[Token], leaf: Any, node: Any) -> Any:
    """Evaluate prefix tokens bottom-up: ``leaf(token)`` for x/c, ``node(op, args)``."""
    stack: list[Any] = []
    for tok in reversed(tokens):
        if "f" in tok:
            op = ops.get(tok["f"])
            args = [stack.pop() for _ in range(op.arity)]
            stack.append(node(op, args))
        else:
            stack.append(leaf(tok))
    return stack[0]


def evaluate(tokens: Sequence[Token], X: np.ndarray) -> np.ndarray:
    """A tree's value on features ``X`` (N, F) -> (N,) float64."""
    X = np.asarray(X, dtype=np.float64)
    n = X.shape[0]

    def leaf(tok: Token) -> np.ndarray:
        return X[:, tok["x"]] if "x" in tok else np.full(n, float(tok["c"]))

    with np.errstate(all="ignore"):
        out = _fold(tokens, leaf, lambda op, args: op.numpy(*args))
    return np.broadcast_to(np.asarray(out, dtype=np.float64), (n,)).copy()


def infix(tokens: Sequence[Token], names: Sequence[str], digits: int = 3) -> str:
    """A readable formula with feature names."""
    def leaf(tok: Token) -> str:
        if "x" in tok:
            return names[tok["x"]]
        value = float(tok["c"])
        return f"({value:.{digits}g})" if value < 0 else f"{value:.{digits}g}"

    text = _fold(tokens, leaf, lambda op, args: op.format(*args))
    return text[1:-1] if text.startswith("(") and text.endswith(")") else text


def to_sympy(tokens: Sequence[Token], names: Sequence[str]) -> sympy.Expr:
    """The tree as a sympy expression over symbols named after the features."""
    symbols = {}

    def leaf(tok: Token) -> sympy.Expr:
        if "x" in tok:
            name = names[tok["x"]]
            return symbols.setdefault(name, sympy.Symbol(name, real=True))
        return sympy.Float(float(tok["c"]), 4)

    return _fold(tokens, leaf, lambda op, args: op.sympy(*args))


class _Timeout(Exception):
    pass


def _raise_timeout(signum: int, frame: Any) -> None:
    raise _Timeout


def simplified(tokens: Sequence[Token], names: Sequence[str], seconds: float = 2.0,
               max_ops: int = 80) -> str:
    """A sympy-simplified formula. ``sympy.simplify`` can take minutes on nested piecewise
    expressions, so it gets ``seconds`` (in the main thread) and expressions of at most
    ``max_ops`` operations; otherwise the plain sympy form is returned."""
    expr = to_sympy(tokens, names)
    if sympy.count_ops(expr) > max_ops or threading.current_thread() is not \
            threading.main_thread():
        return str(expr)
    previous = signal.signal(signal.SIGALRM, _raise_timeout)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        expr = sympy.simplify(expr)
    except (_Timeout, TypeError, ValueError, RecursionError):
        pass
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    return str(expr)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (N, A) logits."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(np.clip(z, -700, 0))
    return e / e.sum(axis=1, keepdims=True)


@dataclass
class SymbolicPolicy:
    """One expression tree per action over a feature layout."""

    trees: list[list[Token]]
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
        return np.stack([evaluate(t, X) for t in self.trees], axis=1)

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
            lines.append(f"    v{a} = {_python_expr(tree)}")
        values = ", ".join(f"v{a}" for a in range(self.n_actions))
        lines += [f"    values = [{values}]",
                  "    return max(range(len(values)), key=lambda i: (values[i], -i))"]
        return "\n".join(lines) + ops.PYTHON_HELPERS


def _python_expr(tokens: Sequence[Token]) -> str:
    def leaf(tok: Token) -> str:
        return f"x[{tok['x']}]" if "x" in tok else repr(float(tok["c"]))

    def node(op: ops.Operator, args: list[str]) -> str:
        if not op.python:
            raise ValueError(f"operator {op.name!r} has no plain-Python form")
        return op.python.format(*args)

    return _fold(tokens, leaf, node)


def from_gplearn(program: Sequence[Any]) -> list[Token]:
    """A gplearn program (functions, feature ints, float constants) -> prefix tokens."""
    tokens: list[Token] = []
    for node in program:
        if isinstance(node, (int, np.integer)):
            tokens.append({"x": int(node)})
        elif isinstance(node, (float, np.floating)):
            tokens.append({"c": float(node)})
        else:
            tokens.append({"f": node.name})
    return tokens
