"""Expression trees: prefix tokens, their checks, evaluation, readable forms and conversions.

A tree is a list of prefix tokens as in ``policy.json``: ``{"f": "add"}`` (an operator of
:mod:`see.operators`), ``{"x": 3}`` (feature 3), ``{"c": 0.38}`` (a constant). A forest is one
tree per action; the trees' values are the action logits. Every form of a tree (numpy, torch,
sympy, infix text, plain Python) is one :func:`fold` with the matching operator form.
"""

from __future__ import annotations

import signal
import threading
from collections import Counter
from typing import Any, Callable, Sequence

import numpy as np
import sympy
import torch

from see import operators as ops

Token = dict[str, Any]
Tree = list[Token]
Forest = list[Tree]


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


def fold(tokens: Sequence[Token], leaf: Callable[[Token], Any],
         node: Callable[[ops.Operator, list[Any]], Any]) -> Any:
    """Evaluate prefix tokens bottom-up: ``leaf(token)`` for x/c, ``node(op, args)``.

    Tokens are visited last to first, so ``leaf`` sees the terminals in reverse token order.
    """
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
        out = fold(tokens, leaf, lambda op, args: op.numpy(*args))
    return np.broadcast_to(np.asarray(out, dtype=np.float64), (n,)).copy()


def evaluate_torch(tokens: Sequence[Token], X: torch.Tensor,
                   constants: torch.Tensor | None = None) -> torch.Tensor:
    """A tree's value on features ``X`` (B, F) -> (B,), differentiable in ``constants``: the
    tree's constants in token order (default: the values in the tokens, in ``X``'s dtype)."""
    if constants is None:
        constants = torch.tensor([float(tok["c"]) for tok in tokens if "c" in tok],
                                 dtype=X.dtype, device=X.device)  # (C,)
    batch = X.shape[0]
    index = iter(range(len(constants) - 1, -1, -1))  # fold meets the constants last to first

    def leaf(tok: Token) -> torch.Tensor:
        return X[:, tok["x"]] if "x" in tok else constants[next(index)].expand(batch)  # (B,)

    return fold(tokens, leaf, lambda op, args: op.torch(*args))  # (B,)


def logits(forest: Sequence[Sequence[Token]], X: np.ndarray) -> np.ndarray:
    """(N, F) features -> (N, A) logits, one column per tree."""
    return np.stack([evaluate(tree, X) for tree in forest], axis=1)


def softmax(logit_values: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (N, A) logits."""
    z = logit_values - logit_values.max(axis=1, keepdims=True)
    e = np.exp(np.clip(z, -700, 0))
    return e / e.sum(axis=1, keepdims=True)


def infix(tokens: Sequence[Token], names: Sequence[str], digits: int = 3) -> str:
    """A readable formula with feature names."""
    def leaf(tok: Token) -> str:
        if "x" in tok:
            return names[tok["x"]]
        value = float(tok["c"])
        return f"({value:.{digits}g})" if value < 0 else f"{value:.{digits}g}"

    text = fold(tokens, leaf, lambda op, args: op.format(*args))
    return text[1:-1] if text.startswith("(") and text.endswith(")") else text


def to_sympy(tokens: Sequence[Token], names: Sequence[str]) -> sympy.Expr:
    """The tree as a sympy expression over real symbols named after the features."""
    symbols: dict[str, sympy.Symbol] = {}

    def leaf(tok: Token) -> sympy.Expr:
        if "x" in tok:
            name = names[tok["x"]]
            return symbols.setdefault(name, sympy.Symbol(name, real=True))
        return sympy.Float(float(tok["c"]), 4)

    return fold(tokens, leaf, lambda op, args: op.sympy(*args))


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


def python_statements(trees: Sequence[Sequence[Token]], comments: Sequence[str],
                      features: str = "x") -> tuple[list[str], list[str]]:
    """Plain-Python assignments computing every tree over the list ``features``, each
    subexpression used more than once computed once (``s0 = ...``), and the names of the
    trees' values (``v0``, ``v1``, ...; each assignment commented with ``comments[a]``). The
    code needs ``math`` and :data:`see.operators.PYTHON_HELPERS`."""
    def leaf(tok: Token) -> str:
        return f"{features}[{tok['x']}]" if "x" in tok else repr(float(tok["c"]))

    def code_of(op: ops.Operator, args: list[str]) -> str:
        if not op.python:
            raise ValueError(f"operator {op.name!r} has no plain-Python form")
        return op.python.format(*args)

    counts: Counter = Counter()

    def count(op: ops.Operator, args: list[str]) -> str:
        code = code_of(op, args)
        counts[code] += 1
        return code

    for tree in trees:
        fold(tree, leaf, count)
    names: dict[str, str] = {}
    body: list[str] = []

    def emit(op: ops.Operator, args: list[str]) -> str:
        code = code_of(op, args)
        if counts[code] < 2:
            return code
        if code not in names:
            names[code] = f"s{len(names)}"
            body.append(f"{names[code]} = {code}")
        return names[code]

    values = []
    for a, tree in enumerate(trees):
        body.append(f"v{a} = {fold(tree, leaf, emit)}  # {comments[a]}")
        values.append(f"v{a}")
    return body, values


def from_gplearn(program: Sequence[Any]) -> Tree:
    """A gplearn program (functions, feature ints, float constants) -> prefix tokens."""
    tokens: Tree = []
    for node in program:
        if isinstance(node, (int, np.integer)):
            tokens.append({"x": int(node)})
        elif isinstance(node, (float, np.floating)):
            tokens.append({"c": float(node)})
        else:
            tokens.append({"f": node.name})
    return tokens
